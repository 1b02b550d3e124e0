"""``reasonflux-rl select``: score trajectory-response pairs with a PRM and keep the best (offline data selection).

The paper's first use of ReasonFlux-PRM: rank the (thinking trajectory, response) pairs that a teacher wrote and keep
the top ones for SFT (1k of 59k). Every row is scored with the PRM, its step scores are aggregated (``mean`` by
default, the paper's ``(1/T) * sum_t r_t``) and the top ``k`` rows, or the top fraction, are written out with their
scores, optionally balanced across a source column (e.g. the model that wrote the row).

Guarantees, each tested:

- Ranking is by aggregated score, highest first; equal scores are ordered by input row index (earlier first), so
  the selection is deterministic.
- Every input row is either scored or reported in the summary as a bad row with its row number (rows are numbered
  from 0; in a JSONL file, blank lines are not rows); ``--on-bad-row error`` (the default) stops before scoring.
- Step scores are appended to a cache file chunk by chunk as they are computed, so an interrupted run resumes
  where it stopped, without rescoring and without duplicate or lost rows. Outputs are written to a temporary file
  in the output's directory and moved into place with ``os.replace``: never half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Protocol

from .errors import ConfigError
from .prm.aggregate import AGGREGATIONS, aggregate
from .trajectory import THINK_CLOSE

# How separate thinking and response fields are joined into the one completion a scorer reads; the scorer splits it
# back at the last "</think>" (see reasonflux_rl.trajectory.split_trajectory).
THINKING_SEPARATOR = "\n" + THINK_CLOSE + "\n\n"
# Columns added to every selected row. An input that already has one is refused rather than overwritten.
SCORE_COLUMNS = ("row_index", "prm_score", "prm_step_scores", "prm_num_steps", "prm_dropped_steps")
DEFAULT_BINS = 20
_CACHE_VERSION = 1
_SHOWN_BAD_ROWS = 10
_OUTPUT_SUFFIXES = (".jsonl", ".parquet")


class Scorer(Protocol):
    """What ``select`` and ``bon`` need from a PRM: ``StepScorer`` and every kind of ``reasonflux_rl.prm``.

    ``score`` returns one result per pair, in input order, with ``step_scores`` (and ``num_steps``,
    ``dropped_steps``, optionally ``trajectory_score``), like ``reasonflux_rl.prm.scorer.StepScores``.

    Example:
    ```python
    >>> from reasonflux_rl.prm.scorer import StepScores
    >>> class Constant:  # a stand-in PRM, as the tests use
    ...     def score(self, problems, completions):
    ...         return [StepScores([0.5], num_steps=1) for _ in completions]
    >>> Constant().score(["1+1?"], ["2"])[0].step_scores
    [0.5]

    ```
    """

    def score(self, problems: Sequence[str], completions: Sequence[str]) -> list[Any]: ...


# ----------------------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Fields:
    """Which input fields hold the problem, the completion and (optionally) the source of each row.

    Either ``completion`` (one text, thinking and response split at its last ``</think>``) or both ``thinking`` and
    ``response``; these are joined as ``thinking + "\\n</think>\\n\\n" + response`` before scoring.

    Example:
    ```python
    >>> from reasonflux_rl.select import Fields
    >>> Fields(thinking="trace", response="answer", completion=None).text_fields()
    ('problem', 'trace', 'answer')

    ```
    """

    problem: str = "problem"
    completion: str | None = "completion"
    thinking: str | None = None
    response: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        separate = (self.thinking is not None, self.response is not None)
        if any(separate) and not all(separate):
            raise ConfigError("thinking and response fields go together: set --thinking-field and --response-field")
        if all(separate) == (self.completion is not None):
            raise ConfigError("set either a completion field or both a thinking and a response field")

    def text_fields(self) -> tuple[str, ...]:
        """The fields whose text is scored, in the order they are checked."""
        parts = (self.completion,) if self.completion is not None else (self.thinking, self.response)
        return (self.problem, *parts)  # type: ignore[return-value]

    def required(self) -> tuple[str, ...]:
        """Every field a row must have."""
        return self.text_fields() + ((self.source,) if self.source is not None else ())


@dataclass(frozen=True)
class Pair:
    """One scoreable row: its input row index, the problem, the completion the scorer reads, and its source.

    Example:
    ```python
    >>> from reasonflux_rl.select import Pair
    >>> Pair(0, "1+1?", "<think>\\nAdd.\\n</think>\\n\\n2", source="R1").source
    'R1'

    ```
    """

    row: int
    problem: str
    completion: str
    source: str | None = None


@dataclass(frozen=True)
class BadRow:
    """An input row that was not scored, and why.

    Example:
    ```python
    >>> from reasonflux_rl.select import BadRow
    >>> str(BadRow(3, "missing 'problem'"))
    "row 3: missing 'problem'"

    ```
    """

    row: int
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.reason}"


def join_completion(thinking: str, response: str) -> str:
    """The completion a scorer reads for separate thinking and response fields.

    Example:
    ```python
    >>> from reasonflux_rl.select import join_completion
    >>> from reasonflux_rl.trajectory import split_trajectory
    >>> text = join_completion("Try 2.\\n\\nIt works.", "The answer is 2.")
    >>> text
    'Try 2.\\n\\nIt works.\\n</think>\\n\\nThe answer is 2.'
    >>> split_trajectory(text).thinking, split_trajectory(text).response
    ('Try 2.\\n\\nIt works.', 'The answer is 2.')

    ```
    """
    return thinking + THINKING_SEPARATOR + response


def read_jsonl(path: str | Path) -> tuple[list[dict | None], list[BadRow]]:
    """Read a JSONL file row by row; a line that is not a JSON object is a bad row (``None`` in the rows).

    Read here rather than with ``datasets``, whose Arrow reader refuses a whole file when one value has another type
    than the rest of its column: a row with a number where the problem should be must be reported, not fatal.

    Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.select import read_jsonl
    >>> path = Path(tempfile.mkdtemp()) / "rows.jsonl"
    >>> _ = path.write_text('{"problem": "1+1?"}\\n\\n{"problem": 2\\n[1]\\n')
    >>> rows, bad = read_jsonl(path)
    >>> rows[0], [str(b) for b in bad]
    ({'problem': '1+1?'}, ['row 1: line 3 is not valid JSON', 'row 2: line 4 is a JSON list, not an object'])

    ```
    """
    rows: list[dict | None] = []
    bad: list[BadRow] = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                bad.append(BadRow(len(rows), f"line {line_number} is not valid JSON"))
                value = None
            else:
                if not isinstance(value, dict):
                    bad.append(BadRow(len(rows), f"line {line_number} is a JSON {type(value).__name__}, not an object"))
                    value = None
            rows.append(value)
    return rows, bad


def load_rows(
    name: str, config: str | None = None, split: str = "train"
) -> tuple[Sequence[Mapping | None], list[BadRow]]:
    """Rows of a ``.jsonl`` file (read by [`read_jsonl`]), or of anything ``reasonflux_rl.data.load_table`` opens:
    a ``.json``/``.parquet``/``.csv`` file, a ``save_to_disk`` directory or a hub dataset name.

    Example:
    ```python
    >>> from reasonflux_rl.select import load_rows
    >>> rows, bad = load_rows("builtin:smoke_math")
    >>> len(rows), bad
    (96, [])

    ```
    """
    path = Path(name)
    if path.is_file() and path.suffix == ".jsonl":
        return read_jsonl(path)
    from .data import load_table

    try:
        return load_table(name, config, split), []
    except Exception as err:  # the input boundary: any loader failure is a bad --input, said in one line
        raise ConfigError(f"cannot read input {name!r}: {type(err).__name__}: {err}") from err


def column_names(rows: Sequence[Mapping | None]) -> set[str]:
    """The fields present in at least one row (a ``datasets.Dataset``'s columns).

    Example:
    ```python
    >>> from reasonflux_rl.select import column_names
    >>> sorted(column_names([{"a": 1}, None, {"b": 2}]))
    ['a', 'b']

    ```
    """
    names = getattr(rows, "column_names", None)
    if names is not None:
        return set(names)
    return {key for row in rows if row is not None for key in row}


def check_columns(rows: Sequence[Mapping | None], required: Sequence[str], added: Sequence[str] = ()) -> None:
    """Refuse, before any work, a field name that no row has (a typo, not a bad row) and an input column that the
    output would overwrite.

    Example:
    ```python
    >>> from reasonflux_rl.select import check_columns
    >>> check_columns([{"question": "1+1?"}], ["problem"])
    Traceback (most recent call last):
    ...
    reasonflux_rl.errors.ConfigError: field 'problem' is in no input row; the input's fields are ['question']

    ```
    """
    present = column_names(rows)
    for name in required:
        if name not in present:
            raise ConfigError(f"field {name!r} is in no input row; the input's fields are {sorted(present)}")
    clash = sorted(present.intersection(added))
    if clash:
        raise ConfigError(f"the input already has column(s) {clash}, which the output adds; rename them first")


def _text(row: Mapping, name: str, reasons: list[str], allow_empty: bool = False) -> str | None:
    value = row.get(name)
    if value is None:
        reasons.append(f"missing {name!r}")
    elif not isinstance(value, str):
        reasons.append(f"{name!r} is a {type(value).__name__}, not a string: {value!r:.60}")
    elif not allow_empty and not value.strip():
        reasons.append(f"{name!r} is empty")
    else:
        return value
    return None


def _source(row: Mapping, name: str, reasons: list[str]) -> str | None:
    # Model ids are often integers; those are a fine label. Anything else (lists, floats, bools) is not.
    value = row.get(name)
    if value is None:
        reasons.append(f"missing {name!r}")
    elif isinstance(value, bool) or not isinstance(value, (str, int)):
        reasons.append(f"{name!r} is a {type(value).__name__}, not a string or an integer: {value!r:.60}")
    elif not str(value).strip():
        reasons.append(f"{name!r} is empty")
    else:
        return str(value)
    return None


def row_pair(index: int, row: Mapping, fields: Fields) -> Pair | BadRow:
    """The [`Pair`] a row gives, or a [`BadRow`] naming every problem with it.

    Example:
    ```python
    >>> from reasonflux_rl.select import Fields, row_pair
    >>> row_pair(0, {"problem": "1+1?", "completion": "2"}, Fields())
    Pair(row=0, problem='1+1?', completion='2', source=None)
    >>> print(row_pair(7, {"problem": 5, "completion": "  "}, Fields()))
    row 7: 'problem' is a int, not a string: 5; 'completion' is empty

    ```
    """
    reasons: list[str] = []
    problem = _text(row, fields.problem, reasons)
    if fields.completion is not None:
        completion = _text(row, fields.completion, reasons)
    else:
        thinking = _text(row, fields.thinking, reasons, allow_empty=True)
        response = _text(row, fields.response, reasons, allow_empty=True)
        completion = None
        if thinking is not None and response is not None:
            if not thinking.strip() and not response.strip():
                reasons.append(f"{fields.thinking!r} and {fields.response!r} are both empty")
            elif THINK_CLOSE in response:
                reasons.append(f"{fields.response!r} contains {THINK_CLOSE!r}: the scorer would split it there")
            else:
                completion = join_completion(thinking, response)
    source = _source(row, fields.source, reasons) if fields.source is not None else None
    if reasons:
        return BadRow(index, "; ".join(reasons))
    return Pair(index, problem, completion, source)  # type: ignore[arg-type]


def extract_pairs(rows: Sequence[Mapping | None], fields: Fields) -> tuple[list[Pair], list[BadRow]]:
    """Split rows into scoreable pairs and bad rows. ``None`` rows were already reported by the reader and are
    neither.

    Example:
    ```python
    >>> from reasonflux_rl.select import Fields, extract_pairs
    >>> rows = [{"problem": "1+1?", "completion": "2"}, {"problem": "2+2?"}]
    >>> pairs, bad = extract_pairs(rows, Fields())
    >>> [p.row for p in pairs], [str(b) for b in bad]
    ([0], ["row 1: missing 'completion'"])

    ```
    """
    pairs: list[Pair] = []
    bad: list[BadRow] = []
    for index, row in enumerate(rows):
        if row is None:
            continue
        result = row_pair(index, row, fields)
        (bad if isinstance(result, BadRow) else pairs).append(result)  # type: ignore[arg-type]
    return pairs, bad


def describe_bad_rows(bad: Sequence[BadRow], limit: int = _SHOWN_BAD_ROWS) -> str:
    """One line listing the first ``limit`` bad rows and how many more there are.

    Example:
    ```python
    >>> from reasonflux_rl.select import BadRow, describe_bad_rows
    >>> describe_bad_rows([BadRow(i, "empty") for i in range(4)], limit=2)
    '4 bad rows: row 0: empty | row 1: empty | ... and 2 more'

    ```
    """
    shown = " | ".join(str(b) for b in bad[:limit])
    more = f" | ... and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"{len(bad)} bad row{'s' if len(bad) != 1 else ''}: {shown}{more}"


# ----------------------------------------------------------------------------------------------- scores and cache


@dataclass(frozen=True)
class ScoreRecord:
    """What the PRM said about one row; one line of the score cache.

    The aggregated score is not stored: it is recomputed from the step scores with the current ``aggregation``, so a
    cache stays valid when only the aggregation or the selection changes.
    """

    row: int
    step_scores: list[float]
    num_steps: int = 0
    dropped_steps: int = 0
    trajectory_score: float | None = None

    @classmethod
    def from_result(cls, row: int, result: Any) -> ScoreRecord:
        """Record a scorer's result (``StepScores`` or any object with its attributes)."""
        trajectory = getattr(result, "trajectory_score", None)
        return cls(
            row=row,
            step_scores=[float(s) for s in result.step_scores],
            num_steps=int(getattr(result, "num_steps", len(result.step_scores))),
            dropped_steps=int(getattr(result, "dropped_steps", 0)),
            trajectory_score=None if trajectory is None else float(trajectory),
        )

    def score(self, aggregation: str = "mean") -> float | None:
        """The row's score: its aggregated step scores; a PRM that gives only a trajectory score (a value head) is
        ranked by that score. ``None`` when the PRM scored nothing (e.g. every step was cut to fit its context).

        Example:
        ```python
        >>> from reasonflux_rl.select import ScoreRecord
        >>> ScoreRecord(0, [0.5, 1.0]).score(), ScoreRecord(0, [0.5, 1.0]).score("min"), ScoreRecord(0, []).score()
        (0.75, 0.5, None)

        ```
        """
        steps = aggregate(self.step_scores, aggregation)
        return self.trajectory_score if steps is None else steps


def fingerprint(settings: Mapping[str, Any], pairs: Sequence[Pair]) -> str:
    """A hash of the settings that change step scores and of every scored (row, problem, completion).

    Hashing the content, not a file's name or date, covers hub datasets as well as files and catches an input that
    was edited in place.

    Example:
    ```python
    >>> from reasonflux_rl.select import Pair, fingerprint
    >>> a = fingerprint({"prm": "p"}, [Pair(0, "1+1?", "2")])
    >>> a == fingerprint({"prm": "p"}, [Pair(0, "1+1?", "2")]), a == fingerprint({"prm": "p"}, [Pair(0, "1+1?", "3")])
    (True, False)

    ```
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for pair in pairs:
        digest.update(json.dumps([pair.row, pair.problem, pair.completion]).encode() + b"\n")
    return digest.hexdigest()


class ScoreCache:
    """Step scores on disk as JSONL: a header line ``{"version", "fingerprint", "settings"}``, then one
    ``{"row", "step_scores", "num_steps", "dropped_steps", "trajectory_score"}`` line per scored row.

    Lines are appended, flushed and fsynced one chunk at a time. A crash can only tear the last line: on load it is
    cut off (and so rescored), never glued to the next append. A cache written for other settings or another input
    is refused with the settings that differ; a corrupt line elsewhere is refused with its line number.

    Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.select import ScoreCache, ScoreRecord
    >>> path = Path(tempfile.mkdtemp()) / "scores.jsonl"
    >>> cache = ScoreCache(path, "abc", {"prm": "p"})
    >>> cache.load()
    {}
    >>> cache.append([ScoreRecord(4, [0.5])])
    >>> with open(path, "a") as f:
    ...     _ = f.write('{"row": 5, "step_sc')  # a crash mid-line
    >>> list(ScoreCache(path, "abc", {"prm": "p"}).load())
    [4]
    >>> ScoreCache(path, "xyz", {"prm": "q"}).load()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    reasonflux_rl.errors.ConfigError: score cache ... was written with other settings (prm: cached 'p', now 'q'); ...

    ```
    """

    def __init__(self, path: str | Path, fingerprint: str, settings: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.settings = dict(settings)

    def load(self) -> dict[int, ScoreRecord]:
        """The records already on disk by row; creates the file (with its header) when there is none."""
        data = self.path.read_bytes() if self.path.exists() else b""
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) < len(data):
            with open(self.path, "r+b") as handle:  # drop the torn tail so the next append starts a fresh line
                handle.truncate(len(complete))
        lines = complete.splitlines()
        if not lines:
            self._write_header()
            return {}
        self._check_header(lines[0])
        records: dict[int, ScoreRecord] = {}
        for number, line in enumerate(lines[1:], start=2):
            try:
                record = ScoreRecord(**json.loads(line))
            except (ValueError, TypeError) as err:
                raise ConfigError(
                    f"score cache {self.path} line {number} is corrupt ({err}); delete the file to rescore"
                ) from err
            records[record.row] = record
        return records

    def append(self, records: Sequence[ScoreRecord]) -> None:
        """Append records and force them to disk."""
        text = "".join(json.dumps(asdict(record)) + "\n" for record in records)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def _write_header(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = {"version": _CACHE_VERSION, "fingerprint": self.fingerprint, "settings": self.settings}
        with open(self.path, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(header) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _check_header(self, line: bytes) -> None:
        try:
            header = json.loads(line)
            cached_fingerprint, cached = header["fingerprint"], header["settings"]
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{self.path} is not a score cache written by reasonflux-rl select") from err
        if cached_fingerprint == self.fingerprint:
            return
        changed = [
            f"{key}: cached {cached.get(key)!r}, now {self.settings.get(key)!r}"
            for key in sorted(set(cached) | set(self.settings))
            if cached.get(key) != self.settings.get(key)
        ]
        what = f"other settings ({'; '.join(changed)})" if changed else "an input whose rows have changed since"
        raise ConfigError(
            f"score cache {self.path} was written with {what}; pass --cache NEW_PATH, or delete it to rescore"
        )


def score_pairs(
    pairs: Sequence[Pair],
    scorer: Scorer,
    *,
    cache: ScoreCache | None = None,
    chunk_size: int = 256,
    progress: bool = False,
) -> dict[int, ScoreRecord]:
    """Score every pair not already in ``cache``, ``chunk_size`` rows per ``scorer.score`` call, in input order;
    each chunk is appended to the cache before the next one starts.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> from reasonflux_rl.prm.scorer import StepScorer
    >>> from reasonflux_rl.select import Pair, score_pairs
    >>> scorer = StepScorer.from_pretrained(write_tiny_models(tempfile.mkdtemp()).prm)
    >>> records = score_pairs([Pair(0, "1+1?", "Add.\\n</think>\\n\\n2"), Pair(3, "2+2?", "4")], scorer)
    >>> {row: r.num_steps for row, r in records.items()}
    {0: 2, 3: 1}

    ```
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size} must be >= 1")
    from tqdm.auto import tqdm

    done = cache.load() if cache is not None else {}
    todo = [pair for pair in pairs if pair.row not in done]
    initial = len(pairs) - len(todo)
    with tqdm(total=len(pairs), initial=initial, desc="PRM scoring", unit="row", disable=not progress) as bar:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            results = scorer.score([p.problem for p in chunk], [p.completion for p in chunk])
            if len(results) != len(chunk):
                raise RuntimeError(f"the scorer returned {len(results)} results for {len(chunk)} inputs")
            records = [ScoreRecord.from_result(pair.row, result) for pair, result in zip(chunk, results)]
            if cache is not None:
                cache.append(records)
            done.update((record.row, record) for record in records)
            bar.update(len(chunk))
    return {pair.row: done[pair.row] for pair in pairs}


# ----------------------------------------------------------------------------------------------- selection


def rank(scores: Mapping[int, float]) -> list[int]:
    """Rows from the highest score to the lowest; equal scores in input row order.

    Example:
    ```python
    >>> from reasonflux_rl.select import rank
    >>> rank({4: 0.5, 1: 0.9, 2: 0.5, 0: 0.1})
    [1, 2, 4, 0]

    ```
    """
    return sorted(scores, key=lambda row: (-scores[row], row))


def selection_size(num_rows: int, top_k: int | None = None, top_fraction: float | None = None) -> int:
    """How many rows to keep: ``top_k`` (at most all), or ``floor(top_fraction * num_rows)``.

    Example:
    ```python
    >>> from reasonflux_rl.select import selection_size
    >>> selection_size(59_000, top_k=1000), selection_size(10, top_k=50), selection_size(100, top_fraction=0.29)
    (1000, 10, 29)

    ```
    """
    if (top_k is None) == (top_fraction is None):
        raise ConfigError("set exactly one of top_k and top_fraction")
    if top_k is not None:
        if top_k < 1:
            raise ConfigError(f"top_k={top_k} must be >= 1")
        return min(top_k, num_rows)
    if not 0 < top_fraction <= 1:  # type: ignore[operator]
        raise ConfigError(f"top_fraction={top_fraction} must be in (0, 1]")
    # The epsilon keeps 0.29 * 100 = 28.999999999999996 from flooring to 28.
    return min(num_rows, math.floor(top_fraction * num_rows + 1e-9))  # type: ignore[operator]


def _balanced_quotas(ranked: Mapping[str, list[int]], scores: Mapping[int, float], k: int) -> dict[str, int]:
    quota = {source: 0 for source in ranked}
    remaining = min(k, sum(len(rows) for rows in ranked.values()))
    while remaining:
        open_sources = [s for s in sorted(ranked) if quota[s] < len(ranked[s])]
        share = remaining // len(open_sources)
        if share == 0:
            # Fewer slots than sources: they go to the best next rows, ties to the earliest row.
            best = sorted(open_sources, key=lambda s: (-scores[ranked[s][quota[s]]], ranked[s][quota[s]]))
            for source in best[:remaining]:
                quota[source] += 1
            break
        for source in open_sources:
            take = min(share, len(ranked[source]) - quota[source])
            quota[source] += take
            remaining -= take
    return quota


def select_top(scores: Mapping[int, float], k: int, sources: Mapping[int, str] | None = None) -> list[int]:
    """The ``k`` best rows, in rank order (see [`rank`]).

    With ``sources`` the selection is balanced: every source gets an equal share of ``k``; a source with fewer rows
    than its share gives all its rows and the slots it leaves are shared equally among the others (water-filling);
    slots that cannot be shared equally go to the best remaining rows. Within a source, rows are taken best first.

    Example:
    ```python
    >>> from reasonflux_rl.select import select_top
    >>> scores = {0: 0.9, 1: 0.8, 2: 0.7, 3: 0.2, 4: 0.1, 5: 0.8}
    >>> select_top(scores, 3)
    [0, 1, 5]
    >>> select_top(scores, 4, sources={0: "A", 1: "A", 2: "A", 5: "A", 3: "B", 4: "B"})
    [0, 1, 3, 4]

    ```
    """
    if sources is None:
        return rank(scores)[:k]
    ranked: dict[str, list[int]] = {}
    for row in rank(scores):
        ranked.setdefault(sources[row], []).append(row)
    quota = _balanced_quotas(ranked, scores, k)
    chosen = [row for source, rows in ranked.items() for row in rows[: quota[source]]]
    return rank({row: scores[row] for row in chosen})


# ----------------------------------------------------------------------------------------------- overlap


def histogram(
    values: Sequence[float], bins: int = DEFAULT_BINS, bounds: tuple[float, float] = (0.0, 1.0)
) -> list[float]:
    """The fraction of ``values`` in each of ``bins`` equal-width bins over ``bounds`` (left-closed, the last bin
    also closed on the right); every value must lie within ``bounds``.

    Example:
    ```python
    >>> from reasonflux_rl.select import histogram
    >>> histogram([0.1, 0.3, 0.6, 1.0], bins=4)
    [0.25, 0.25, 0.25, 0.25]

    ```
    """
    low, high = bounds
    if bins < 1 or not high > low:
        raise ValueError(f"need bins >= 1 and bounds low < high, got bins={bins}, bounds={bounds}")
    if not values:
        return [0.0] * bins
    counts = [0] * bins
    for value in values:
        if not low <= value <= high:
            raise ValueError(f"value {value} is outside the histogram bounds {bounds}")
        counts[min(int((value - low) / (high - low) * bins), bins - 1)] += 1
    return [count / len(values) for count in counts]


def overlap_coefficient(
    a: Sequence[float], b: Sequence[float], bins: int = DEFAULT_BINS, bounds: tuple[float, float] = (0.0, 1.0)
) -> float:
    """How much two score distributions overlap: ``sum over bins of min(p_a, p_b)`` for the normalised histograms
    ``p`` of [`histogram`] on shared bins (the overlapping coefficient). 1 for identical histograms, 0 when no bin
    holds scores of both.

    Example:
    ```python
    >>> from reasonflux_rl.select import overlap_coefficient
    >>> overlap_coefficient([0.1, 0.1, 0.6, 0.6], [0.6, 0.6, 0.6, 0.9], bins=4)
    0.5
    >>> overlap_coefficient([0.1], [0.9], bins=4)
    0.0

    ```
    """
    return math.fsum(min(p, q) for p, q in zip(histogram(a, bins, bounds), histogram(b, bins, bounds)))


@dataclass(frozen=True)
class Overlap:
    """The overlap between sources' score distributions: ``value`` is the mean of the pairwise
    [`overlap_coefficient`] over all pairs of sources (the coefficient itself for two), ``None`` for one source;
    ``pairs`` holds each pair's coefficient, keyed ``"A | B"``.

    Example:
    ```python
    >>> from reasonflux_rl.select import source_overlap
    >>> source_overlap({"only": [0.5]}).value is None
    True

    ```
    """

    value: float | None
    pairs: dict[str, float]
    bins: int
    bounds: tuple[float, float]


def score_bounds(values: Sequence[float]) -> tuple[float, float]:
    """``[0, 1]`` (where PRM probabilities lie), widened to the scores' range when they leave it (a trajectory
    term can push a score past 1).

    Example:
    ```python
    >>> from reasonflux_rl.select import score_bounds
    >>> score_bounds([0.2, 0.7]), score_bounds([0.2, 1.4])
    ((0.0, 1.0), (0.0, 1.4))

    ```
    """
    return (min(0.0, *values), max(1.0, *values)) if values else (0.0, 1.0)


def source_overlap(groups: Mapping[str, Sequence[float]], bins: int = DEFAULT_BINS) -> Overlap:
    """The [`Overlap`] of the score distributions of two or more sources, on shared bins over [`score_bounds`].

    Example:
    ```python
    >>> from reasonflux_rl.select import source_overlap
    >>> o = source_overlap({"A": [0.1, 0.6], "B": [0.6, 0.6], "C": [0.9, 0.9]}, bins=4)
    >>> o.value, o.pairs
    (0.16666666666666666, {'A | B': 0.5, 'A | C': 0.0, 'B | C': 0.0})

    ```
    """
    bounds = score_bounds([v for values in groups.values() for v in values])
    pairs = {
        f"{a} | {b}": overlap_coefficient(groups[a], groups[b], bins, bounds)
        for a, b in combinations(sorted(groups), 2)
    }
    value = math.fsum(pairs.values()) / len(pairs) if pairs else None
    return Overlap(value, pairs, bins, bounds)


# ----------------------------------------------------------------------------------------------- atomic output


@contextlib.contextmanager
def atomic_output(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path`` (``os.replace``), on
    error it is removed and ``path`` is untouched. With ``directory=True`` the temporary path is a directory and an
    existing directory at ``path`` is swapped out, then deleted.

    Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.select import atomic_output
    >>> out = Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_output(out) as tmp:
    ...     _ = tmp.write_text("done")
    >>> out.read_text(), sorted(p.name for p in out.parent.iterdir())
    ('done', ['x.txt'])

    ```
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    else:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        tmp = Path(name)
    try:
        yield tmp
        if directory and path.is_dir():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
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
    >>> from reasonflux_rl.select import write_json
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
    >>> from reasonflux_rl.select import output_format
    >>> output_format("sel.jsonl"), output_format("sel.parquet"), output_format("out/selected")
    ('jsonl', 'parquet', 'disk')

    ```
    """
    suffix = Path(path).suffix
    if suffix in _OUTPUT_SUFFIXES:
        return suffix[1:]
    if suffix:
        raise ConfigError(f"output {str(path)!r}: use a .jsonl or .parquet file, or a directory name without a suffix")
    return "disk"


def write_rows(rows: Sequence[Mapping[str, Any]], path: str | Path, features: Any = None) -> Path:
    """Write rows atomically as JSONL, Parquet or a ``save_to_disk`` directory (see [`output_format`]).

    ``features`` (``datasets.Features``) keeps the input's column types in Parquet and ``save_to_disk`` output.

    Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.select import read_jsonl, write_rows
    >>> path = write_rows([{"problem": "1+1?", "prm_score": 0.5}], Path(tempfile.mkdtemp()) / "sel.jsonl")
    >>> read_jsonl(path)
    ([{'problem': '1+1?', 'prm_score': 0.5}], [])

    ```
    """
    kind = output_format(path)
    if kind == "jsonl":
        with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
        return Path(path)
    from datasets import Dataset

    table = Dataset.from_list(list(rows), features=features)
    with atomic_output(path, directory=kind == "disk") as tmp:
        if kind == "parquet":
            table.to_parquet(str(tmp))
        else:
            table.save_to_disk(str(tmp))
    return Path(path)


def _output_features(rows: Sequence[Mapping | None]) -> Any:
    features = getattr(rows, "features", None)
    if features is None:
        return None
    from datasets import Features, List, Value

    return Features(
        {
            **features,
            "row_index": Value("int64"),
            "prm_score": Value("float64"),
            "prm_step_scores": List(Value("float64")),
            "prm_num_steps": Value("int64"),
            "prm_dropped_steps": Value("int64"),
        }
    )


# ----------------------------------------------------------------------------------------------- the command


def sibling(output: str | Path, suffix: str) -> Path:
    """A file next to ``output`` named after it: ``sel.jsonl`` -> ``sel<suffix>``.

    Example:
    ```python
    >>> from reasonflux_rl.select import sibling
    >>> str(sibling("out/sel.jsonl", ".summary.json")), str(sibling("out/sel", ".scores.png"))
    ('out/sel.summary.json', 'out/sel.scores.png')

    ```
    """
    path = Path(output)
    stem = path.stem if path.suffix in _OUTPUT_SUFFIXES else path.name
    return path.with_name(stem + suffix)


def _add_prm_arguments(parser: argparse.ArgumentParser) -> None:
    """The PRM options shared by ``select`` and ``bon``; [`_load_scorer`] reads them."""
    group = parser.add_argument_group("PRM")
    group.add_argument("--prm", required=True, help="local PRM checkpoint directory (e.g. ReasonFlux-PRM-7B)")
    group.add_argument("--aggregation", default="mean", choices=AGGREGATIONS, help="step scores -> one score")
    group.add_argument("--parts", default="both", choices=("both", "thinking", "response"), help="steps scored")
    group.add_argument("--max-length", type=int, default=None, help="PRM context in tokens (default: the model's)")
    group.add_argument("--max-steps", type=int, default=None, help="cap on steps per completion")
    group.add_argument("--batch-tokens", type=int, default=16384, help="padded tokens per PRM forward pass")
    group.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU) or a torch dtype name")
    group.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    group.add_argument("--chunk-size", type=int, default=256, help="rows per scorer call (and per cache flush)")


def _scorer_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The scorer options that can change a step score (the batch size and device cannot, by design).

    Example:
    ```python
    >>> import argparse
    >>> from reasonflux_rl.select import _add_prm_arguments, _scorer_settings
    >>> parser = argparse.ArgumentParser()
    >>> _add_prm_arguments(parser)
    >>> _scorer_settings(parser.parse_args(["--prm", "ckpt"]))
    {'parts': 'both', 'max_length': None, 'max_steps': None, 'dtype': 'auto'}

    ```
    """
    return {"parts": args.parts, "max_length": args.max_length, "max_steps": args.max_steps, "dtype": args.dtype}


def _load_scorer(args: argparse.Namespace) -> Scorer:
    """The one place ``select`` and ``bon`` load their PRM: any kind ``load_scorer`` detects (step classifier or
    value head)."""
    from .prm.loader import load_scorer

    settings = _scorer_settings(args)
    return load_scorer(
        args.prm,
        device=args.device,
        dtype=settings.pop("dtype"),
        batch_tokens=args.batch_tokens,
        **settings,
    )


class _LazyScorer:
    """Loads the PRM on the first ``score`` call, so a run whose scores are all cached never loads the model."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._scorer: Scorer | None = None

    def score(self, problems: Sequence[str], completions: Sequence[str]) -> list[Any]:
        """``_load_scorer(args).score(problems, completions)``, loading once."""
        if self._scorer is None:
            self._scorer = _load_scorer(self._args)
        return self._scorer.score(problems, completions)


def make_parser() -> argparse.ArgumentParser:
    """The ``reasonflux-rl select`` argument parser.

    Example:
    ```python
    >>> from reasonflux_rl.select import make_parser
    >>> args = make_parser().parse_args(["--input", "d.jsonl", "--prm", "ckpt", "--top-k", "5", "--output", "o.jsonl"])
    >>> args.top_k, args.aggregation, args.on_bad_row
    (5, 'mean', 'error')

    ```
    """
    parser = argparse.ArgumentParser(
        prog="reasonflux-rl select",
        description="Score every row with a PRM and keep the top-k (or top fraction) by aggregated score.",
    )
    parser.add_argument("--input", required=True, help=".jsonl/.json/.parquet/.csv file, save_to_disk dir or hub name")
    parser.add_argument("--config", default=None, help="hub dataset config name")
    parser.add_argument("--split", default="train", help="split of a hub dataset or DatasetDict")
    parser.add_argument("--output", required=True, help="out.jsonl, out.parquet, or a directory (save_to_disk)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--top-k", type=int, help="keep this many rows")
    size.add_argument("--top-fraction", type=float, help="keep floor(fraction * scored rows) rows")
    parser.add_argument("--balance-sources", action="store_true", help="equal share per source (needs --source-field)")
    fields = parser.add_argument_group("fields")
    fields.add_argument("--problem-field", default="problem")
    fields.add_argument("--completion-field", default=None, help="one text split at </think> (default: completion)")
    fields.add_argument("--thinking-field", default=None, help="with --response-field: separate fields")
    fields.add_argument("--response-field", default=None)
    fields.add_argument("--source-field", default=None, help="e.g. the model that wrote the row")
    parser.add_argument("--on-bad-row", default="error", choices=("error", "skip"), help="stop, or skip and report")
    parser.add_argument("--cache", default=None, help="score cache (default: <output>.prm-cache.jsonl)")
    parser.add_argument("--summary", default=None, help="JSON summary (default: <output>.summary.json)")
    parser.add_argument("--plot", default=None, help="PNG figure (default: <output>.scores.png)")
    parser.add_argument("--no-plot", action="store_true", help="write no figure (matplotlib not needed)")
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS, help="histogram bins for the overlap and figure")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_prm_arguments(parser)
    return parser


def _fields_from_args(args: argparse.Namespace) -> Fields:
    """The [`Fields`] named on the command line."""
    separate = args.thinking_field is not None or args.response_field is not None
    if separate and args.completion_field is not None:
        raise ConfigError("--completion-field and --thinking-field/--response-field exclude each other")
    return Fields(
        problem=args.problem_field,
        completion=None if separate else (args.completion_field or "completion"),
        thinking=args.thinking_field,
        response=args.response_field,
        source=args.source_field,
    )


def _handle_bad_rows(bad: Sequence[BadRow], policy: str, when: str, command: str = "select") -> None:
    if not bad:
        return
    if policy == "error":
        raise ConfigError(f"{describe_bad_rows(bad)} ({when}; pass --on-bad-row skip to skip and report them)")
    print(f"reasonflux-rl {command}: skipping {describe_bad_rows(bad)}; all listed in the output JSON", file=sys.stderr)


def _source_stats(scores: Mapping[int, float], sources: Mapping[int, str], selected: Sequence[int]) -> dict:
    chosen = set(selected)
    stats: dict[str, dict] = {}
    for source in sorted(set(sources.values())):
        values = [scores[row] for row in scores if sources[row] == source]
        kept = [scores[row] for row in scores if sources[row] == source and row in chosen]
        stats[source] = {
            "rows": len(values),
            "selected": len(kept),
            "mean": statistics.fmean(values),
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "threshold": min(kept) if kept else None,
        }
    return stats


def main(argv: Sequence[str]) -> None:
    """Run ``reasonflux-rl select`` (see ``--help`` and the module docstring).

    Example:
    ```python
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.select import main
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> work = Path(tempfile.mkdtemp())
    >>> prm = write_tiny_models(work).prm
    >>> text = "<think>\\nAdd {}.\\n</think>\\n\\n\\\\boxed{{2}}"
    >>> rows = [{"problem": "1+1?", "completion": text.format(i)} for i in range(4)]
    >>> _ = (work / "pairs.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> main(["--input", str(work / "pairs.jsonl"), "--prm", str(prm), "--top-k", "2",
    ...       "--output", str(work / "selected.jsonl"), "--no-plot"])  # doctest: +ELLIPSIS
    selected 2 of 4 scored rows (0 bad), threshold ...
    output:  .../selected.jsonl
    summary: .../selected.summary.json

    ```
    """
    args = make_parser().parse_args(list(argv))
    fields = _fields_from_args(args)
    if args.balance_sources and fields.source is None:
        raise ConfigError("--balance-sources needs --source-field")
    if args.bins < 1:
        raise ConfigError(f"--bins={args.bins} must be >= 1")
    output = Path(args.output)
    output_format(output)
    selection_size(1, args.top_k, args.top_fraction)  # checks the value before any work
    if not args.no_plot:
        from .plots import require_matplotlib

        require_matplotlib()  # before the scoring, not after hours of it

    rows, bad = load_rows(args.input, args.config, args.split)
    check_columns(rows, fields.required(), SCORE_COLUMNS)
    pairs, bad_fields = extract_pairs(rows, fields)
    bad = sorted(bad + bad_fields, key=lambda b: b.row)
    _handle_bad_rows(bad, args.on_bad_row, "before scoring")

    # Everything that changes a step score, and nothing else: the aggregation and source are applied after the
    # cache, so changing them re-selects without rescoring.
    settings = {
        "input": str(Path(args.input).resolve()) if Path(args.input).exists() else args.input,
        "prm": str(Path(args.prm).resolve()) if Path(args.prm).exists() else args.prm,
        "fields": list(fields.text_fields()),
        "scorer": _scorer_settings(args),
    }
    cache_path = Path(args.cache) if args.cache else sibling(output, ".prm-cache.jsonl")
    cache = ScoreCache(cache_path, fingerprint(settings, pairs), settings)
    progress = not args.no_progress
    records = score_pairs(pairs, _LazyScorer(args), cache=cache, chunk_size=args.chunk_size, progress=progress)

    row_scores = {row: record.score(args.aggregation) for row, record in records.items()}
    unscored = [
        BadRow(row, f"the PRM scored none of its {records[row].num_steps} steps")
        for row, score in row_scores.items()
        if score is None
    ]
    _handle_bad_rows(unscored, args.on_bad_row, f"after scoring; the scores are cached in {cache_path}")
    bad = sorted(bad + unscored, key=lambda b: b.row)
    scores = {row: s for row, s in row_scores.items() if s is not None}
    if len(scores) + len(bad) != len(rows):  # every input row is accounted for, once
        raise RuntimeError(f"{len(rows)} rows in, {len(scores)} scored + {len(bad)} bad")

    sources = {p.row: p.source for p in pairs if p.row in scores} if fields.source is not None else None
    k = selection_size(len(scores), args.top_k, args.top_fraction)
    selected = select_top(scores, k, sources if args.balance_sources else None)
    out_rows = [
        {
            **rows[row],  # type: ignore[dict-item]
            "row_index": row,
            "prm_score": scores[row],
            "prm_step_scores": records[row].step_scores,
            "prm_num_steps": records[row].num_steps,
            "prm_dropped_steps": records[row].dropped_steps,
        }
        for row in selected
    ]
    write_rows(out_rows, output, _output_features(rows))

    groups: dict[str, list[float]] = {}
    for row in sorted(scores):
        groups.setdefault(sources[row] if sources else "all", []).append(scores[row])
    overlap = source_overlap(groups, args.bins)
    threshold = scores[selected[-1]] if selected else None
    per_source = _source_stats(scores, sources, selected) if sources else {}
    figure = None
    if not args.no_plot:
        from .plots import score_distributions

        figure = score_distributions(
            groups,
            Path(args.plot) if args.plot else sibling(output, ".scores.png"),
            threshold=None if args.balance_sources else threshold,
            source_thresholds={s: v["threshold"] for s, v in per_source.items()} if args.balance_sources else None,
            overlap=overlap.value,
            bins=args.bins,
            bounds=overlap.bounds,
            title=f"PRM scores ({args.aggregation}) of {len(scores)} rows, {len(selected)} selected",
        )
    summary = {
        "input": args.input,
        "prm": args.prm,
        "aggregation": args.aggregation,
        "fields": asdict(fields),
        "rows": len(rows),
        "scored": len(scores),
        "bad_rows": [asdict(b) for b in bad],
        "on_bad_row": args.on_bad_row,
        "selection": {
            "top_k": args.top_k,
            "top_fraction": args.top_fraction,
            "balance_sources": args.balance_sources,
            "selected": len(selected),
            "threshold": threshold,
        },
        "sources": per_source,
        "overlap": {
            "value": overlap.value,
            "pairs": overlap.pairs,
            "definition": "mean over pairs of sources of sum_b min(p_b, q_b), p and q the fractions of each source's "
            f"scores in {overlap.bins} equal-width bins over {list(overlap.bounds)}",
            "bins": overlap.bins,
            "bounds": list(overlap.bounds),
        },
        "output": str(output),
        "cache": str(cache_path),
        "figure": None if figure is None else str(figure),
        "fingerprint": cache.fingerprint,
    }
    summary_path = write_json(summary, Path(args.summary) if args.summary else sibling(output, ".summary.json"))
    shown = "none" if threshold is None else f"{threshold:.4f}"
    print(f"selected {len(selected)} of {len(scores)} scored rows ({len(bad)} bad), threshold {shown}")
    print(f"output:  {output}\nsummary: {summary_path}" + (f"\nfigure:  {figure}" if figure else ""))
