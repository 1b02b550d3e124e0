"""What to do with a trajectory whose formatted input is longer than the PRM's context.

Two policies, for the kinds that score steps (step classifier, token-logit):

- ``drop_oldest`` (default): drop the fewest oldest steps (thinking first) until the rest fits; the dropped steps get
  no score. One forward row per trajectory, the same input the model card describes for a shorter trajectory.
- ``windows``: score the steps in consecutive windows, each formatted as a full input (the problem, then a run of
  steps). A window after the first starts with the step just before the ones it scores, and more preceding steps up
  to about ``overlap`` tokens, as context (fewer when they would not fit beside the next step); a context step's
  score is the one from the window that scored it, so every step's score comes from exactly one window. Only a step
  too long to fit with the problem alone is dropped.

Both work on a function ``length_of(start, end)``: the token length of the input made of ``steps[start:end]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

TRUNCATIONS: tuple[str, ...] = ("drop_oldest", "windows")

LengthOf = Callable[[int, int], int]


def drop_oldest(num_steps: int, length_of: LengthOf, max_length: int) -> int:
    """How many of the oldest steps to drop so that ``steps[dropped:]`` fits ``max_length`` (``num_steps``: none fits).

    Binary search, since tokenising every candidate would be quadratic in the trajectory length.

    Example:
    ```python
    >>> from reasonflux_rl.prm.engine.truncation import drop_oldest
    >>> step_tokens = [5, 5, 5, 5]
    >>> length_of = lambda start, end: 10 + sum(step_tokens[start:end])
    >>> drop_oldest(4, length_of, max_length=30), drop_oldest(4, length_of, 100), drop_oldest(4, length_of, 12)
    (0, 0, 4)
    >>> drop_oldest(4, length_of, max_length=21)
    2

    ```
    """
    if length_of(0, num_steps) <= max_length:
        return 0
    low, high = 1, num_steps
    while low < high:
        mid = (low + high) // 2
        if length_of(mid, num_steps) <= max_length:
            high = mid
        else:
            low = mid + 1
    # `high` only ever moves to a count that fits, so `low == num_steps` means that not even the last step fits.
    return low


@dataclass(frozen=True)
class Window:
    """One forward row of the ``windows`` policy: it holds ``steps[context:end]`` and scores ``steps[first:end]``."""

    context: int
    first: int
    end: int


def plan_windows(
    num_steps: int, length_of: LengthOf, max_length: int, overlap: int, step_tokens: Sequence[int]
) -> tuple[list[Window], list[int]]:
    """Windows that score every step that can fit at all, each exactly once, and the steps that cannot.

    ``step_tokens[i]`` estimates step ``i``'s token count (used only to choose how many context steps make up about
    ``overlap`` tokens beyond the first one); every window is checked with ``length_of``, so each fits
    ``max_length``.

    Example:
    ```python
    >>> from reasonflux_rl.prm.engine.truncation import plan_windows
    >>> step_tokens = [4, 4, 4, 4, 4, 30, 4]
    >>> length_of = lambda start, end: 10 + sum(step_tokens[start:end])
    >>> windows, dropped = plan_windows(7, length_of, max_length=22, overlap=4, step_tokens=step_tokens)
    >>> [(w.context, w.first, w.end) for w in windows], dropped
    ([(0, 0, 3), (2, 3, 5), (6, 6, 7)], [5])

    ```
    """
    windows: list[Window] = []
    dropped: list[int] = []
    first = 0
    while first < num_steps:
        context = first
        budget = overlap
        # At least the step just before (if it fits at all), then more while they fit in the overlap budget.
        while context > 0 and context - 1 not in dropped and (context == first or step_tokens[context - 1] <= budget):
            budget -= step_tokens[context - 1]
            context -= 1
        # The estimate may be off: shrink the context until the first new step fits beside it.
        while context < first and length_of(context, first + 1) > max_length:
            context = (context + first + 1) // 2
        if length_of(context, first + 1) > max_length:
            dropped.append(first)
            first += 1
            continue
        low, high = first + 1, num_steps
        while low < high:
            mid = (low + high + 1) // 2
            if length_of(context, mid) <= max_length:
                low = mid
            else:
                high = mid - 1
        windows.append(Window(context, first, low))
        first = low
    return windows, dropped
