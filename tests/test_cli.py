"""The `reasonflux-rl` dispatcher: its docstring and usage name every command."""

import re

from reasonflux_rl import cli


def test_the_module_docstring_names_every_command_of_the_usage():
    commands = re.findall(r"^  (\S+) ", cli.USAGE, re.M)
    assert commands == ["train", "tiny-models", "score", "select", "bon", "serve-prm"]
    for command in commands:
        assert f"``{command}``" in cli.__doc__, command
