"""The one resumable store of per-row results: ``score``'s output, and ``select``'s and ``bon``'s PRM score cache.

Records are JSON objects with an integer ``"index"``, one per line, appended a chunk at a time and forced to disk
(``fsync``) before the next chunk is scored. Beside them, ``<path>.meta.json`` holds the settings that change the
records and a fingerprint of the input they were made from; a run with other settings or another input is refused,
naming what differs. A crash can only tear the last line: it is cut off on load (and that row scored again), never
glued to the next append. A run that stops before storing a record removes the files it started
([`ScoreStore.discard_if_empty`]): nothing is left behind when nothing was scored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.tools.outputs import write_json

STORE_VERSION = 2


class ScoreStore:
    """An append-only JSONL file of records and its settings file (see the module docstring).

    Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.tools.store import ScoreStore
    >>> path = Path(tempfile.mkdtemp()) / "scores.jsonl"
    >>> store = ScoreStore(path, {"prm": "p"}, "abc")
    >>> store.load()
    {}
    >>> store.append([{"index": 4, "step_scores": [0.5]}])
    >>> store.stored
    1
    >>> with open(path, "a") as f:
    ...     _ = f.write('{"index": 5, "step_sc')  # a crash mid-line
    >>> ScoreStore(path, {"prm": "p"}, "abc").load()
    {4: {'index': 4, 'step_scores': [0.5]}}
    >>> ScoreStore(path, {"prm": "q"}, "abc").load()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    reasonflux_rl.errors.ConfigError: ...scores.jsonl was written with other settings (prm: 'p' then, 'q' now); ...

    ```
    """

    def __init__(self, path: str | Path, settings: Mapping[str, Any], fingerprint: str) -> None:
        self.path = Path(path)
        self.meta_path = Path(f"{path}.meta.json")
        self.settings = json.loads(json.dumps(settings))  # as they read back: tuples become lists
        self.fingerprint = fingerprint
        # None until load() accepts the store: only then are its files this run's to count, or to discard.
        self.loaded: int | None = None
        self.appended = 0
        self._made: list[Path] = []

    @property
    def stored(self) -> int:
        """How many records the store holds: those [`ScoreStore.load`] found plus those appended since
        (0 before a load)."""
        return (self.loaded or 0) + self.appended

    def load(self) -> dict[int, dict]:
        """The records already stored, by index. With none, (re)starts the store under this run's settings."""
        data = self.path.read_bytes() if self.path.exists() else b""
        complete = data[: data.rfind(b"\n") + 1]
        if not complete.strip():
            # The folders write_json is about to make, innermost first: a discarded store takes them along.
            self._made = [d for d in (self.path.parent, *self.path.parent.parents) if not d.exists()]
            write_json({"version": STORE_VERSION, "settings": self.settings, "fingerprint": self.fingerprint},
                       self.meta_path)
            self.path.write_bytes(b"")
            self.loaded = 0
            return {}
        self._check_meta()
        records = self._read(complete)
        if len(complete) < len(data):
            # Only once the rest was found sound (a refused store is left as it was): drop the torn tail so the
            # next append starts a fresh line.
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))
        self.loaded = len(records)
        return records

    def _read(self, complete: bytes) -> dict[int, dict]:
        records: dict[int, dict] = {}
        for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                index = record["index"]
                if not isinstance(index, int) or isinstance(index, bool):
                    raise TypeError(f"index {index!r} is not an integer")
            except (ValueError, KeyError, TypeError) as err:
                raise ConfigError(f"{self.path} line {number} is not a stored row ({err}); delete it to rescore")
            if index in records:
                raise ConfigError(f"{self.path} holds row index {index} twice (line {number}); delete it to rescore")
            records[index] = record
        return records

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append records and force them to disk."""
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        self.appended += len(records)

    def discard_if_empty(self) -> bool:
        """Delete the store and its settings file (and the folders made for them, when still empty) when this run
        started them and stored no record in them: a run that stops before its first record leaves nothing behind.
        ``True`` when it deleted them.

        Example:
        ```python
        >>> import tempfile
        >>> from pathlib import Path
        >>> from reasonflux_rl.tools.store import ScoreStore
        >>> work = Path(tempfile.mkdtemp())
        >>> store = ScoreStore(work / "new" / "scores.jsonl", {"prm": "p"}, "abc")
        >>> store.discard_if_empty(), store.load(), store.path.exists()  # not loaded yet: not this run's to delete
        (False, {}, True)
        >>> store.discard_if_empty(), store.path.exists(), store.meta_path.exists(), list(work.iterdir())
        (True, False, False, [])

        ```
        """
        if self.loaded != 0 or self.appended:
            return False
        self.path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:  # something else was put there meanwhile: it stays, and so do the folders above it
                break
        return True

    def _check_meta(self) -> None:
        if not self.meta_path.exists():
            raise ConfigError(
                f"{self.path} exists but {self.meta_path.name} does not: cannot tell which settings wrote it; "
                "delete it to rescore"
            )
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            version, stored, fingerprint = meta["version"], meta["settings"], meta["fingerprint"]
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{self.meta_path} is not a settings file written by reasonflux-rl ({err})") from err
        changed = [
            f"{key}: {stored.get(key)!r} then, {self.settings.get(key)!r} now"
            for key in sorted(set(stored) | set(self.settings))
            if stored.get(key) != self.settings.get(key)
        ]
        if version != STORE_VERSION:
            changed.insert(0, f"store version: {version!r} then, {STORE_VERSION} now")
        if changed:
            what = f"other settings ({'; '.join(changed)})"
        elif fingerprint != self.fingerprint:
            what = "an input whose rows have changed since"
        else:
            return
        raise ConfigError(
            f"{self.path} was written with {what}; rerun with the same settings and input, or delete it (or choose "
            "another path) to rescore"
        )
