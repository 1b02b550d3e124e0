"""The opening of ``score``, ``select`` and ``bon``, written once: [`read_input`] loads the input rows, refuses an
empty input and a field no row has, parses each row and applies ``--on-bad-row``; [`score_stored`] scores the pairs
with the PRM into a resumable [`ScoreStore`] (the loop is [`score_pairs`]: a chunk at a time, with a progress bar)
and, when it stops early, leaves nothing behind or says what it left.

A pair's record holds what the PRM said (``step_scores``, ``trajectory_score``, the step and token counts), not an
aggregated score: that is [`record_reward`] of it with the aggregation and ``alpha`` of the run, so a cache stays
valid when only those change. A pair the PRM gives no usable score (no step scored, or a NaN or infinite value) has
an ``error`` in its record and no reward: it is a bad row, never ranked first or last by accident.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.engine.results import Scorer
from reasonflux_rl.rewards.formula import trajectory_reward
from reasonflux_rl.tools.rows import BadRow, Pair, Table, check_columns, handle_bad_rows, load_rows
from reasonflux_rl.tools.store import ScoreStore

Item = TypeVar("Item")


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def result_record(index: int, result: Any) -> dict[str, Any]:
    """The stored record of one scorer result (a ``StepScores``); non-finite values are stored as ``null`` and the
    record gets an ``error``, as does a result without any score.

    Example:
    ```python
    >>> from reasonflux_rl.prm.engine.results import StepScores
    >>> from reasonflux_rl.tools.pipeline import result_record
    >>> result_record(3, StepScores([0.5, float("nan")], num_steps=2, step_indices=[0, 1]))["error"]
    'the PRM gave a non-finite score'
    >>> result_record(4, StepScores([], num_steps=5, dropped_steps=5))["error"]
    'the PRM scored none of its 5 steps'

    ```
    """
    record = {
        "index": index,
        "step_scores": [_finite(s) for s in result.step_scores],
        "step_indices": list(result.step_indices),
        "trajectory_score": _finite(result.trajectory_score),
        "num_steps": result.num_steps,
        "dropped_steps": result.dropped_steps,
        "dropped_fraction": result.dropped_fraction,
        "num_tokens": result.num_tokens,
        "dropped_tokens": result.dropped_tokens,
    }
    values = [*result.step_scores, *([] if result.trajectory_score is None else [result.trajectory_score])]
    if not all(math.isfinite(v) for v in values):
        record["error"] = "the PRM gave a non-finite score"
    elif not values:
        record["error"] = f"the PRM scored none of its {result.num_steps} steps"
    return record


def record_reward(record: Mapping[str, Any], aggregation: str = "mean", alpha: float | None = None) -> float | None:
    """A record's score: ``trajectory_reward`` of its step scores and trajectory score; ``None`` for a record with an
    ``error``.

    Example:
    ```python
    >>> from reasonflux_rl.tools.pipeline import record_reward
    >>> record = {"step_scores": [0.5, 1.0], "trajectory_score": 0.8}
    >>> record_reward(record), record_reward(record, "min", alpha=0.5), record_reward({"error": "none"})
    (0.75, 0.9, None)

    ```
    """
    if "error" in record:
        return None
    return trajectory_reward(record["step_scores"], record["trajectory_score"], aggregation, alpha)


def fingerprint(items: Iterable[Pair | BadRow]) -> str:
    """A hash of every (row, problem, completion) to score and every (row, reason) of a bad row: a store made from
    other rows is refused, whether the input is a file edited in place or a hub dataset.

    Example:
    ```python
    >>> from reasonflux_rl.tools.rows import Pair
    >>> from reasonflux_rl.tools.pipeline import fingerprint
    >>> fingerprint([Pair(0, "1+1?", "2")]) == fingerprint([Pair(0, "1+1?", "3")])
    False

    ```
    """
    digest = hashlib.sha256()
    for item in items:
        fields = [item.row, item.reason] if isinstance(item, BadRow) else [item.row, item.problem, item.completion]
        digest.update(json.dumps(fields).encode() + b"\n")
    return digest.hexdigest()


def score_pairs(
    items: Sequence[Pair | BadRow],
    load: Callable[[], Scorer],
    store: ScoreStore | None = None,
    *,
    chunk_size: int = 256,
    progress: bool = False,
    to_record: Callable[[Pair, Any], dict[str, Any]] | None = None,
) -> dict[int, dict[str, Any]]:
    """The record of every item, by row: those already in ``store``, then the others scored in input order,
    ``chunk_size`` items per ``scorer.score`` call, each chunk appended to ``store`` before the next one starts.

    ``load`` gives the scorer; it is called once, and only when some pair is not stored yet. A [`BadRow`] is
    recorded as ``{"index", "error"}`` without scoring; ``to_record(pair, result)`` (default [`result_record`])
    makes a pair's record.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm import load_scorer
    >>> from reasonflux_rl.tools.rows import BadRow, Pair
    >>> from reasonflux_rl.tools.pipeline import score_pairs
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> scorer = load_scorer(write_tiny_models(tempfile.mkdtemp()).prm)
    >>> records = score_pairs([Pair(0, "1+1?", "Add.\\n</think>\\n\\n2"), BadRow(2, "empty"), Pair(3, "2+2?", "4")],
    ...                       lambda: scorer)
    >>> {row: r.get("num_steps", r.get("error")) for row, r in records.items()}
    {0: 2, 2: 'empty', 3: 1}

    ```
    """
    if chunk_size < 1:
        raise ConfigError(f"--chunk-size={chunk_size} must be >= 1")
    from tqdm.auto import tqdm

    make = to_record or (lambda pair, result: result_record(pair.row, result))
    done = store.load() if store is not None else {}
    todo = [item for item in items if item.row not in done]
    scorer = None
    with tqdm(total=len(items), initial=len(items) - len(todo), desc="PRM scoring", unit="row",
              disable=not progress) as bar:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            pairs = [item for item in chunk if isinstance(item, Pair)]
            results: list[Any] = []
            if pairs:
                scorer = scorer or load()
                results = scorer.score([p.problem for p in pairs], [p.completion for p in pairs])
                if len(results) != len(pairs):
                    raise RuntimeError(f"the scorer returned {len(results)} results for {len(pairs)} inputs")
            by_row = {pair.row: result for pair, result in zip(pairs, results)}
            records = [
                {"index": item.row, "error": item.reason} if isinstance(item, BadRow) else make(item, by_row[item.row])
                for item in chunk
            ]
            if store is not None:
                store.append(records)
            done.update((record["index"], record) for record in records)
            bar.update(len(chunk))
    return {item.row: done[item.row] for item in items}


@dataclass(frozen=True)
class InputRows(Generic[Item]):
    """A command's input as [`read_input`] gives it: the rows as read, the items parsed from the good ones, and
    every bad row (unreadable, or refused by the parser), in row order."""

    table: Table
    items: list[Item]
    bad: list[BadRow]


def read_input(
    args: argparse.Namespace,
    required: Sequence[str],
    parse: Callable[[int, Mapping], Item | str],
    command: str,
    *,
    added: Sequence[str] = (),
    when: str = "before scoring",
    writes_skipped: bool = False,
) -> InputRows[Item]:
    """Read ``--input`` (with ``--dataset-config`` and ``--split``); refuse an input without rows, a ``required`` field
    that no row has and an input column that the output would overwrite (``added``); parse every row with
    ``parse(index, row)`` (an item, or why the row gives none) and apply ``--on-bad-row`` to the bad rows
    ([`reasonflux_rl.tools.rows.handle_bad_rows`], which ``when`` and ``writes_skipped`` go to).

    All of it runs before any model loads: a bad row 50,000 fails in seconds, not after hours of scoring.

    Example:
    ```python
    >>> import argparse, tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.tools.pipeline import read_input
    >>> from reasonflux_rl.tools.rows import Fields, row_pair
    >>> path = Path(tempfile.mkdtemp()) / "in.jsonl"
    >>> _ = path.write_text('{"problem": "1+1?", "completion": "2"}\\n{"problem": "2+2?"}\\n')
    >>> args = argparse.Namespace(input=str(path), dataset_config=None, split="train", on_bad_row="skip")
    >>> parse = lambda index, row: row_pair(index, row, Fields())
    >>> rows = read_input(args, ["problem"], parse, "score")  # reports the bad row on stderr
    >>> rows.items, [str(b) for b in rows.bad]
    ([Pair(row=0, problem='1+1?', completion='2', source=None)], ["row 1 (line 2): missing 'completion'"])
    >>> _ = path.write_text("\\n")
    >>> read_input(args, ["problem"], parse, "score")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    reasonflux_rl.errors.ConfigError: --input '...in.jsonl' is empty: it has no rows

    ```
    """
    return parse_input(load_input(args), args, required, parse, command, added=added, when=when,
                       writes_skipped=writes_skipped)


def load_input(args: argparse.Namespace) -> Table:
    """The rows of ``--input`` (with ``--dataset-config`` and ``--split``), refused when there are none: the first
    half of [`read_input`], for a command that looks at the input's fields before it knows how to parse a row.

    Example:
    ```python
    >>> import argparse
    >>> from reasonflux_rl.tools.pipeline import load_input
    >>> args = argparse.Namespace(input="builtin:lab", dataset_config=None, split="test")
    >>> len(load_input(args).rows)
    46

    ```
    """
    table = load_rows(args.input, args.dataset_config, args.split)
    if not table.rows:
        # Said here: check_columns would call every field missing, and send the user looking for a typo.
        where = "" if Path(args.input).is_file() else f" in split {args.split!r}"
        raise ConfigError(f"--input {args.input!r} is empty: it has no rows{where}")
    return table


def parse_input(
    table: Table,
    args: argparse.Namespace,
    required: Sequence[str],
    parse: Callable[[int, Mapping], Item | str],
    command: str,
    *,
    added: Sequence[str] = (),
    when: str = "before scoring",
    writes_skipped: bool = False,
) -> InputRows[Item]:
    """The second half of [`read_input`]: check ``table``'s fields, parse its rows and apply ``--on-bad-row``.

    Example:
    ```python
    >>> import argparse
    >>> from reasonflux_rl.tools.pipeline import parse_input
    >>> from reasonflux_rl.tools.rows import Table
    >>> args = argparse.Namespace(on_bad_row="error")
    >>> parse_input(Table([{"a": 1}], []), args, ["a"], lambda index, row: row["a"], "score").items
    [1]

    ```
    """
    check_columns(table.rows, required, added)
    items, bad = table.split(parse)
    handle_bad_rows(bad, args.on_bad_row, when, command, writes_skipped=writes_skipped)
    return InputRows(table, items, bad)


@dataclass(frozen=True)
class Scored:
    """What [`score_stored`] gives: the store that holds the records, and every item's record by row."""

    store: ScoreStore
    records: dict[int, dict[str, Any]]


def score_stored(
    items: Sequence[Pair | BadRow],
    path: str | Path,
    settings: Mapping[str, Any],
    load: Callable[[], Scorer],
    args: argparse.Namespace,
    command: str,
    *,
    to_record: Callable[[Pair, Any], dict[str, Any]] | None = None,
    unit: str = "rows",
) -> Scored:
    """[`score_pairs`] into the [`ScoreStore`] at ``path`` made from ``settings`` and the items' [`fingerprint`],
    ``--chunk-size`` items per scorer call, with a progress bar unless ``--no-progress``.

    When scoring stops early (an error, a kill), a store that this run started and stored nothing in is deleted; a
    store that holds records stays, and stderr says how many of the items (``unit``) it holds and that running the
    same command again resumes after them.

    Example:
    ```python
    >>> import argparse, tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.prm.engine.results import StepScores
    >>> from reasonflux_rl.tools.pipeline import score_stored
    >>> from reasonflux_rl.tools.rows import Pair
    >>> class Constant:  # a stand-in PRM, as the tests use
    ...     kind = "constant"
    ...     def score(self, problems, completions):
    ...         return [StepScores([0.5], num_steps=1) for _ in completions]
    >>> def unloadable():
    ...     raise RuntimeError("no PRM here")
    >>> args = argparse.Namespace(chunk_size=256, no_progress=True)
    >>> path = Path(tempfile.mkdtemp()) / "scores.jsonl"
    >>> score_stored([Pair(0, "1+1?", "2")], path, {}, unloadable, args, "score")
    Traceback (most recent call last):
    ...
    RuntimeError: no PRM here
    >>> path.exists()
    False
    >>> scored = score_stored([Pair(0, "1+1?", "2")], path, {}, Constant, args, "score")
    >>> scored.records[0]["step_scores"], scored.store.stored, path.exists()
    ([0.5], 1, True)

    ```
    """
    store = ScoreStore(path, settings, fingerprint(items))
    try:
        records = score_pairs(items, load, store, chunk_size=args.chunk_size, progress=not args.no_progress,
                              to_record=to_record)
    except BaseException:
        _leave_store(store, len(items), command, unit)
        raise
    return Scored(store, records)


def _leave_store(store: ScoreStore, total: int, command: str, unit: str) -> None:
    # A store that refused this run (other settings or input) was never loaded: it is not this run's to touch.
    if store.loaded is None or store.discard_if_empty():
        return
    print(f"reasonflux-rl {command}: {store.stored} of {total} {unit} are stored in {store.path}; run the same "
          "command again to resume after them", file=sys.stderr)
