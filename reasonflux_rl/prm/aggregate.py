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
    >>> from reasonflux_rl.prm.aggregate import aggregate
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
