"""Outputs are written atomically with the permissions of any new file (not a temporary file's private ones)."""

import os
import stat

import pytest

from reasonflux_rl.tools.outputs import write_json, write_rows
from reasonflux_rl.tools.plots import bon_accuracy


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_get_the_permissions_the_umask_gives_new_files(tmp_path, umask_027):
    rows = [{"a": 1}, {"a": 2}]
    assert mode(write_json({"a": 1}, tmp_path / "s.json")) == 0o640
    assert mode(write_rows(rows, tmp_path / "r.jsonl")) == 0o640
    assert mode(write_rows(rows, tmp_path / "r.parquet")) == 0o640
    assert mode(write_rows(rows, tmp_path / "saved")) == 0o750
    assert mode(write_rows(rows, tmp_path / "saved")) == 0o750  # replacing an existing directory
    assert mode(bon_accuracy([{"n": 1, "prm": 0.5}], tmp_path / "f.png")) == 0o640
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
