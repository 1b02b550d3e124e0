"""Beta over training: a constant, or a schedule over optimizer steps read from TRL's ``trainer_state``."""

from __future__ import annotations

import math

SCHEDULES: tuple[str, ...] = ("constant", "linear_warmup", "linear_decay", "cosine")


def beta_at(schedule: str, beta: float, step: int, total_steps: int | None) -> float:
    """The mixing weight at optimizer step ``step`` of ``total_steps``.

    ``linear_warmup`` rises from 0 to ``beta`` over ``total_steps`` and stays there; ``linear_decay`` falls from
    ``beta`` to 0; ``cosine`` falls from ``beta`` to 0 along a half cosine. Past ``total_steps`` a schedule holds its
    end value.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.schedule import beta_at
    >>> [beta_at("linear_warmup", 0.5, s, 4) for s in range(6)]
    [0.0, 0.125, 0.25, 0.375, 0.5, 0.5]
    >>> [round(beta_at("cosine", 1.0, s, 2), 6) for s in range(3)], beta_at("constant", 0.75, 10, None)
    ([1.0, 0.5, 0.0], 0.75)

    ```
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"beta schedule {schedule!r} is not one of {list(SCHEDULES)}")
    if schedule == "constant":
        return beta
    if not total_steps or total_steps < 1:
        raise ValueError(f"beta schedule {schedule!r} needs a positive number of steps, got {total_steps}")
    progress = min(max(step, 0) / total_steps, 1.0)
    if schedule == "linear_warmup":
        return beta * progress
    if schedule == "linear_decay":
        return beta * (1.0 - progress)
    return beta * 0.5 * (1.0 + math.cos(math.pi * progress))
