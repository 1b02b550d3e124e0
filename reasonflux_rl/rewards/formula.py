"""The paper's reward in pure functions: step scores -> trajectory score (aggregate, eq. 11) -> normalised over a
group or batch -> mixed with the outcome (eq. 12 of the ReasonFlux-PRM paper, arXiv 2506.18896):

``r = (1 - beta) * r_outcome + beta * normalise(r_prm)``.

``None`` stands for "no score" everywhere (an unparseable reference, a completion the PRM could not score); it is
never turned into 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from reasonflux_rl.prm.options import AGGREGATIONS

Score = float | None
NORMALISATIONS: tuple[str, ...] = ("none", "group_zscore", "group_minmax", "group_rank", "batch_zscore")


def aggregate(step_scores: list[float], method: str = "mean") -> float | None:
    """Aggregate step probabilities into one trajectory score; ``None`` when there is no step to aggregate.

    ``mean`` is the paper's ``(1/T) * sum_t r_t``; ``min`` is the weakest step; ``last`` the final step;
    ``geometric_mean`` the T-th root of the product (a soft ``min``).

    Example:
    ```python
    >>> from reasonflux_rl.rewards.formula import aggregate
    >>> [aggregate([0.75, 0.25, 0.5], m) for m in ("mean", "min", "last")]
    [0.5, 0.25, 0.5]
    >>> round(aggregate([0.25, 1.0], "geometric_mean"), 6), aggregate([], "mean")
    (0.5, None)

    ```
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"aggregation={method!r} is not one of {AGGREGATIONS}")
    if not step_scores:
        return None
    if method == "mean":
        return math.fsum(step_scores) / len(step_scores)
    if method == "min":
        return min(step_scores)
    if method == "last":
        return step_scores[-1]
    return math.exp(math.fsum(math.log(max(s, 1e-12)) for s in step_scores) / len(step_scores))


def trajectory_reward(
    step_scores: list[float], trajectory_score: float | None = None, method: str = "mean", alpha: float | None = None
) -> float | None:
    """The PRM reward of one trajectory: the aggregated step scores, plus ``alpha`` times a trajectory-level score.

    This is eq. 11 of the ReasonFlux-PRM paper, ``r_hat = (1/T) * sum_t r_t + alpha * r_final``, when the PRM gives
    both step scores and a trajectory score (``r_final``, e.g. a value head's, see
    [`~reasonflux_rl.prm.kinds.combined.WithTrajectoryScore`]); the sum then lies in ``[0, 1 + alpha]``. With ``alpha``
    unset (or 0) the trajectory term is left out. A PRM that gives only a trajectory score (the value head alone)
    is rewarded with that score, unscaled: with a single term, ``alpha`` would only rescale what ``prm_beta`` and the
    normalisation already weigh. ``None`` when there is nothing to score.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.formula import trajectory_reward
    >>> trajectory_reward([0.5, 1.0], 0.8), trajectory_reward([0.5, 1.0], 0.8, alpha=0.5)
    (0.75, 1.15)
    >>> trajectory_reward([], 0.8, alpha=0.5), trajectory_reward([], None)
    (0.8, None)

    ```
    """
    if alpha is not None and alpha < 0:
        raise ValueError(f"alpha={alpha} must be >= 0")
    steps = aggregate(step_scores, method)
    if steps is None:
        return trajectory_score
    if trajectory_score is None or not alpha:
        return steps
    return steps + alpha * trajectory_score


def _zscore(values: list[Score]) -> list[Score]:
    present = [v for v in values if v is not None]
    mean = statistics.fmean(present) if present else 0.0
    # Unbiased std as TRL's group advantages use; a constant group carries no signal and maps to 0.
    std = statistics.stdev(present) if len(present) > 1 else 0.0
    if std < 1e-8:
        return [None if v is None else 0.0 for v in values]
    return [None if v is None else (v - mean) / std for v in values]


def _minmax(values: list[Score]) -> list[Score]:
    present = [v for v in values if v is not None]
    low, high = (min(present), max(present)) if present else (0.0, 0.0)
    if high - low < 1e-8:
        return [None if v is None else 0.5 for v in values]
    return [None if v is None else (v - low) / (high - low) for v in values]


def _rank(values: list[Score]) -> list[Score]:
    present = sorted(v for v in values if v is not None)
    if len(present) < 2:
        return [None if v is None else 0.5 for v in values]
    out: list[Score] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        below = sum(1 for p in present if p < v)
        ties = sum(1 for p in present if p == v)
        # Tied scores share the mean of their ranks, so equal scores get equal rewards.
        out.append((below + (ties - 1) / 2) / (len(present) - 1))
    return out


def normalise(scores: Sequence[Score], method: str = "none", group_size: int | None = None) -> list[Score]:
    """Normalise a full batch of trajectory scores (``None`` = no score, kept as ``None``).

    ``group_*`` methods treat each run of ``group_size`` consecutive scores as one prompt's group; a group whose
    scores are all equal maps to 0 (z-score) or 0.5 (min-max, rank) rather than dividing by zero.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.formula import normalise
    >>> normalise([0.2, 0.4, 0.9, 0.9], "group_minmax", group_size=2)
    [0.0, 1.0, 0.5, 0.5]
    >>> normalise([0.1, 0.3, 0.2, None], "group_rank", group_size=4)
    [0.0, 1.0, 0.5, None]
    >>> normalise([1.0, 3.0], "batch_zscore")
    [-0.7071067811865475, 0.7071067811865475]

    ```
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"normalisation={method!r} is not one of {list(NORMALISATIONS)}")
    values = list(scores)
    if method == "none":
        return values
    if method == "batch_zscore":
        return _zscore(values)
    if not group_size or len(values) % group_size:
        raise ValueError(
            f"{method} needs the batch ({len(values)} scores) to be whole groups of num_generations={group_size}"
        )
    transform = {"group_zscore": _zscore, "group_minmax": _minmax, "group_rank": _rank}[method]
    out: list[Score] = []
    for start in range(0, len(values), group_size):
        out += transform(values[start : start + group_size])
    return out


def mix(outcome: Sequence[Score], prm: Sequence[Score], beta: float) -> list[Score]:
    """``(1 - beta) * outcome + beta * prm`` per row; a missing part contributes nothing, both missing gives None.

    This is what TRL computes for two reward functions with ``reward_weights=[1 - beta, beta]`` (a ``None`` reward is
    NaN and ``nansum`` skips it), so the one-callable and two-callable set-ups agree row for row.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.formula import mix
    >>> mix([1.0, 0.0, None, None], [0.5, 0.5, 0.5, None], beta=0.75)
    [0.625, 0.375, 0.375, None]

    ```
    """
    if len(outcome) != len(prm):
        raise ValueError(f"got {len(outcome)} outcome rewards but {len(prm)} PRM scores")
    out: list[Score] = []
    for o, p in zip(outcome, prm):
        if o is None and p is None:
            out.append(None)
        else:
            out.append((0.0 if o is None else (1.0 - beta) * o) + (0.0 if p is None else beta * p))
    return out
