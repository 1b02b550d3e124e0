"""What the README shows a user works: the set-up commands are the ones CI runs, the GRPOTrainer snippet trains, and
the key table names real keys with their real defaults."""

import dataclasses
import re
import subprocess
from pathlib import Path

from reasonflux_rl.rewards.config import RewardArguments
from reasonflux_rl.train.reference import yaml_value

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
# CI extracts the test command from the README, and users paste both lines: they change only on purpose.
MAIN_COMMAND = (
    'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[plots]" && .venv/bin/reasonflux-rl train '
    "--config recipes/lab/cpu.yaml"
)
TEST_COMMAND = 'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[test]" && .venv/bin/pytest'


def block_after(marker: str) -> str:
    return re.search(rf"<!-- {marker} -->\n```\w*\n(.*?)```", README, re.S).group(1)


def test_grpo_trainer_snippet_trains(tiny_models, tmp_path, monkeypatch):
    code = block_after("grpo-snippet")
    code = code.replace("/path/to/ReasonFlux-PRM-7B", str(tiny_models.prm))
    code = code.replace("/path/to/policy", str(tiny_models.policy))
    # The snippet is written for a GPU machine; on CPU TRL needs use_cpu, and a tiny run needs short completions.
    code = code.replace("max_steps=2)", "max_steps=2, use_cpu=True, max_completion_length=8, report_to='none')")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README-snippet", "exec"), namespace)
    assert namespace["trainer"].state.global_step == 2
    rewards = namespace["trainer"].state.log_history[0]
    assert "reasonflux/prm_mean" in rewards and rewards["reasonflux/beta"] == 0.75
    namespace["reward"].close()


def test_the_set_up_commands_are_the_ones_users_and_ci_know():
    assert block_after("main-command") == MAIN_COMMAND + "\n"
    assert block_after("test-command") == TEST_COMMAND + "\n"


def test_ci_runs_the_readme_test_command():
    repo = Path(__file__).resolve().parents[1]
    command = subprocess.run(
        ["bash", ".ci/run", "--print-test-command"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert command == block_after("test-command").strip()
    assert command.endswith(".venv/bin/pytest")
    assert "\n" not in block_after("main-command").strip()


def test_the_readme_is_a_quick_start():
    assert len(README.splitlines()) <= 150


def test_the_key_table_names_real_keys_with_their_defaults():
    fields = {f.name: f for f in dataclasses.fields(RewardArguments)}
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", README, re.M)
    assert len(rows) == 10
    for name, default in rows:
        assert name in fields, f"{name} is not a RewardArguments key"
        expected = yaml_value(fields[name].default)
        literal = re.fullmatch(r"`([^`]+)`", default.strip())
        if expected is None:
            # Unset in the dataclass: the README says what takes its place (unset, or what it is read from).
            assert literal is None, f"{name}: the README shows {default.strip()} but the default is unset"
        else:
            assert literal and literal.group(1) == expected, f"{name}: README {default.strip()}, code {expected}"
