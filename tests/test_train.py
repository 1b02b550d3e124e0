"""`reasonflux-rl train` end to end, and the errors a bad config gets before anything loads."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import Qwen2Config, Qwen2ForCausalLM
from wandb_offline import history

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.train.launch import main as train_main

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("reasonflux-rl")
REWARD_METRICS = ["reasonflux/outcome_mean", "reasonflux/prm_mean", "reasonflux/mixed_mean", "reasonflux/beta"]


# The recipes choose W&B's mode in their own `env:` section; an inherited setting would hide whether they do.
WANDB_OVERRIDES = ("WANDB_MODE", "WANDB_DISABLED")


def run(cmd, cwd, env=None, timeout=600, drop=()):
    inherited = {name: value for name, value in os.environ.items() if name not in (*WANDB_OVERRIDES, *drop)}
    return subprocess.run(cmd, cwd=cwd, env={**inherited, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def test_smoke_training_runs_through_the_cli(tiny_models, tmp_path):
    out = tmp_path / "smoke"
    proc = run(
        [str(CLI), "train", "--config", str(REPO / "recipes/smoke/cpu.yaml"),
         "--model_name_or_path", str(tiny_models.policy), "--prm_name_or_path", str(tiny_models.prm),
         "--output_dir", str(out)],
        cwd=tmp_path,
        # conftest tells DeepSpeed the accelerator; here the run must do it itself.
        drop=("DS_ACCELERATOR",),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    # Neither greets the run: train reads gradient_checkpointing as activation_checkpointing, and tells DeepSpeed
    # that a use_cpu run is on the CPU (docs/cluster.md#warnings-at-start).
    assert "`gradient_checkpointing` is deprecated" not in proc.stderr
    assert "Setting accelerator to CPU" not in proc.stdout + proc.stderr
    # Saved as TRL's own class, so reading a run's arguments back needs TRL alone.
    import torch
    from trl import GRPOConfig

    assert type(torch.load(out / "training_args.bin", weights_only=False)) is GRPOConfig
    steps = [row for row in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in row]
    assert len(steps) >= 5
    # The tiny random policy never answers right, so the mix itself is checked on the lab (below).
    for row in steps:
        assert row["reasonflux/beta"] == 0.75
        assert 0.0 <= row["reasonflux/prm_mean"] <= 1.0
    # WANDB_MODE=offline comes from recipes/smoke/cpu.yaml's env: section alone (run() drops any inherited one).
    assert glob.glob(str(out / "wandb/run-*")) == [], "an online W&B run was started"
    [run_file] = glob.glob(str(out / "wandb/offline-run-*/run-*.wandb"))
    logged = [row for row in history(Path(run_file)) if "train/reasonflux/beta" in row]
    assert len(logged) == len(steps)
    for name in REWARD_METRICS:
        assert all(f"train/{name}" in row for row in logged), name


def test_the_lab_run_mixes_a_varying_outcome_with_the_prm_as_eq_12(tmp_path):
    out = tmp_path / "lab"
    proc = run(
        [str(CLI), "train", "--config", "recipes/lab/cpu.yaml", "--max_steps", "3", "--per_device_train_batch_size",
         "32", "--eval_strategy", "no", "--eval_on_start", "false", "--report_to", "none", "--output_dir", str(out)],
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    steps = [row for row in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in row]
    assert len(steps) == 3
    # The lab's warm-started policy is right about 40% of the time: the outcome's weight in the mix is at work.
    assert any(0.0 < row["reasonflux/outcome_mean"] < 1.0 for row in steps)
    for row in steps:
        # Every lab completion has steps and every reference parses, so no row is missing either part.
        assert row["reasonflux/prm_missing"] == row["reasonflux/outcome_missing"] == 0
        assert row["reasonflux/mixed_mean"] == pytest.approx(
            0.5 * row["reasonflux/outcome_mean"] + 0.5 * row["reasonflux/prm_mean"], abs=1e-5)


def test_trl_grpo_cli_with_dotted_reward_path(tiny_models, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "solution": str(2 * i)} for i in range(8)]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run(
        [str(Path(sys.executable).with_name("trl")), "grpo", "--model_name_or_path", str(tiny_models.policy),
         "--dataset_name", str(data), "--reward_funcs", "reasonflux_rl.rewards.mixed_reward",
         "--output_dir", str(tmp_path / "out"), "--use_cpu", "--max_steps", "2", "--per_device_train_batch_size", "4",
         "--num_generations", "4", "--max_completion_length", "16", "--report_to", "none", "--logging_steps", "1",
         "--save_strategy", "no"],
        cwd=tmp_path,
        env={"REASONFLUX_PRM_NAME_OR_PATH": str(tiny_models.prm), "REASONFLUX_PRM_BETA": "0.5",
             "REASONFLUX_OUTCOME_NUM_WORKERS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "'reasonflux/beta': '0.5'" in proc.stdout + proc.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()


def lm_checkpoint(path, tied):
    config = Qwen2Config(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)
    Qwen2ForCausalLM(config).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--prm_beta", "1.5"], r"prm_beta=1.5 is out of range: it must be in \[0, 1\]"),
        (["--prm_beta", "-0.1"], r"prm_beta=-0.1 is out of range"),
        (["--prm_normalisation", "zscore"], r"prm_normalisation='zscore' is not allowed: choose one of \['none', "
                                            r"'group_zscore', 'group_minmax', 'group_rank', 'batch_zscore'\]"),
        (["--prm_aggregation", "max"], r"prm_aggregation='max' is not allowed: choose one of \['mean', 'min'"),
        (["--prm_name_or_path", ""], r"prm_name_or_path is missing but prm_beta=0.75 > 0"),
        (["--prm_name_or_path", "/no/such/dir"], r"prm_name_or_path='/no/such/dir' is not a local directory"),
        (["--prm_dtype", "float99"], r"prm_dtype='float99' is not allowed"),
    ],
)
def test_bad_config_fails_before_anything_loads(tiny_models, flags, message):
    # The policy path does not exist: an error about it would mean loading started before the check.
    argv = ["--output_dir", "unused", "--use_cpu", "--model_name_or_path", "/no/such/policy",
            "--prm_name_or_path", str(tiny_models.prm), *flags]
    with pytest.raises(ConfigError, match=message):
        train_main(argv)


@pytest.mark.parametrize(
    "tied,message",
    [(False, r"^prm_name_or_path='[^']+': not a supported PRM .*: weights hold an LM head of vocabulary size "
             r"\(100\), not a 2-label step head"),
     (True, r"^prm_name_or_path='[^']+': not a supported PRM .*tied input/output embeddings \(an LM\), no step head")],
)
def test_prm_without_step_head_is_refused_with_what_was_found(tmp_path, tied, message):
    prm = lm_checkpoint(tmp_path / "lm", tied)
    with pytest.raises(ConfigError, match=message):
        train_main(["--output_dir", "unused", "--use_cpu", "--model_name_or_path", "/no/such/policy",
                    "--prm_name_or_path", prm])


def test_cli_prints_a_one_line_error_for_bad_config(tiny_models, tmp_path):
    proc = run([str(CLI), "train", "--config", str(REPO / "recipes/smoke/cpu.yaml"), "--prm_beta", "2"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "reasonflux-rl train: error: prm_beta=2.0 is out of range: it must be in [0, 1]"
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("flags,expected", [([], True), (["--gradient_checkpointing", "false"], False),
                                            (["--no_gradient_checkpointing"], False),
                                            (["--activation_checkpointing", "false"], False)])
def test_gradient_checkpointing_is_read_as_activation_checkpointing_without_a_warning(flags, expected):
    import warnings

    from reasonflux_rl.train.launch import make_parser

    argv = ["--output_dir", "out", "--use_cpu", "--report_to", "none", "--prm_beta", "0", "--model_name_or_path", "m"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        training_args = make_parser().parse_args_and_config(argv + flags)[1]
    assert training_args.activation_checkpointing is expected
    assert training_args.gradient_checkpointing is expected


def test_main_reads_as_its_named_steps():
    import ast
    import inspect

    from reasonflux_rl.train import launch, preflight

    for function in (launch.main, launch.train, launch.parse_launch, preflight.check_batch, preflight.preflight):
        node = ast.parse(inspect.getsource(function)).body[0]
        assert node.end_lineno - node.lineno < 50, function.__name__
