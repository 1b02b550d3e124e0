"""Step scores from one PRM and a trajectory score from another, for the ``alpha`` term of eq. 11.

No released checkpoint gives both: ReasonFlux-PRM-7B scores steps, ReasonFlux-PRM-1.5B scores whole trajectories.
[`WithTrajectoryScore`] runs both over the same pairs so that
[`~reasonflux_rl.rewards.formula.trajectory_reward`] can add ``alpha * r_final`` to the step mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from reasonflux_rl.prm.engine.base import PRMScorer
from reasonflux_rl.prm.engine.results import StepScores


class WithTrajectoryScore:
    """Scores with ``steps`` (a step kind), then sets each result's ``trajectory_score`` from ``trajectory``.

    The token counts of the trajectory scorer's input come along (``num_tokens``, ``dropped_tokens``); the step
    counts and ``dropped_fraction`` stay the step scorer's.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.tiny import write_tiny_models, write_tiny_value_head
    >>> from reasonflux_rl.prm import load_scorer
    >>> from reasonflux_rl.prm.kinds.combined import WithTrajectoryScore
    >>> both = WithTrajectoryScore(load_scorer(write_tiny_models(tempfile.mkdtemp()).prm),
    ...                            load_scorer(write_tiny_value_head(tempfile.mkdtemp())))
    >>> [r] = both.score(["1+1?"], ["1+1=2.\\n\\nSo 2."])
    >>> len(r.step_scores), r.trajectory_score is not None, both.kind
    (2, True, 'step_classifier+value_head')

    ```
    """

    def __init__(self, steps: PRMScorer, trajectory: PRMScorer) -> None:
        self.steps = steps
        self.trajectory = trajectory
        self.kind = f"{steps.kind}+{trajectory.kind}"

    def score(self, problems: Sequence[str], completions: Sequence[str]) -> list[StepScores]:
        """Both scorers' results merged per pair, in input order."""
        return [
            replace(s, trajectory_score=t.trajectory_score, num_tokens=t.num_tokens, dropped_tokens=t.dropped_tokens)
            for s, t in zip(self.steps.score(problems, completions), self.trajectory.score(problems, completions))
        ]
