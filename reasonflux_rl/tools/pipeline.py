"""Score (problem, completion) pairs with a PRM, a chunk at a time, with a progress bar, into a [`ScoreStore`]:
the loop of ``score``, ``select`` and ``bon``.

A pair's record holds what the PRM said (``step_scores``, ``trajectory_score``, the step and token counts), not an
aggregated score: that is [`record_reward`] of it with the aggregation and ``alpha`` of the run, so a cache stays
valid when only those change. A pair the PRM gives no usable score (no step scored, or a NaN or infinite value) has
an ``error`` in its record and no reward: it is a bad row, never ranked first or last by accident.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.rewards.formula import trajectory_reward
from reasonflux_rl.tools.rows import BadRow, Pair
from reasonflux_rl.tools.store import ScoreStore


class Scorer(Protocol):
    """What the commands need from a PRM: every kind ``reasonflux_rl.prm.load_scorer`` loads.

    ``score`` returns one result per pair, in input order, with the attributes of
    ``reasonflux_rl.prm.engine.results.StepScores``.

    Example:
    ```python
    >>> from reasonflux_rl.prm.engine.results import StepScores
    >>> class Constant:  # a stand-in PRM, as the tests use
    ...     def score(self, problems, completions):
    ...         return [StepScores([0.5], num_steps=1) for _ in completions]
    >>> Constant().score(["1+1?"], ["2"])[0].step_scores
    [0.5]

    ```
    """

    def score(self, problems: Sequence[str], completions: Sequence[str]) -> list[Any]: ...


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
