"""Reduce a trajectory's step scores to one trajectory score."""

from __future__ import annotations

import math

AGGREGATIONS: tuple[str, ...] = ("mean", "min", "last", "geometric_mean")


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
