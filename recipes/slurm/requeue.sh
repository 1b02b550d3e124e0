# Sourced by the sbatch scripts of this folder: run the training step until it ends, or until Slurm warns of the
# time limit (#SBATCH --signal=B:USR1@SECONDS signals this batch shell); then the trainer saves a checkpoint at the end
# of its optimizer step and exits, and the job goes back to the queue, to resume from that checkpoint
# (--resume_from_checkpoint last). A preempted job (Slurm's PreemptMode=REQUEUE) is requeued by Slurm itself and
# resumes from the newest complete checkpoint the run saved (save_steps).

# until_time_limit NAME COMMAND [ARG...]: run COMMAND (an srun, replaced by it: the signal reaches srun, which
# forwards it to the processes of its step) and return its status; requeue the job when it stopped for the time limit.
until_time_limit() {
    local name=$1 pid status=0
    shift
    "$@" &
    pid=$!
    STOPPING=0
    # shellcheck disable=SC2064  # the pid is fixed now
    trap "STOPPING=1; echo \"$name: time limit near: the trainer saves a checkpoint and stops\"; kill -USR1 $pid" USR1
    wait "$pid" || status=$?
    if [ "$STOPPING" = 1 ] && [ "$status" -gt 128 ]; then
        # The signal interrupted the wait above, not the step: wait for the step's save and exit.
        status=0
        wait "$pid" || status=$?
    fi
    trap - USR1
    if [ "$STOPPING" = 1 ] && [ "$status" -eq 0 ]; then
        echo "$name: requeueing job $SLURM_JOB_ID; it resumes from the checkpoint just saved"
        scontrol requeue "$SLURM_JOB_ID"
    fi
    return "$status"
}
