"""`reasonflux-rl train --help`: our options and the reward keys on the first screen, TRL's flags behind --help-all."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from reasonflux_rl.rewards.config import RewardArguments
from reasonflux_rl.train.launch import main as train_main

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("reasonflux-rl")
FIRST_SCREEN = 40
LAUNCH_OPTIONS = ("--config", "--dry-run", "--accelerate_config", "--num_processes")


def help_text(capsys, *flags):
    train_main(list(flags))
    return capsys.readouterr().out


def test_first_screen_shows_the_launch_options_and_every_reward_key(capsys):
    lines = help_text(capsys, "--help").splitlines()
    assert lines[0].startswith("usage: reasonflux-rl train --config FILE.yaml [--dry-run]")
    screen = "\n".join(lines[:FIRST_SCREEN])
    for option in LAUNCH_OPTIONS:
        assert f"{option} " in screen, option
    # Read from the dataclass: the keys may be regenerated, renamed or reordered; the help follows.
    for field in dataclasses.fields(RewardArguments):
        assert f"--{field.name} " in screen, field.name


def test_every_reward_key_has_its_help_and_trl_flags_wait_for_help_all(capsys):
    text = help_text(capsys, "--help")
    for field in dataclasses.fields(RewardArguments):
        assert " ".join(field.metadata["help"].split())[:40] in " ".join(text.split()), field.name
    assert "--learning_rate" not in text and "--help-all" in text
    assert len(text.splitlines()) < 200
    full = help_text(capsys, "--help-all")
    assert full.startswith(text.rsplit("\n", 2)[0])  # the same help first, then TRL's
    for flag in ("--learning_rate", "--num_generations", "--model_name_or_path", "--lora_r"):
        assert flag in full, flag


@pytest.mark.parametrize("command", [[str(CLI), "train", "--help"],
                                     [sys.executable, "-m", "reasonflux_rl.train", "-h"]],
                         ids=["reasonflux-rl train", "python -m reasonflux_rl.train"])
def test_both_entry_points_print_the_same_help(command, capsys):
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == help_text(capsys, "--help")


def test_a_bad_flag_gets_the_short_usage_not_every_trl_flag(tmp_path):
    proc = subprocess.run([str(CLI), "train", "--config", str(REPO / "recipes/smoke/cpu.yaml"), "--no_such_flag", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--no_such_flag" in proc.stderr
    assert len(proc.stderr.splitlines()) < 10, proc.stderr[:2000]
