"""What the README shows a user works: the GRPOTrainer snippet runs, every reward key is documented."""

import dataclasses
import re
import subprocess
from pathlib import Path

from reasonflux_rl.rewards.config import RewardArguments

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def block_after(marker: str) -> str:
    return re.search(rf"<!-- {marker} -->\n```\w*\n(.*?)```", README, re.S).group(1)


def test_grpo_trainer_snippet_trains(tiny_models, tmp_path, monkeypatch):
    code = block_after("grpo-snippet")
    code = code.replace("/path/to/ReasonFlux-PRM-7B", str(tiny_models.prm)).replace("/path/to/policy", str(tiny_models.policy))
    # The snippet is written for a GPU machine; on CPU TRL needs use_cpu, and a tiny run needs short completions.
    code = code.replace("max_steps=2)", "max_steps=2, use_cpu=True, max_completion_length=8, report_to='none')")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README-snippet", "exec"), namespace)
    assert namespace["trainer"].state.global_step == 2
    rewards = namespace["trainer"].state.log_history[0]
    assert "reasonflux/prm_mean" in rewards and rewards["reasonflux/beta"] == 0.75
    namespace["reward"].close()


def test_every_reward_key_is_documented():
    for field in dataclasses.fields(RewardArguments):
        assert f"| `{field.name}` |" in README, field.name


def test_ci_runs_the_readme_test_command():
    repo = Path(__file__).resolve().parents[1]
    command = subprocess.run(
        ["bash", ".ci/run", "--print-test-command"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert command == block_after("test-command").strip()
    assert command.endswith(".venv/bin/pytest")
    assert "\n" not in block_after("smoke-command").strip()
