"""What a PRM says about one trajectory: the record every scorer kind returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class StepScores:
    """The PRM's verdict on one trajectory.

    Attributes:
        step_scores: P(step is good) for each scored step, in step order. With the default ``drop_oldest``
            truncation these are the *last* ``len(step_scores)`` steps of the trajectory; ``step_indices`` says which
            steps they are in every case.
        num_steps: how many steps the trajectory has.
        dropped_steps: how many of its steps got no score because they did not fit ``max_length``.
        step_indices: the index (in ``0..num_steps-1``) of the step each score belongs to; empty when no step was
            scored.
        trajectory_score: one score for the whole trajectory, from kinds that give one (the value head), else
            ``None``.
        num_tokens: for kinds that read raw text (the value head), how many tokens the full input has.
        dropped_tokens: how many of those tokens were cut to fit ``max_length``.
        step_spans: the ``(start, end)`` character span in the completion of each scored step, aligned with
            ``step_scores``: where dense credit puts each step's score on the policy's tokens.

    Example:
    ```python
    >>> from reasonflux_rl.prm.engine.results import StepScores
    >>> StepScores([0.5, 0.25], num_steps=4, dropped_steps=2, step_indices=[2, 3]).dropped_fraction
    0.5
    >>> StepScores(trajectory_score=0.9, num_tokens=4000, dropped_tokens=1000).dropped_fraction
    0.25

    ```
    """

    step_scores: list[float] = field(default_factory=list)
    num_steps: int = 0
    dropped_steps: int = 0
    step_indices: list[int] = field(default_factory=list)
    trajectory_score: float | None = None
    num_tokens: int = 0
    dropped_tokens: int = 0
    step_spans: list[tuple[int, int]] = field(default_factory=list)

    @property
    def dropped_fraction(self) -> float:
        """Fraction of the steps that were not scored; for a kind without steps (the value head), of the tokens.

        0 for a trajectory without steps or tokens.
        """
        if self.num_steps:
            return self.dropped_steps / self.num_steps
        return self.dropped_tokens / self.num_tokens if self.num_tokens else 0.0


class Scorer(Protocol):
    """What every PRM scorer offers, local or remote: ``score(problems, completions)`` in input order."""

    kind: str

    def score(self, problems: Sequence[str], completions: Sequence[str]) -> list[StepScores]:
        """One [`StepScores`] per (problem, completion) pair."""
        ...
