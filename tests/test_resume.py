"""A run picks up where it stopped: a lab run killed after a checkpoint and resumed with `last` logs every later step
as the uninterrupted run did, once, into the same W&B run; SIGUSR1 saves a checkpoint and stops `train` and `prm
train`, and `last` finishes the run; a half-written checkpoint is never resumed from."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rank_records import read_records
from test_prm_training_trainer import cue_rows, train, write_jsonl
from wandb_offline import history

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.train.resume import newest_complete_checkpoint, prepare_resume, resume_point

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Keys that time the run: the only ones a resumed step may log differently.
TIMING = re.compile(r"seconds|runtime|per_second|step_time")


def lab_command(out: Path, *extra: str) -> list[str]:
    # The lab's default run, cut to 4 steps of 2 problems, evaluated on 8 held-out training problems.
    return [sys.executable, "-m", "reasonflux_rl.train", "--config", "recipes/lab/cpu.yaml", "--max_steps", "4",
            "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16", "--eval_holdout_size", "8",
            "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2", "--output_dir", str(out), *extra]


def run(command: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def kill_after(command: list[str], state: Path) -> None:
    """Start ``command`` and SIGKILL it, as a preemption would, once ``state`` (a checkpoint's trainer_state.json,
    which transformers writes last) reads back whole."""
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            json.loads(state.read_text())
            break
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.05)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL, "the run ended before it was killed"


def test_a_killed_lab_run_resumed_with_last_logs_every_later_step_as_the_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run(lab_command(whole))
    kill_after(lab_command(killed), killed / "checkpoint-2/trainer_state.json")
    resumed = run(lab_command(killed, "--resume_from_checkpoint", "last"))

    assert f"reasonflux-rl train: resuming from {killed / 'checkpoint-2'} (step 2)" in resumed.stdout
    assert re.search(r"held-out accuracy \d+% -> \d+% in 4 steps \(\dm\d\ds from step 2\)", resumed.stdout)
    expected = json.loads((whole / "trainer_state.json").read_text())["log_history"]
    got = json.loads((killed / "trainer_state.json").read_text())["log_history"]
    # One entry per step and per evaluation: no second evaluation at the step it resumed from.
    assert [(e["step"], "eval_loss" in e or "eval_outcome/accuracy" in e) for e in got if "train_loss" not in e] == [
        (0, True), (1, False), (2, False), (2, True), (3, False), (4, False), (4, True)]
    later = [(want, have) for want, have in zip(expected, got) if have["step"] > 2 and "train_loss" not in have]
    assert len(later) == 3
    for want, have in later:
        assert {k for k in want if not TIMING.search(k)} == {k for k in have if not TIMING.search(k)}
        for key in want:
            if not TIMING.search(key):
                assert have[key] == want[key], (have["step"], key)
        assert "loss" not in have or {"reward", "reasonflux/beta"} <= have.keys()

    # One W&B run: the killed job's offline run and the resumed one's carry the id kept in output_dir.
    run_id = (killed / "wandb_run_id").read_text().strip()
    offline = sorted(glob.glob(str(killed / "wandb/offline-run-*")))
    assert len(offline) == 2 and all(path.endswith(f"-{run_id}") for path in offline)
    [second] = glob.glob(f"{offline[1]}/run-*.wandb")
    assert [row["train/global_step"] for row in history(Path(second)) if "train/loss" in row] == [3, 4]


def send_stop_after_first_log(command: list[str]) -> subprocess.CompletedProcess:
    """Run ``command`` and send it SIGUSR1 once it has logged a training step."""
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "'loss'" in line:
            proc.send_signal(signal.SIGUSR1)
            break
    lines += proc.stdout.readlines()
    return subprocess.CompletedProcess(command, proc.wait(timeout=600), "".join(lines), "")


def stop_commands(kind: str, tiny_models, tmp_path: Path) -> list[str]:
    common = ["--max_steps", "400", "--logging_steps", "1", "--disable_tqdm", "true", "--report_to", "none",
              "--output_dir", str(tmp_path / "out")]
    if kind == "train":
        return [sys.executable, "-m", "reasonflux_rl.cli", "train", "--config", "recipes/smoke/cpu.yaml",
                "--model_name_or_path", str(tiny_models.policy), "--prm_name_or_path", str(tiny_models.prm), *common]
    rows = write_jsonl(tmp_path / "train.jsonl", cue_rows(200, seed=1))
    return [sys.executable, "-m", "reasonflux_rl.cli", "prm", "train", "--model_name_or_path", str(tiny_models.policy),
            "--dataset_name", str(rows), "--use_cpu", "true", "--prm_system_prompt", "", "--batch_tokens", "256",
            *common]


@pytest.mark.parametrize("kind", ["train", "prm train"])
def test_sigusr1_saves_a_checkpoint_and_stops_and_last_finishes_the_run(kind, tiny_models, tmp_path):
    command = stop_commands(kind, tiny_models, tmp_path)
    stopped = send_stop_after_first_log(command)
    assert stopped.returncode == 0, stopped.stdout[-3000:]
    line = re.search(rf"reasonflux-rl {kind}: stopped at step (\d+) on SIGUSR1 and saved (\S+); "
                     r"--resume_from_checkpoint last continues it", stopped.stdout)
    assert line, stopped.stdout[-3000:]
    step, checkpoint = int(line.group(1)), Path(line.group(2))
    assert 1 <= step < 400 and checkpoint.name == f"checkpoint-{step}"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == step
    # Stopped, not finished: the run's own model and state are not written until it ends.
    assert not (checkpoint.parent / "trainer_state.json").exists()

    finished = subprocess.run([*command, "--max_steps", str(step + 2), "--resume_from_checkpoint", "last"],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"resuming from {checkpoint} (step {step})" in finished.stdout
    state = json.loads((checkpoint.parent / "trainer_state.json").read_text())
    assert state["global_step"] == step + 2
    assert [e["step"] for e in state["log_history"] if "loss" in e] == list(range(1, step + 3))


def test_prm_train_resumed_from_a_checkpoint_trains_the_later_steps_as_the_uninterrupted_run(tiny_models, tmp_path):
    rows = write_jsonl(tmp_path / "train.jsonl", cue_rows(120, seed=2))
    extra = ["--batch_tokens", "256", "--max_steps", "12", "--save_strategy", "steps", "--save_steps", "5",
             "--logging_steps", "1"]
    whole, _ = train(tiny_models.policy, rows, tmp_path / "whole", *extra)
    # A run killed after its step-5 checkpoint: that checkpoint alone in its output_dir.
    shutil.copytree(tmp_path / "whole/checkpoint-5", tmp_path / "killed/checkpoint-5")
    resumed, _ = train(tiny_models.policy, rows, tmp_path / "killed", *extra, "--resume_from_checkpoint", "last")
    expected = {e["step"]: e["loss"] for e in whole.state.log_history if "loss" in e}
    got = {e["step"]: e["loss"] for e in resumed.state.log_history if "loss" in e}
    assert sorted(got) == list(range(1, 13))
    assert {step: got[step] for step in range(6, 13)} == {step: expected[step] for step in range(6, 13)}


def write_checkpoint(folder: Path, state: str | None = None) -> None:
    folder.mkdir(parents=True)
    if state is not None:
        (folder / "trainer_state.json").write_text(state)


def test_last_passes_over_checkpoints_whose_save_did_not_finish_and_says_why(tmp_path):
    write_checkpoint(tmp_path / "checkpoint-4", json.dumps({"global_step": 4}))
    write_checkpoint(tmp_path / "checkpoint-12", json.dumps({"global_step": 12})[:9])  # cut off mid-write
    write_checkpoint(tmp_path / "checkpoint-16")  # killed before the state
    write_checkpoint(tmp_path / "checkpoint-8", json.dumps({"global_step": 7}))
    (tmp_path / "checkpoint-20").write_text("not a folder")
    write_checkpoint(tmp_path / "checkpoint-final", json.dumps({"global_step": 99}))
    point = newest_complete_checkpoint(tmp_path)
    assert (point.checkpoint, point.step) == (str(tmp_path / "checkpoint-4"), 4)
    assert point.skipped == ("checkpoint-16 (no trainer_state.json: the save did not finish)",
                             "checkpoint-12 (trainer_state.json does not read back: the save did not finish)",
                             "checkpoint-8 (trainer_state.json says step 7)")
    # A path that names one of them is refused, with where to go instead.
    args = type("Args", (), {"resume_from_checkpoint": str(tmp_path / "checkpoint-16"), "output_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="checkpoint-16: no trainer_state.json.*`last` takes the newest complete"):
        resume_point(args)


def test_a_resumed_run_does_not_evaluate_at_its_start_and_a_fresh_one_still_does(tmp_path, capsys):
    write_checkpoint(tmp_path / "checkpoint-3", json.dumps({"global_step": 3}))

    def args(output_dir):
        return type("Args", (), {"resume_from_checkpoint": "last", "output_dir": str(output_dir),
                                 "eval_on_start": True, "report_to": ["none"]})()

    resumed, fresh = args(tmp_path), args(tmp_path / "empty")
    prepare_resume(resumed, "train")
    prepare_resume(fresh, "train")
    assert (resumed.resume_from_checkpoint, resumed.eval_on_start) == (str(tmp_path / "checkpoint-3"), False)
    assert (fresh.resume_from_checkpoint, fresh.eval_on_start) == (None, True)
    assert capsys.readouterr().out.splitlines() == [
        f"reasonflux-rl train: resuming from {tmp_path / 'checkpoint-3'} (step 3)",
        f"reasonflux-rl train: no checkpoint in {tmp_path / 'empty'}: starting from step 0"]


def test_a_w_and_b_run_id_set_by_the_user_is_kept_for_the_restarts(tmp_path, monkeypatch):
    from reasonflux_rl.train.resume import keep_wandb_run

    monkeypatch.setenv("WANDB_RUN_ID", "mine")
    monkeypatch.delenv("WANDB_RESUME", raising=False)
    assert keep_wandb_run(tmp_path, resuming=False) == "mine"
    monkeypatch.delenv("WANDB_RUN_ID")
    assert keep_wandb_run(tmp_path, resuming=True) == "mine"
    assert os.environ["WANDB_RESUME"] == "allow"


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step_with_one_checkpoint(tiny_models, tmp_path):
    rows = write_jsonl(tmp_path / "rows.jsonl", cue_rows(96, 3))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(HERE / "distributed_stop.py"), str(tiny_models.policy), str(rows), str(tmp_path)],
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # Rank 1 was signalled during step 3; rank 0 never was, and stopped there too.
    assert read_records(tmp_path) == [{"stopped_at": 3, "global_step": 3}] * 2
    assert sorted(p.name for p in (tmp_path / "prm").glob("checkpoint-*")) == ["checkpoint-3"]
    assert "stopped at step 3 on SIGUSR1" in proc.stdout
