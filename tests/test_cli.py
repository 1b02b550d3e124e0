"""The `reasonflux-rl` dispatcher: its docstring and usage name every command."""

import re

from reasonflux_rl import cli


def test_the_module_docstring_names_every_command_of_the_usage():
    commands = re.findall(r"^  (\S+) ", cli.USAGE, re.M)
    assert commands == ["train", "prm", "tiny-models", "score", "select", "bon", "serve-prm", "lab"]
    for command in commands:
        assert f"``{command}``" in cli.__doc__, command


def test_every_command_of_the_usage_has_a_main():
    import importlib

    commands = re.findall(r"^  (\S+) ", cli.USAGE, re.M)
    assert list(cli.COMMANDS) == commands
    for command, target in cli.COMMANDS.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), command
