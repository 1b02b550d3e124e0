"""How much the score distributions of two or more sources overlap: the number ``select`` reports beside its figure
(the paper shows overlapping PRM score distributions of trajectories from different models)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

DEFAULT_BINS = 20


def histogram(
    values: Sequence[float], bins: int = DEFAULT_BINS, bounds: tuple[float, float] = (0.0, 1.0)
) -> list[float]:
    """The fraction of ``values`` in each of ``bins`` equal-width bins over ``bounds`` (left-closed, the last bin
    also closed on the right); every value must lie within ``bounds``.

    Example:
    ```python
    >>> from reasonflux_rl.tools.overlap import histogram
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
    >>> from reasonflux_rl.tools.overlap import overlap_coefficient
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
    >>> from reasonflux_rl.tools.overlap import source_overlap
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
    >>> from reasonflux_rl.tools.overlap import score_bounds
    >>> score_bounds([0.2, 0.7]), score_bounds([0.2, 1.4])
    ((0.0, 1.0), (0.0, 1.4))

    ```
    """
    return (min(0.0, *values), max(1.0, *values)) if values else (0.0, 1.0)


def source_overlap(groups: Mapping[str, Sequence[float]], bins: int = DEFAULT_BINS) -> Overlap:
    """The [`Overlap`] of the score distributions of two or more sources, on shared bins over [`score_bounds`].

    Example:
    ```python
    >>> from reasonflux_rl.tools.overlap import source_overlap
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
