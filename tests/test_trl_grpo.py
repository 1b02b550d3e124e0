"""`trl grpo` with the shipped recipe: the README's command trains on the tiny models, configured only by the
recipe's `env:` section; the recipe's data is what the shipped script writes; `reasonflux-rl train` refuses it."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.train.dataset import write_prompt_dataset
from reasonflux_rl.train.launch import main as train_main

REPO = Path(__file__).resolve().parents[1]
RECIPE = Path("recipes/smoke/trl_grpo.yaml")
DATA = Path("recipes/smoke/trl_grpo_data")
README = (REPO / "README.md").read_text()


def readme_trl_command() -> list[str]:
    block = re.search(r"<!-- trl-grpo-command -->\n```bash\n(.*?)```", README, re.S).group(1).strip()
    setup, train = block.split(" && ")
    assert setup == "reasonflux-rl tiny-models --out outputs/tiny"
    return shlex.split(train)


def test_the_recipe_data_is_what_the_shipped_script_writes(tmp_path):
    written = write_prompt_dataset(tmp_path)
    assert (written / "train.jsonl").read_bytes() == (REPO / DATA / "train.jsonl").read_bytes()
    assert f"python -m reasonflux_rl.train.dataset --out {DATA}" in (REPO / RECIPE).read_text()


def test_the_readme_trl_grpo_command_trains_two_steps_on_cpu(tiny_models, tmp_path):
    # A copy of what the recipe names, laid out as in a checkout after `reasonflux-rl tiny-models --out outputs/tiny`.
    (tmp_path / RECIPE.parent).mkdir(parents=True)
    shutil.copy(REPO / RECIPE, tmp_path / RECIPE)
    shutil.copytree(REPO / DATA, tmp_path / DATA)
    shutil.copytree(tiny_models.policy, tmp_path / "outputs/tiny/policy")
    shutil.copytree(tiny_models.prm, tmp_path / "outputs/tiny/prm")
    command = readme_trl_command()
    assert command[:2] == ["trl", "grpo"] and command[2:] == ["--config", str(RECIPE)]
    out = tmp_path / "out"
    # Nothing configures the reward but the recipe; DeepSpeed's accelerator is the recipe's to set too.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REASONFLUX_") and k != "DS_ACCELERATOR"}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("trl")), *command[1:], "--max_steps", "2", "--output_dir", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    logged = proc.stdout + proc.stderr
    steps = re.findall(r"\{'loss'.*\}", logged)
    assert len(steps) == 2
    for step in steps:
        assert "'reasonflux/beta': '0.75'" in step and "'rewards/mixed_reward/mean'" in step
    assert (out / "model.safetensors").is_file()
    # The recipe keeps transformers' rename and DeepSpeed's accelerator detection quiet (docs/cluster.md).
    assert "`gradient_checkpointing` is deprecated" not in logged
    assert "Setting accelerator to CPU" not in logged


def test_reasonflux_rl_train_refuses_a_trl_grpo_recipe_before_applying_its_env(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("REASONFLUX_PRM_NAME_OR_PATH", raising=False)
    with pytest.raises(ConfigError, match=r"is a `trl grpo` recipe.*Run it with `trl grpo --config "):
        train_main(["--config", str(RECIPE), "--dry-run"])
    # The recipe's env: section would configure every later dotted-path reward in this process.
    assert "REASONFLUX_PRM_NAME_OR_PATH" not in os.environ
