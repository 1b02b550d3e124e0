"""recipes/slurm/train.sbatch, run by bash with stand-ins for Slurm (scontrol, srun), curl and the venv.

The stand-in srun records each job step instead of running it; the test then runs a recorded step's command here,
as srun would on a node, with a stand-in `accelerate` that records the arguments it got.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from health_stub import health_server

from reasonflux_rl.prm.placement.pooling_server import PoolingServer

REPO = Path(__file__).resolve().parents[1]
SBATCH = REPO / "recipes/slurm/train.sbatch"
RECIPE = "recipes/r1_distill_qwen_7b/reasonflux_prm_mixed_server.yaml"
# Appends its arguments, as one JSON line, to the file named by $LOG.
RECORD = (f'{sys.executable} -c "import json, os, sys; '
          f'print(json.dumps(sys.argv[1:]), file=open(os.environ[\'LOG\'], \'a\'))"')


def write_tool(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def cluster(tmp_path):
    """A venv whose activate puts stand-ins first on PATH; returns (venv, log of srun steps)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    write_tool(tools, "scontrol", f'if [ "$1" = requeue ]; then LOG=$SRUN_LOG.scontrol {RECORD} "$@"; '
                                  'else printf "%s\\n" $FAKE_NODES; fi')
    # A training step (one that runs our trainer) runs until USR1 when $TRAIN_RUNS_UNTIL_USR1 is set, as a trainer
    # that saves a checkpoint and exits then would; it is recorded once it listens.
    write_tool(tools, "srun", 'case "$*" in *reasonflux_rl.train*|*reasonflux_rl.prm_training*)\n'
                              '    waits=$TRAIN_RUNS_UNTIL_USR1 ;;\n'
                              'esac\n'
                              '[ -z "$waits" ] || trap \'echo USR1 >> "$SRUN_LOG.signals"; exit 0\' USR1\n'
                              f'LOG=$SRUN_LOG {RECORD} "$@"\n'
                              '[ -z "$waits" ] && exit 0\n'
                              'while :; do sleep 0.05; done')
    write_tool(tools, "curl", "exit 0")
    write_tool(tools, "python", f'exec {sys.executable} "$@"')
    write_tool(tools, "reasonflux-rl", f'exec {sys.executable} -m reasonflux_rl.cli "$@"')
    write_tool(tools, "accelerate", f'LOG=$ACCELERATE_LOG {RECORD} "$@"')
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/activate").write_text(f'export PATH="{tools}:$PATH"\n')
    return venv, tmp_path / "srun.jsonl"


def sbatch(cluster, nodes: list[str], *args: str, port: int = 9, recipe: str = RECIPE,
           env: dict[str, str] | None = None, script: Path = SBATCH) -> subprocess.CompletedProcess:
    venv, log = cluster
    env = {**os.environ, "PYTHONPATH": str(REPO), "VENV": str(venv), "SRUN_LOG": str(log), "SLURM_JOB_NODELIST": "x",
           "FAKE_NODES": " ".join(nodes), "VLLM_PORT": str(port), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(["bash", str(script), recipe, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def steps(cluster, suffix: str = "") -> list[list[str]]:
    """The recorded job steps (suffix ``.scontrol``: the scontrol requeue calls)."""
    log = cluster[1].with_name(cluster[1].name + suffix)
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def accelerate_launch_on_node_1(cluster, step: list[str], tmp_path: Path) -> list[str]:
    """Run a recorded job step's command as srun would on the second node; the arguments `accelerate` got there."""
    accelerate_log = tmp_path / "accelerate.jsonl"
    env = {**os.environ, "VENV": str(cluster[0]), "SLURM_PROCID": "1", "ACCELERATE_LOG": str(accelerate_log)}
    subprocess.run(step[3:], env=env, check=True, timeout=60)
    return json.loads(accelerate_log.read_text())


def test_three_nodes_keep_the_papers_step_and_the_quoting_of_extra_arguments(cluster, tiny_models, tmp_path):
    extra = ["--model_name_or_path", str(tiny_models.policy), "--prm_name_or_path", str(tiny_models.prm), "--use_cpu",
             "--run_name", "two words {prm_beta}"]
    with health_server() as port:  # the vLLM node is 127.0.0.1, so the dry run's health check reaches it
        proc = sbatch(cluster, ["node1", "node2", "127.0.0.1"], *extra, port=port)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "optimizer step: 16 processes x 1 per device x 12 accumulation steps = 192 completions" in proc.stdout
    # The dry run the script runs before launching shows the step it will train with.
    report, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("\n{") + 1:])
    assert report["batch"]["completions_per_optimizer_step"] == 192
    assert report["batch"]["prompts_per_optimizer_step"] == 32
    assert report["optimisation"]["run_name"] == "two words 0.75"

    recorded = steps(cluster)
    assert len(recorded) == 2
    vllm = next(step for step in recorded if "--nodelist=127.0.0.1" in step)
    train = next(step for step in recorded if "--nodelist=node1,node2" in step)
    assert vllm[-8:] == ["--model", str(tiny_models.policy), "--tensor_parallel_size", "1", "--data_parallel_size",
                         "8", "--port", str(port)]
    assert train[:3] == ["--nodes=2", "--ntasks=2", "--nodelist=node1,node2"]
    launch = accelerate_launch_on_node_1(cluster, train, tmp_path)
    assert launch[:3] == ["launch", "--machine_rank", "1"]
    assert launch[launch.index("--num_machines") + 1] == "2" and launch[launch.index("--num_processes") + 1] == "16"
    script = launch[launch.index("-m") + 1:]
    assert script[0] == "reasonflux_rl.train"
    assert script[script.index("--run_name") + 1] == "two words {prm_beta}"  # one argument, braces untouched
    assert script[script.index("--gradient_accumulation_steps") + 1] == "12"
    assert script[script.index("--vllm_server_host") + 1] == "127.0.0.1"


@pytest.mark.parametrize("nodes,message", [
    (6, "COMPLETIONS_PER_STEP=192 completions per optimizer step do not split over 5 training nodes x 8 GPUs x "
        "per_device_train_batch_size 1 = 40 per micro-step"),
    (1, "need at least 2 nodes"),
])
def test_node_counts_that_cannot_keep_the_step_fail_before_any_launch(cluster, tiny_models, nodes, message):
    proc = sbatch(cluster, [f"node{i}" for i in range(nodes)], "--model_name_or_path", str(tiny_models.policy),
                  "--use_cpu")
    assert proc.returncode == 1
    assert message in proc.stderr
    assert steps(cluster) == []


def test_gradient_accumulation_is_the_scripts_to_set(cluster):
    proc = sbatch(cluster, ["node1", "node2"], "--gradient_accumulation_steps", "4")
    assert proc.returncode == 1
    assert "do not pass --gradient_accumulation_steps" in proc.stderr and steps(cluster) == []


def test_prm_nodes_serve_the_prm_and_training_scores_through_them(cluster, tiny_models):
    # The PRM node is 127.0.0.1 too, where a reference pooling server answers, so the dry run's probe reaches it.
    recipe = "recipes/r1_distill_qwen_7b/reasonflux_prm_mixed_prm_server.yaml"
    extra = ["--model_name_or_path", str(tiny_models.policy), "--prm_name_or_path", str(tiny_models.prm), "--use_cpu"]
    with health_server() as port, PoolingServer(tiny_models.prm, model_name="reasonflux-prm-7b",
                                                max_model_len=4096) as prm:
        prm_port = prm.url.rsplit(":", 1)[1]
        proc = sbatch(cluster, ["node1", "node2", "127.0.0.1", "127.0.0.1"], *extra, port=port, recipe=recipe,
                      env={"PRM_NODES": "1", "PRM_TP": "8", "PRM_PORT": prm_port})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("\n{") + 1:])
    assert report["reward"]["prm_server_urls"] == [f"http://127.0.0.1:{prm_port}"]
    assert report["batch"]["completions_per_optimizer_step"] == 192  # the PRM node trains nothing
    recorded = steps(cluster)
    assert len(recorded) == 3
    serve = next(step for step in recorded if "recipes/prm_server/serve.sh" in step)
    assert serve[serve.index("recipes/prm_server/serve.sh") + 1] == "reasonflux-prm-7b"
    assert f"PRM_PATH={tiny_models.prm}" in serve and "TP=8" in serve and f"PORT={prm_port}" in serve
    train = next(step for step in recorded if "--nodelist=node1,node2" in step)
    urls = train[train.index("--prm_server_urls") + 1:train.index("--prm_server_model")]
    assert urls == [f"http://127.0.0.1:{prm_port}"]


PRM_SBATCH = REPO / "recipes/slurm/prm_train.sbatch"
PRM_RECIPE = "recipes/prm_train/qwen2.5_7b_instruct_openthoughts.yaml"


def labelled_rows(path: Path) -> Path:
    row = {"problem": "1+1?", "completion": "Add.\n</think>\n\nSo $\\boxed{2}$.", "step_targets": [1.0, 1.0],
           "trajectory_target": 1.0}
    path.write_text("".join(json.dumps(row) + "\n" for _ in range(300)))
    return path


def test_prm_training_on_two_nodes_dry_runs_for_16_processes_then_launches_each_node(cluster, tiny_models, tmp_path):
    extra = ["--model_name_or_path", str(tiny_models.policy), "--dataset_name",
             str(labelled_rows(tmp_path / "l.jsonl")), "--attn_implementation", "sdpa", "--run_name", "two words"]
    proc = sbatch(cluster, ["node1", "node2"], *extra, recipe=PRM_RECIPE, script=PRM_SBATCH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("\n{") + 1:])
    assert report["batch"]["num_processes"] == 16 and report["deepspeed"]["zero_stage"] == 3
    [train] = steps(cluster)
    assert train[:3] == ["--nodes=2", "--ntasks=2", "--nodelist=node1,node2"]
    launch = accelerate_launch_on_node_1(cluster, train, tmp_path)
    assert launch[:3] == ["launch", "--machine_rank", "1"]
    assert launch[launch.index("--num_processes") + 1] == "16" and launch[launch.index("--main_process_ip") + 1] == (
        "node1")
    script = launch[launch.index("-m") + 1:]
    assert script[:4] == ["reasonflux_rl.prm_training", "train", "--config", PRM_RECIPE]
    assert script[script.index("--run_name") + 1] == "two words"


def test_prm_training_with_a_recipe_that_cannot_work_stops_before_any_launch(cluster, tiny_models):
    proc = sbatch(cluster, ["node1"], "--model_name_or_path", str(tiny_models.policy), "--dataset_name",
                  "outputs/none.jsonl", "--loss", "l1", recipe=PRM_RECIPE, script=PRM_SBATCH)
    assert proc.returncode != 0 and "loss='l1' is not one of" in proc.stderr
    assert steps(cluster) == []


def sbatch_signalled_before_the_time_limit(cluster, nodes: list[str], *args: str, script: Path, recipe: str,
                                           port: int = 9) -> subprocess.CompletedProcess:
    """Run the script until its training step starts, then send its batch shell USR1 as Slurm's
    ``--signal=B:USR1@600`` would; the finished script."""
    venv, log = cluster
    env = {**os.environ, "PYTHONPATH": str(REPO), "VENV": str(venv), "SRUN_LOG": str(log), "SLURM_JOB_NODELIST": "x",
           "FAKE_NODES": " ".join(nodes), "VLLM_PORT": str(port), "OMP_NUM_THREADS": "1", "SLURM_JOB_ID": "4242",
           "TRAIN_RUNS_UNTIL_USR1": "1"}
    proc = subprocess.Popen(["bash", str(script), recipe, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not any("-m" in step for step in steps(cluster)) and proc.poll() is None:
        assert time.monotonic() < deadline, "the training step never started"
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGUSR1)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("script", ["train", "prm_train"])
def test_near_the_time_limit_the_trainer_saves_and_the_job_requeues_itself_to_resume(cluster, tiny_models, tmp_path,
                                                                                      script):
    if script == "train":
        extra = ["--model_name_or_path", str(tiny_models.policy), "--prm_name_or_path", str(tiny_models.prm),
                 "--use_cpu"]
        with health_server() as port:
            proc = sbatch_signalled_before_the_time_limit(cluster, ["node1", "127.0.0.1"], *extra, script=SBATCH,
                                                          recipe=RECIPE, port=port)
    else:
        extra = ["--model_name_or_path", str(tiny_models.policy), "--dataset_name",
                 str(labelled_rows(tmp_path / "l.jsonl")), "--attn_implementation", "sdpa"]
        proc = sbatch_signalled_before_the_time_limit(cluster, ["node1"], *extra, script=PRM_SBATCH,
                                                      recipe=PRM_RECIPE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "time limit near: the trainer saves a checkpoint and stops" in proc.stdout
    # The training step got the signal (srun forwards it to its tasks), then the job went back to the queue.
    assert cluster[1].with_name(cluster[1].name + ".signals").read_text() == "USR1\n"
    assert steps(cluster, ".scontrol") == [["requeue", "4242"]]
    train = next(step for step in steps(cluster) if "-m" in step)
    trainer_args = train[train.index("-m") + 1:]
    assert trainer_args[trainer_args.index("--resume_from_checkpoint") + 1] == "last"
    # On each node the launcher ignores USR1 (it would end it) and the trainer processes it starts inherit nothing
    # else: Python's signal.signal in the trainer takes it.
    probe = tmp_path / "probe"
    (tmp_path / "bin/accelerate").write_text(
        f"#!/bin/bash\n{sys.executable} -c \"import signal; print(signal.getsignal(signal.SIGUSR1) == "
        f"signal.SIG_IGN, file=open('{probe}', 'w'))\"\n")
    subprocess.run(train[3:], env={**os.environ, "VENV": str(cluster[0]), "SLURM_PROCID": "0"}, check=True,
                   timeout=60)
    assert probe.read_text() == "True\n"


def test_a_job_that_ends_without_the_signal_is_not_requeued(cluster, tiny_models, tmp_path):
    extra = ["--model_name_or_path", str(tiny_models.policy), "--dataset_name",
             str(labelled_rows(tmp_path / "l.jsonl")), "--attn_implementation", "sdpa"]
    proc = sbatch(cluster, ["node1"], *extra, recipe=PRM_RECIPE, script=PRM_SBATCH, env={"SLURM_JOB_ID": "4242"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(steps(cluster)) == 1 and steps(cluster, ".scontrol") == []
