"""Step-level credit: the PRM's step scores as token-level advantages for GRPO, the math in one place.

GRPO gives every token of a completion one advantage. With dense credit each token also gets a *process* advantage
from the steps at or after it, and the two are mixed as eq. 12 of the ReasonFlux-PRM paper mixes rewards:

``A[i, t] = (1 - beta) * A_outcome[i] + beta * A_process[i, t]``

- ``A_outcome`` is the outcome reward normalised in its group exactly as TRL's ``GRPOTrainer`` does it
  (``scale_rewards`` ``group``, ``batch`` or ``none``; a ``None`` outcome is left out of the statistics and gets 0).
- ``suffix_sum`` is DeepSeekMath's process supervision (arXiv 2402.03300, sec. 4.1.3): all step scores of the
  ``group_size`` completions of one prompt are normalised together, ``r~ = (s - mean) / (std + 1e-4)`` (unbiased
  std), and a token's process advantage is the sum of ``r~`` over the steps that end at or after it.
- ``soft_min`` is PURE's min-form credit (Cheng et al., arXiv 2504.15275): each completion's step scores are first
  re-weighted by a softmin over its steps, ``r*_k = softmax(-r / T)_k * r_k``, so that the return of its first
  token, ``sum_k r*_k``, tends to ``min_k r_k`` as ``T -> 0`` instead of growing with every good step. Adapting it to
  GRPO takes one choice: PURE subtracts an RLOO baseline from these returns; here the ``r*`` of a group are
  normalised and suffix-summed as in ``suffix_sum``, so the group plays the baseline's part, as in DeepSeekMath.
- Step transforms against reward hacking (Gao et al., arXiv 2410.15115, sec. 4), applied to the raw scores first:
  ``clip`` makes every step reward ``min(s - threshold, 0)`` (no step can add reward, so adding steps never pays);
  ``delta`` makes it ``s_k - s_{k+1}`` (the last step keeps ``s_K``), so the suffix sum from step ``k`` telescopes to
  ``s_k`` and a run of good steps is not summed up.

Tokens after the last scored step get no process advantage; the tokens of a step the PRM dropped (truncation) fall
under the next scored step's suffix.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CREDITS: tuple[str, ...] = ("sequence", "suffix_sum", "soft_min")
STEP_TRANSFORMS: tuple[str, ...] = ("none", "clip", "delta")
SCALE_REWARDS: tuple[str, ...] = ("group", "batch", "none")
# TRL's GRPOTrainer adds this to the standard deviation; the process part uses the same.
EPSILON = 1e-4


@dataclass(frozen=True)
class CreditOptions:
    """How the PRM's step scores reach the tokens: ``credit`` (``sequence`` is eq. 12 on one reward per completion,
    TRL's own advantages; ``suffix_sum`` and ``soft_min`` are dense) and its settings, see [`token_advantages`].

    Example:
    ```python
    >>> from reasonflux_rl.rewards.credit import CreditOptions
    >>> CreditOptions("soft_min", temperature=0.05).dense
    True
    >>> try:
    ...     CreditOptions("sequence", step_transform="clip")
    ... except ValueError as err:
    ...     print(err)
    prm_step_transform='clip' acts on dense credit only: set prm_credit to 'suffix_sum' or 'soft_min'

    ```
    """

    credit: str = "sequence"
    temperature: float = 0.1
    step_transform: str = "none"
    clip_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.credit not in CREDITS:
            raise ValueError(f"prm_credit={self.credit!r} is not allowed: choose one of {list(CREDITS)}")
        if self.step_transform not in STEP_TRANSFORMS:
            raise ValueError(
                f"prm_step_transform={self.step_transform!r} is not allowed: choose one of {list(STEP_TRANSFORMS)}"
            )
        if not self.temperature > 0:
            raise ValueError(f"prm_credit_temperature={self.temperature} must be positive")
        if self.step_transform != "none" and not self.dense:
            raise ValueError(
                f"prm_step_transform={self.step_transform!r} acts on dense credit only: set prm_credit to "
                "'suffix_sum' or 'soft_min'"
            )

    @property
    def dense(self) -> bool:
        """Whether each token gets its own advantage (any credit but ``sequence``)."""
        return self.credit != "sequence"


def outcome_advantages(outcome: Sequence[float | None], group_size: int, scale_rewards: str = "group") -> list[float]:
    """The group-normalised outcome, as TRL's ``GRPOTrainer`` computes advantages from one reward function.

    ``(o - group mean) / (std + 1e-4)``, with the unbiased std of the group (``scale_rewards="group"``), of the whole
    batch (``"batch"``), or no scaling (``"none"``). A ``None`` outcome (unscorable) is left out of means and stds
    and gets advantage 0, as TRL does with an all-``None`` row.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.credit import outcome_advantages
    >>> [round(a, 4) for a in outcome_advantages([1.0, 0.0, 0.0, 0.0], group_size=2)]
    [0.707, -0.707, 0.0, 0.0]
    >>> outcome_advantages([1.0, 0.0, None, 1.0], group_size=2, scale_rewards="none")
    [0.5, -0.5, 0.0, 0.0]

    ```
    """
    _check_groups(len(outcome), group_size)
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards={scale_rewards!r} is not one of {SCALE_REWARDS}")
    batch_std = _std([o for o in outcome if o is not None])
    out: list[float] = []
    for start in range(0, len(outcome), group_size):
        group = outcome[start : start + group_size]
        present = [o for o in group if o is not None]
        mean = statistics.fmean(present) if present else 0.0
        std = {"group": _std(present) if group_size > 1 else 0.0, "batch": batch_std, "none": None}[scale_rewards]
        for o in group:
            if o is None or (std is not None and math.isnan(std)):
                out.append(0.0)
            else:
                out.append((o - mean) if std is None else (o - mean) / (std + EPSILON))
    return out


def transform_steps(
    step_scores: Sequence[float], step_transform: str = "none", clip_threshold: float = 0.5
) -> list[float]:
    """One completion's step scores after a transform of Gao et al. (arXiv 2410.15115): ``clip`` or ``delta``.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.credit import transform_steps
    >>> transform_steps([0.9, 0.25, 0.75], "clip")
    [0.0, -0.25, 0.0]
    >>> transform_steps([0.9, 0.25, 0.75], "delta")
    [0.65, -0.5, 0.75]

    ```
    """
    if step_transform not in STEP_TRANSFORMS:
        raise ValueError(f"step_transform={step_transform!r} is not one of {STEP_TRANSFORMS}")
    scores = list(step_scores)
    if step_transform == "clip":
        return [min(s - clip_threshold, 0.0) for s in scores]
    if step_transform == "delta":
        return [a - b for a, b in zip(scores, scores[1:])] + scores[-1:]
    return scores


def soft_min_weighted(step_scores: Sequence[float], temperature: float = 0.1) -> list[float]:
    """PURE's transformed process rewards: ``softmax(-r / T)_k * r_k``; their sum tends to ``min(r)`` as ``T -> 0``.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.credit import soft_min_weighted
    >>> round(sum(soft_min_weighted([0.9, 0.1, 0.8], temperature=0.01)), 6)
    0.1
    >>> soft_min_weighted([0.5, 0.5])
    [0.25, 0.25]

    ```
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be positive")
    if not step_scores:
        return []
    low = min(step_scores)
    # Shifted by the minimum so that exp never overflows however small the temperature.
    weights = [math.exp(-(s - low) / temperature) for s in step_scores]
    total = math.fsum(weights)
    return [w / total * s for w, s in zip(weights, step_scores)]


def token_advantages(
    outcome: Sequence[float | None],
    step_scores: Sequence[Sequence[float]],
    step_ends: Sequence[Sequence[int]],
    lengths: Sequence[int],
    group_size: int,
    beta: float,
    credit: str = "suffix_sum",
    temperature: float = 0.1,
    *,
    scale_rewards: str = "group",
    step_transform: str = "none",
    clip_threshold: float = 0.5,
) -> list[list[float]]:
    """One advantage per completion token: ``(1 - beta) * A_outcome[i] + beta * A_process[i, t]``.

    Args:
        outcome: one outcome reward per completion (``None``: unscorable), groups of ``group_size`` in a row.
        step_scores: the raw PRM scores of each completion's scored steps, in step order.
        step_ends: for each scored step, the index of its last completion token.
        lengths: the number of completion tokens of each completion.
        group_size: completions per prompt (TRL's ``num_generations``).
        beta: weight of the process advantage, in [0, 1]; 0 gives TRL's own advantages.
        credit: ``suffix_sum`` (DeepSeekMath) or ``soft_min`` (PURE), see the module docstring.
        temperature: the softmin temperature of ``soft_min``.
        scale_rewards: how TRL scales the outcome advantage (``group``, ``batch``, ``none``).
        step_transform: ``none``, ``clip`` or ``delta`` (Gao et al.), applied to the raw step scores first.
        clip_threshold: the threshold of ``clip``.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.credit import token_advantages
    >>> # One prompt, two completions of 4 tokens: both right; the first has a bad second step (tokens 2-3).
    >>> advantages = token_advantages(outcome=[1.0, 1.0], step_scores=[[0.9, 0.1], [0.9, 0.9]],
    ...                               step_ends=[[1, 3], [1, 3]], lengths=[4, 4], group_size=2, beta=0.5)
    >>> [[round(a, 3) for a in row] for row in advantages]
    [[-0.5, -0.5, -0.75, -0.75], [0.5, 0.5, 0.25, 0.25]]

    ```
    """
    rows = len(outcome)
    if not (len(step_scores) == len(step_ends) == len(lengths) == rows):
        raise ValueError(
            f"got {rows} outcomes, {len(step_scores)} step score lists, {len(step_ends)} step end lists and "
            f"{len(lengths)} lengths: one of each per completion"
        )
    if credit not in CREDITS[1:]:
        raise ValueError(
            f"credit={credit!r} is not a dense credit ({list(CREDITS[1:])}); 'sequence' is TRL's own advantage of "
            "the mixed reward"
        )
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must be in [0, 1]")
    for i, (scores, ends, length) in enumerate(zip(step_scores, step_ends, lengths)):
        _check_steps(i, scores, ends, length)
    outcome_part = outcome_advantages(outcome, group_size, scale_rewards)
    rewards = [transform_steps(s, step_transform, clip_threshold) for s in step_scores]
    if credit == "soft_min":
        rewards = [soft_min_weighted(r, temperature) for r in rewards]
    normalised = _normalise_in_groups(rewards, group_size)
    process_part = [_suffix_sums(r, ends, length) for r, ends, length in zip(normalised, step_ends, lengths)]
    return mix_advantages(outcome_part, process_part, beta)


def mix_advantages(outcome: Sequence[float], process: Sequence[Sequence[float]], beta: float) -> list[list[float]]:
    """``(1 - beta) * outcome[i] + beta * process[i][t]``: eq. 12 of the paper on advantages.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.credit import mix_advantages
    >>> mix_advantages([1.0, -1.0], [[0.5, 0.0], [-0.5]], beta=0.25)
    [[0.875, 0.75], [-0.875]]

    ```
    """
    return [[(1.0 - beta) * a + beta * p for p in row] for a, row in zip(outcome, process)]


def _check_groups(rows: int, group_size: int) -> None:
    if group_size < 1 or rows % group_size:
        raise ValueError(f"{rows} completions do not make whole groups of group_size={group_size}")


def _check_steps(row: int, scores: Sequence[float], ends: Sequence[int], length: int) -> None:
    if len(scores) != len(ends):
        raise ValueError(f"completion {row}: {len(scores)} step scores but {len(ends)} step ends")
    if any(not 0 <= e < length for e in ends) or any(b < a for a, b in zip(ends, ends[1:])):
        raise ValueError(
            f"completion {row}: step ends {list(ends)} must be non-decreasing token indices below its length {length}"
        )
    if any(not math.isfinite(s) for s in scores):
        raise ValueError(f"completion {row}: step scores must be finite, got {list(scores)}")


def _std(values: Sequence[float]) -> float:
    """Unbiased standard deviation, NaN below two values (as ``torch.std``)."""
    return statistics.stdev(values) if len(values) > 1 else math.nan


def _normalise_in_groups(rewards: list[list[float]], group_size: int) -> list[list[float]]:
    _check_groups(len(rewards), group_size)
    out: list[list[float]] = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        pooled = [r for row in group for r in row]
        if len(pooled) < 2:
            # One step in the whole group: nothing to compare it with.
            out += [[0.0] * len(row) for row in group]
            continue
        mean, std = statistics.fmean(pooled), statistics.stdev(pooled)
        out += [[(r - mean) / (std + EPSILON) for r in row] for row in group]
    return out


def _suffix_sums(step_rewards: list[float], ends: Sequence[int], length: int) -> list[float]:
    """Per token, the sum of the rewards of the steps that end at or after it (0 after the last step)."""
    ending_at = [0.0] * length
    for reward, end in zip(step_rewards, ends):
        ending_at[end] += reward
    out = [0.0] * length
    running = 0.0
    for t in range(length - 1, -1, -1):
        running += ending_at[t]
        out[t] = running
    return out
