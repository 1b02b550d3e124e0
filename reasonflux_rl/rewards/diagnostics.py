"""What a policy that games its reward changes in its completions, read from their text: the signs of reward hacking
that the reward's own numbers do not show.

A policy that learns its PRM instead of the task writes completions of a new shape: longer ones that never close
the thinking or never box an answer, fewer self-corrections when the PRM punishes a ``Wait, ...``, more of them when
it rewards one. [`completion_shape`] reads one completion; the reward logs the batch's shares every step
(``reasonflux/correction_frac``, ``reasonflux/no_boxed_frac``; see [`shape_metrics`]), beside TRL's own
``completions/mean_length`` and ``completions/clipped_ratio`` and the PRM's ``reasonflux/steps_mean``,
``single_step_frac`` and ``no_step_frac``. Whether a finished run was hacked is [`~reasonflux_rl.train.verdict`]'s
rule, on the logged history.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from reasonflux_rl.trajectory import split_steps, split_trajectory

# How R1-style thinking opens a paragraph that takes back or re-checks what came before (DeepSeek-R1's "Wait",
# "Hmm", "Alternatively" are its most frequent; "No:" and "Wait," are the lab's).
SELF_CORRECTION = re.compile(
    r"^(?:but\s+)?(?:wait|hmm|hold on|oops|actually|no\b|let me (?:re-?check|double-check|check again|verify))",
    re.IGNORECASE,
)
BOXED = "\\boxed"


@dataclass(frozen=True)
class CompletionShape:
    """One completion's shape: its thinking paragraphs, how many of them open with a self-correction
    ([`SELF_CORRECTION`]), and whether its response boxes an answer (a thinking never closed has no response)."""

    thinking_paragraphs: int
    corrections: int
    boxed: bool


def completion_shape(completion: str, thinking_prefilled: bool = False) -> CompletionShape:
    r"""The shape of ``completion`` (``thinking_prefilled``: the prompt opened the thinking, so text without
    ``</think>`` is thinking cut off, as [`~reasonflux_rl.trajectory.split_trajectory`] reads it).

    Example:
    ```python
    >>> from reasonflux_rl.rewards.diagnostics import completion_shape
    >>> completion_shape("F(3) = 5\n\nWait, F(3) is 4.\n\nF(3) = 4\n</think>\n\n$\\boxed{4}$", thinking_prefilled=True)
    CompletionShape(thinking_paragraphs=3, corrections=1, boxed=True)
    >>> completion_shape("F(3) = 5\n\nNow G(5) = 1", thinking_prefilled=True)  # cut off inside its thinking
    CompletionShape(thinking_paragraphs=2, corrections=0, boxed=False)

    ```
    """
    trajectory = split_trajectory(completion, thinking_prefilled)
    paragraphs = split_steps(trajectory.thinking) if trajectory.thinking.strip() else []
    corrections = sum(bool(SELF_CORRECTION.match(paragraph.strip())) for paragraph in paragraphs)
    return CompletionShape(len(paragraphs), corrections, BOXED in trajectory.response)


def shape_metrics(shapes: Sequence[CompletionShape]) -> dict[str, float]:
    """A batch's shares: ``correction_frac`` (self-correcting paragraphs among all its thinking paragraphs; absent
    when there is no thinking) and ``no_boxed_frac`` (completions whose response boxes no answer).

    Example:
    ```python
    >>> from reasonflux_rl.rewards.diagnostics import CompletionShape, shape_metrics
    >>> shape_metrics([CompletionShape(3, 1, True), CompletionShape(1, 0, False)])
    {'no_boxed_frac': 0.5, 'correction_frac': 0.25}
    >>> shape_metrics([])
    {}

    ```
    """
    if not shapes:
        return {}
    metrics = {"no_boxed_frac": sum(not s.boxed for s in shapes) / len(shapes)}
    paragraphs = sum(s.thinking_paragraphs for s in shapes)
    if paragraphs:
        metrics["correction_frac"] = sum(s.corrections for s in shapes) / paragraphs
    return metrics
