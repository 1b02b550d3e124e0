"""What a finished run says: a one-line verdict from its logged metrics, and its learning curve as a PNG.

Read from ``trainer_state.json``'s ``log_history`` (TRL logs one entry per step and one per evaluation): held-out
accuracy is the outcome reward's ``eval_outcome/accuracy`` (sampled completions of the evaluation split, judged by
math-verify), the training curve ``outcome/accuracy`` and ``reasonflux/prm_outcome_corr``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVAL_ACCURACY = "eval_outcome/accuracy"
TRAIN_ACCURACY = "outcome/accuracy"
CORRELATION = "reasonflux/prm_outcome_corr"
PRM_MEAN = "reasonflux/prm_mean"
BETA = "reasonflux/beta"
# The hacking rule's margins: a PRM mean rise and a held-out accuracy fall both beyond what 376 sampled held-out
# answers (the R1-style lab's evaluation) and a batch of 64 completions move by chance.
HACK_PRM_RISE = 0.05
HACK_ACCURACY_FALL = 0.03


@dataclass(frozen=True)
class Safety:
    """Whether a run was hacked or collapsed, by [`safety`]'s rules, with the numbers they read."""

    hacked: bool
    collapsed: bool
    prm_mean_start: float | None
    prm_mean_end: float | None
    accuracy_start: float | None
    accuracy_end: float | None


def curve(log_history: Sequence[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every log entry that has ``key``.

    Example:
    ```python
    >>> from reasonflux_rl.train.verdict import curve
    >>> curve([{"step": 0, "eval_outcome/accuracy": 0.3}, {"step": 1, "loss": 0.1},
    ...        {"step": 10, "eval_outcome/accuracy": 0.5}], "eval_outcome/accuracy")
    [(0, 0.3), (10, 0.5)]

    ```
    """
    return [(int(entry.get("step", 0)), float(entry[key])) for entry in log_history if key in entry]


def duration(seconds: float) -> str:
    """A run's wall time as the verdict lines write it.

    Example:
    ```python
    >>> from reasonflux_rl.train.verdict import duration
    >>> duration(250), duration(5.4)
    ('4m10s', '0m05s')

    ```
    """
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def verdict(log_history: Sequence[dict[str, Any]], seconds: float, resumed_at: int | None = None) -> str:
    """One line on what the run did: held-out accuracy before and after, the steps and time, the mean
    PRM-outcome correlation of the training batches, and a warning when [`safety`] finds the reward hacked. A
    resumed run reads its whole history (the checkpoint brought the steps before it); its time is this job's, from
    step ``resumed_at``.

    Example:
    ```python
    >>> from reasonflux_rl.train.verdict import verdict
    >>> history = [{"step": 0, "eval_outcome/accuracy": 0.31}, {"step": 1, "reasonflux/prm_outcome_corr": 0.6},
    ...            {"step": 2, "reasonflux/prm_outcome_corr": 0.64}, {"step": 2, "eval_outcome/accuracy": 0.58}]
    >>> verdict(history, 250)
    'held-out accuracy 31% -> 58% in 2 steps (4m10s); PRM-outcome correlation 0.62'
    >>> verdict([{"step": 3, "loss": 0.1}], 5)
    'trained 3 steps (0m05s); no held-out evaluation (set eval_strategy); no PRM-outcome correlation logged'
    >>> verdict(history, 100, resumed_at=1).split(";")[0]
    'held-out accuracy 31% -> 58% in 2 steps (1m40s from step 1)'
    >>> hacked = [{"step": 0, "eval_outcome/accuracy": 0.2}, {"step": 1, "reasonflux/prm_mean": 0.6},
    ...           {"step": 3, "reasonflux/prm_mean": 0.9}, {"step": 3, "eval_outcome/accuracy": 0.1}]
    >>> verdict(hacked, 60).split("; ")[-1]
    'WARNING: reward hacked (PRM mean 0.60 -> 0.90 while held-out accuracy fell: docs/reward.md#reward-hacking)'

    ```
    """
    took = duration(seconds) + (f" from step {resumed_at}" if resumed_at else "")
    held_out = curve(log_history, EVAL_ACCURACY)
    steps = max((int(entry.get("step", 0)) for entry in log_history), default=0)
    if len(held_out) >= 2:
        head = f"held-out accuracy {held_out[0][1]:.0%} -> {held_out[-1][1]:.0%} in {steps} steps ({took})"
    else:
        head = f"trained {steps} steps ({took}); no held-out evaluation (set eval_strategy)"
    correlations = [value for _, value in curve(log_history, CORRELATION)]
    tail = (f"PRM-outcome correlation {statistics.fmean(correlations):.2f}" if correlations
            else "no PRM-outcome correlation logged")
    line = f"{head}; {tail}"
    checked = safety(log_history)
    if checked.hacked:
        line += (f"; WARNING: reward hacked (PRM mean {checked.prm_mean_start:.2f} -> {checked.prm_mean_end:.2f} "
                 "while held-out accuracy fell: docs/reward.md#reward-hacking)")
    return line


def _last_third(points: list[tuple[int, float]], last_step: int) -> list[float]:
    cut = last_step - last_step / 3
    return [value for step, value in points if step >= cut]


def safety(log_history: Sequence[dict[str, Any]]) -> Safety:
    """Whether the run's reward was hacked, or its held-out accuracy collapsed.

    - ``collapsed``: every held-out evaluation of the last third of training is below the first one (before
      training);
    - ``hacked``: the PRM's mean score of the training batches rose (its mean over the last third of the steps
      against its mean over the first tenth, by at least ``HACK_PRM_RISE``) while held-out accuracy fell (its mean
      over the last third's evaluations below the first evaluation by at least ``HACK_ACCURACY_FALL``): the policy
      learned what the PRM likes, not the task.

    A run whose reward never mixed the PRM in (``reasonflux/beta`` logged 0 throughout, or no PRM mean logged) is
    never ``hacked``; without two evaluations it is neither.

    Example:
    ```python
    >>> from reasonflux_rl.train.verdict import safety
    >>> history = [{"step": 0, "eval_outcome/accuracy": 0.10}]
    >>> history += [{"step": s, "reasonflux/prm_mean": 0.6 + 0.003 * s} for s in range(1, 101)]
    >>> history += [{"step": s, "eval_outcome/accuracy": a} for s, a in ((50, 0.06), (80, 0.02), (100, 0.0))]
    >>> s = safety(history)
    >>> s.hacked, s.collapsed, round(s.prm_mean_start, 3), round(s.prm_mean_end, 3), s.accuracy_end
    (True, True, 0.617, 0.85, 0.01)

    ```
    """
    held_out = curve(log_history, EVAL_ACCURACY)
    prm = curve(log_history, PRM_MEAN)
    last_step = max((int(entry.get("step", 0)) for entry in log_history), default=0)
    if len(held_out) < 2 or last_step == 0:
        return Safety(False, False, None, None, None, None)
    start, late = held_out[0][1], _last_third(held_out[1:], last_step) or [held_out[-1][1]]
    accuracy_end = statistics.fmean(late)
    collapsed = all(value < start for value in late)
    betas = [value for _, value in curve(log_history, BETA)]
    if not prm or (betas and not any(betas)):
        return Safety(False, collapsed, None, None, start, accuracy_end)
    first = [value for step, value in prm if step <= max(1, last_step / 10)] or [prm[0][1]]
    prm_start, prm_end = statistics.fmean(first), statistics.fmean(_last_third(prm, last_step) or [prm[-1][1]])
    hacked = prm_end - prm_start >= HACK_PRM_RISE and start - accuracy_end >= HACK_ACCURACY_FALL
    return Safety(hacked, collapsed, prm_start, prm_end, start, accuracy_end)


def plot_learning_curve(log_history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Held-out and training accuracy against the optimizer step, as a PNG at ``path``; ``None`` (nothing written)
    without matplotlib (``pip install "reasonflux-rl[plots]"``) or without anything to plot.

    Example:
    ```python
    >>> import tempfile, pathlib
    >>> from reasonflux_rl.train.verdict import plot_learning_curve
    >>> history = [{"step": 0, "eval_outcome/accuracy": 0.3}, {"step": 1, "outcome/accuracy": 0.4},
    ...            {"step": 2, "eval_outcome/accuracy": 0.5}]
    >>> out = plot_learning_curve(history, pathlib.Path(tempfile.mkdtemp()) / "curve.png")
    >>> out.read_bytes()[:4]
    b'\\x89PNG'

    ```
    """
    held_out, training = curve(log_history, EVAL_ACCURACY), curve(log_history, TRAIN_ACCURACY)
    if not held_out and not training:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axis = plt.subplots(figsize=(6, 3.6), dpi=120)
    if training:
        axis.plot(*zip(*training), color="#9ab", linewidth=1, label="training batches")
    if held_out:
        axis.plot(*zip(*held_out), color="#c33", marker="o", linewidth=2, label="held-out problems")
    axis.set(xlabel="optimizer step", ylabel="accuracy (sampled, T=1)", ylim=(0, 1), title=title)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path
