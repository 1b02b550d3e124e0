"""How well a PRM's scores match held-out targets: what ``prm train`` evaluates during training and the lab reports.

A step is *right* when its target is at least 0.5 and *said right* when its score is; a trajectory is good when its
trajectory target is at least 0.5. The overlap of the score distributions of good and bad trajectories is the
paper's diagnostic (its figure of PRM scores of trajectories): each trajectory's score is the mean of its step
scores, what ``prm_aggregation: mean`` gives at RL time, and the overlap is
[`~reasonflux_rl.tools.overlap.overlap_coefficient`] of the two histograms (1: indistinguishable, 0: apart).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from reasonflux_rl.tools.overlap import overlap_coefficient

RIGHT = 0.5


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """The area under the ROC curve of ``scores`` for telling ``positive`` items from the others (the chance that a
    random positive scores above a random negative, ties counting half); ``None`` without both kinds.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.metrics import auroc
    >>> auroc([0.9, 0.8, 0.3, 0.1], [True, True, False, False]), auroc([0.5, 0.5], [True, False])
    (1.0, 0.5)
    >>> auroc([0.2, 0.9, 0.4], [True, False, False]), auroc([0.3], [True])
    (0.0, None)

    ```
    """
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    positives = sum(positive)
    negatives = len(positive) - positives
    if not positives or not negatives:
        return None
    rank_sum = sum(rank for rank, is_positive in zip(ranks, positive) if is_positive)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def step_metrics(scores: Sequence[float], targets: Sequence[float]) -> dict[str, float | None]:
    """Over the steps with a target: ``step_accuracy`` (said right == right), ``wrong_step_recall`` (wrong steps said
    wrong; ``None`` without wrong steps), ``step_auroc`` and the ``wrong_step_share``.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.metrics import step_metrics
    >>> step_metrics([0.9, 0.2, 0.7, 0.6], [1.0, 0.0, 0.0, 1.0])
    {'step_accuracy': 0.75, 'wrong_step_recall': 0.5, 'step_auroc': 0.75, 'wrong_step_share': 0.5}

    ```
    """
    if not scores:
        return {"step_accuracy": None, "wrong_step_recall": None, "step_auroc": None, "wrong_step_share": None}
    right = [t >= RIGHT for t in targets]
    said = [s >= RIGHT for s in scores]
    wrong = [not s for s, r in zip(said, right) if not r]
    return {
        "step_accuracy": sum(s == r for s, r in zip(said, right)) / len(right),
        "wrong_step_recall": sum(wrong) / len(wrong) if wrong else None,
        "step_auroc": auroc(scores, right),
        "wrong_step_share": len(wrong) / len(right),
    }


def trajectory_metrics(mean_scores: Sequence[float], read_scores: Sequence[float],
                       targets: Sequence[float]) -> dict[str, float | None]:
    """Over the trajectories with a target: ``trajectory_overlap`` of the mean step scores of good and bad ones
    (``None`` without both), and ``trajectory_accuracy`` of the trajectory score where it is read (``read_scores``).

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.metrics import trajectory_metrics
    >>> trajectory_metrics([0.9, 0.8, 0.1], [0.9, 0.4, 0.2], [1.0, 1.0, 0.0])
    {'trajectory_overlap': 0.0, 'trajectory_accuracy': 0.6666666666666666}

    ```
    """
    good = [s for s, t in zip(mean_scores, targets) if t >= RIGHT]
    bad = [s for s, t in zip(mean_scores, targets) if t < RIGHT]
    return {
        "trajectory_overlap": overlap_coefficient(good, bad) if good and bad else None,
        "trajectory_accuracy": (sum((s >= RIGHT) == (t >= RIGHT) for s, t in zip(read_scores, targets)) / len(targets)
                                if targets else None),
    }


def finite(values: dict[str, float | None]) -> dict[str, float]:
    """The metrics that have a value (``None`` and NaN left out), for a logger that wants numbers.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.metrics import finite
    >>> finite({"a": 0.5, "b": None, "c": float("nan")})
    {'a': 0.5}

    ```
    """
    return {key: value for key, value in values.items() if value is not None and math.isfinite(value)}
