"""Outputs written atomically: JSON, rows as JSONL, Parquet or a ``save_to_disk`` directory, and any file a writer
makes (the figures).

Each output is written to a temporary path beside it and moved into place with ``os.replace``, so a reader sees the
old output or the new one, never half of one; the output gets the permissions any new file gets (``0o666`` or
``0o777`` less the umask), not a temporary file's private ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from reasonflux_rl.errors import ConfigError

ROW_SUFFIXES = (".jsonl", ".parquet")


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield an unused path beside ``path`` for the caller to create (a file or a directory); on success it replaces
    ``path`` (an existing directory is swapped out, then deleted), on error it is removed and ``path`` is untouched.

    Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.tools.outputs import atomic_output
    >>> out = Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_output(out) as tmp:
    ...     _ = tmp.write_text("done")
    >>> out.read_text(), sorted(p.name for p in out.parent.iterdir())
    ('done', ['x.txt'])

    ```
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name rather than mkstemp/mkdtemp: those create the file 0600 (the directory 0700), and os.replace
    # would hand those permissions to the output.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            old = path.with_name(f".{path.name}.{secrets.token_hex(6)}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON, atomically.

    Example:
    ```python
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.tools.outputs import write_json
    >>> json.loads(write_json({"a": 1}, Path(tempfile.mkdtemp()) / "s.json").read_text())
    {'a': 1}

    ```
    """
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return Path(path)


def output_format(path: str | Path) -> str:
    """``jsonl`` or ``parquet`` from the file suffix, ``disk`` (``save_to_disk``) for a path without one.

    Example:
    ```python
    >>> from reasonflux_rl.tools.outputs import output_format
    >>> output_format("sel.jsonl"), output_format("sel.parquet"), output_format("out/selected")
    ('jsonl', 'parquet', 'disk')

    ```
    """
    suffix = Path(path).suffix
    if suffix in ROW_SUFFIXES:
        return suffix[1:]
    if suffix:
        raise ConfigError(f"output {str(path)!r}: use a .jsonl or .parquet file, or a directory name without a suffix")
    return "disk"


def write_rows(rows: Sequence[Mapping[str, Any]], path: str | Path, features: Any = None) -> Path:
    """Write rows atomically as JSONL, Parquet or a ``save_to_disk`` directory (see [`output_format`]).

    The table's columns are every key of any row, in first-seen order (a row without one holds null there);
    ``features`` (``datasets.Features``) keeps the input's column types. Values Arrow cannot put in one column
    (a number in one row, a string in another) raise [`ConfigError`]: JSONL holds them.

    Example:
    ```python
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from datasets import Dataset
    >>> from reasonflux_rl.tools.outputs import write_rows
    >>> work = Path(tempfile.mkdtemp())
    >>> path = write_rows([{"problem": "1+1?"}, {"problem": "2+2?", "note": "late"}], work / "sel.jsonl")
    >>> path.read_text().splitlines()[1]
    '{"problem": "2+2?", "note": "late"}'
    >>> Dataset.from_parquet(str(write_rows([{"a": 1}, {"a": 2, "b": "x"}], work / "t.parquet"))).to_list()
    [{'a': 1, 'b': None}, {'a': 2, 'b': 'x'}]

    ```
    """
    kind = output_format(path)
    if kind == "jsonl":
        with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
        return Path(path)
    import pyarrow
    from datasets import Dataset

    # Not Dataset.from_list, which takes its columns from the first row and drops a key only later rows have.
    columns = dict.fromkeys(key for row in rows for key in row)
    try:
        table = Dataset.from_dict({key: [row.get(key) for row in rows] for key in columns}, features=features)
        with atomic_output(path) as tmp:
            if kind == "parquet":
                table.to_parquet(str(tmp))
            else:
                table.save_to_disk(str(tmp))
    except pyarrow.ArrowException as err:
        raise ConfigError(f"cannot write {str(path)!r} as {kind}: {err}; write a .jsonl output instead") from err
    return Path(path)


def sibling(output: str | Path, suffix: str) -> Path:
    """A file next to ``output`` named after it: ``sel.jsonl`` -> ``sel<suffix>``.

    Example:
    ```python
    >>> from reasonflux_rl.tools.outputs import sibling
    >>> str(sibling("out/sel.jsonl", ".summary.json")), str(sibling("out/sel", ".scores.png"))
    ('out/sel.summary.json', 'out/sel.scores.png')

    ```
    """
    path = Path(output)
    stem = path.stem if path.suffix in ROW_SUFFIXES else path.name
    return path.with_name(stem + suffix)
