"""The opening that `score`, `select` and `bon` share (reasonflux_rl.tools.pipeline): an empty input is called empty,
a run that stops before storing a score leaves no file behind, and a hub dataset's config name is `--dataset-config`
(`--config` is the YAML recipe's flag elsewhere, so these commands refuse it)."""

import re

import pytest
from jsonl_helpers import write_jsonl

import reasonflux_rl.data
from reasonflux_rl.errors import ConfigError
from reasonflux_rl.tools import bon, score, selection

# Each command's module, the options it needs besides --input/--prm/--output, and its output's name.
COMMANDS = {
    "score": (score, [], "out.jsonl"),
    "select": (selection, ["--top-k", "1", "--no-plot"], "sel.jsonl"),
    "bon": (bon, ["--no-plot", "--workers", "1"], "bon.json"),
}
# A row every command can read: score and select take problem/completion, bon problem/solution/candidates.
ROW = {"problem": "1+1?", "completion": "</think>\n\\boxed{2}", "solution": "2", "candidates": ["</think>\n\\boxed{2}"]}


def run(command, input_path, tmp_path):
    module, extra, output = COMMANDS[command]
    module.main(["--input", str(input_path), "--prm", "fake-prm", "--output", str(tmp_path / output), "--no-progress",
                 *extra])


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("text", ["", "\n  \n"], ids=["no-bytes", "blank-lines"])
def test_an_empty_input_is_called_empty_and_named(tmp_path, command, text):
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^--input {re.escape(repr(str(path)))} is empty: it has no rows"):
        run(command, path, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_prm_that_fails_to_load_leaves_no_file_behind(tmp_path, monkeypatch, command):
    def unloadable(args):
        raise ConfigError("no such PRM")

    monkeypatch.setattr(COMMANDS[command][0], "scorer_from_args", unloadable)
    data = write_jsonl(tmp_path / "in.jsonl", [ROW, ROW])
    with pytest.raises(ConfigError, match="no such PRM"):
        run(command, data, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


@pytest.mark.parametrize("command", COMMANDS)
def test_dataset_config_reaches_the_loader_and_config_is_refused(tmp_path, monkeypatch, capsys, command):
    calls = []

    def load_table(name, config=None, split="train"):
        calls.append((name, config, split))
        return [ROW, ROW]

    def unloadable(args):
        raise ConfigError("no such PRM")

    module, extra, output = COMMANDS[command]
    monkeypatch.setattr(reasonflux_rl.data, "load_table", load_table)
    monkeypatch.setattr(module, "scorer_from_args", unloadable)
    argv = ["--input", "org/maths", "--prm", "fake-prm", "--output", str(tmp_path / output), "--no-progress", *extra]
    with pytest.raises(ConfigError, match="no such PRM"):
        module.main([*argv, "--dataset-config", "main", "--split", "test"])
    assert calls == [("org/maths", "main", "test")]

    with pytest.raises(SystemExit) as stop:
        module.make_parser().parse_args([*argv, "--config", "x"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --config x" in capsys.readouterr().err
