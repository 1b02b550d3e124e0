"""`.ci/run`'s exit status: the README test command's status passes through, except pytest's 5 (no tests collected).

Each case runs `.ci/run` on a stand-in README whose test command is cheap, so nothing is installed.
"""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

CI = Path(__file__).resolve().parents[1] / ".ci" / "run"


def run_ci(tmp_path: Path, test_command: str, *args: str) -> subprocess.CompletedProcess:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Project\n\nRun the tests:\n<!-- test-command -->\n```bash\n{test_command}\n```\n")
    return subprocess.run(["bash", str(CI), "--readme", str(readme), *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("status", "ci_status"), [(0, 0), (1, 1), (2, 2), (5, 1)])
def test_exit_status_of_the_test_command(tmp_path, status, ci_status):
    proc = run_ci(tmp_path, f"exit {status}")
    assert proc.returncode == ci_status, proc.stderr
    assert ("collected no tests; that is a failure" in proc.stderr) == (status == 5)


def test_pytest_collecting_nothing_fails_ci(tmp_path):
    empty = tmp_path / "no_tests"
    empty.mkdir()
    (empty / "helpers.py").write_text("VALUE = 1\n")  # a module, but no test in it
    command = f"{shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider {shlex.quote(str(empty))}"
    proc = run_ci(tmp_path, command)
    assert "no tests ran" in proc.stdout
    assert proc.returncode == 1 and "collected no tests" in proc.stderr


def test_the_test_command_is_read_from_the_given_readme(tmp_path):
    proc = run_ci(tmp_path, "echo from-the-stand-in", "--print-test-command")
    assert proc.returncode == 0 and proc.stdout == "echo from-the-stand-in\n"
    (tmp_path / "README.md").write_text("# No test command here\n")
    proc = subprocess.run(["bash", str(CI), "--readme", str(tmp_path / "README.md")], capture_output=True, text=True)
    assert proc.returncode == 1 and "no test command found" in proc.stderr
