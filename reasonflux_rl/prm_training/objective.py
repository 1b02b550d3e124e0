"""The training objective of a trajectory-aware PRM (ReasonFlux-PRM, arXiv 2506.18896), for one batch of rows:

    loss(row) = lambda_step * mean over the row's targeted steps of L(R(step t), r_step_t)
              + lambda_final * L(R(x, y), r_final)

R(step t) is P(label 1) of the 2-label step head at step t's tag, r the targets. L is the squared error of the
probability (``mse``, the paper's MSE) or the binary cross-entropy of it (``bce``, Math-Shepherd's and Qwen's
practice); a step without a target (``NaN``) and a row without a trajectory target add nothing.

Where R(x, y), the trajectory score, is read is not public; it is an option (``trajectory_read``):

- ``last_step`` (default): the head at the last step tag, where the PRM has read the whole trajectory and response
  (what ``prm_aggregation: last`` reads at RL time);
- ``mean``: the mean of the row's step scores (what ``prm_aggregation: mean``, the paper's eq. 11 aggregate, reads).

A batch's loss is the sum of its rows' losses; the trainer divides by the rows of the whole optimizer step, so every
row weighs the same whatever batch, accumulation step or rank it landed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSSES: tuple[str, ...] = ("mse", "bce")
TRAJECTORY_READS: tuple[str, ...] = ("last_step", "mean")


@dataclass(frozen=True)
class Objective:
    """The objective's settings: ``loss`` (one of [`LOSSES`]), ``lambda_step``, ``lambda_final`` and where the
    trajectory score is read (``trajectory_read``, one of [`TRAJECTORY_READS`]).

    Example:
    ```python
    >>> import math, torch
    >>> from reasonflux_rl.prm_training.objective import Objective
    >>> logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])  # P(right) = 0.5, then 0.75
    >>> batch = {"read_row": torch.tensor([0, 0]), "scored": torch.tensor([True, True]),
    ...          "step_targets": torch.tensor([1.0, float("nan")]), "trajectory_target": torch.tensor([0.0])}
    >>> Objective().row_losses(logits, batch)  # (0.5 - 1)^2, plus (0.75 - 0)^2 at the last step tag
    tensor([0.8125])
    >>> Objective(lambda_final=0.0, trajectory_read="mean").row_losses(logits, batch)
    tensor([0.2500])

    ```
    """

    loss: str = "mse"
    lambda_step: float = 1.0
    lambda_final: float = 1.0
    trajectory_read: str = "last_step"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} is not one of {LOSSES}")
        if self.trajectory_read not in TRAJECTORY_READS:
            raise ValueError(f"trajectory_read={self.trajectory_read!r} is not one of {TRAJECTORY_READS}")
        if self.lambda_step < 0 or self.lambda_final < 0 or self.lambda_step + self.lambda_final == 0:
            raise ValueError(f"lambda_step={self.lambda_step} and lambda_final={self.lambda_final} must be >= 0, "
                             "and not both 0")

    def row_losses(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each row's loss (``[rows]``) from the step head's ``logits`` at the batch's reads (``[reads, 2]``)."""
        log_p = torch.log_softmax(logits.float(), dim=-1)
        rows = batch["trajectory_target"].shape[0]
        read_row = batch["read_row"]
        targets = batch["step_targets"]
        has_target = batch["scored"] & ~torch.isnan(targets)
        step_loss = self._loss(log_p, torch.nan_to_num(targets)) * has_target
        counts = torch.zeros(rows, device=logits.device).index_add_(0, read_row, has_target.float())
        sums = torch.zeros(rows, device=logits.device).index_add_(0, read_row, step_loss)
        per_row = self.lambda_step * sums / counts.clamp(min=1)
        final = batch["trajectory_target"]
        has_final = ~torch.isnan(final)
        if self.lambda_final and bool(has_final.any()):
            per_row = per_row + self.lambda_final * self._trajectory_loss(log_p, batch, torch.nan_to_num(final)) * has_final
        return per_row

    def trajectory_scores(self, probabilities: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each row's trajectory score R(x, y) (``[rows]``) from the step probabilities at its reads.

        Example:
        ```python
        >>> import torch
        >>> from reasonflux_rl.prm_training.objective import Objective
        >>> batch = {"read_row": torch.tensor([0, 0, 1]), "scored": torch.tensor([True, True, True]),
        ...          "trajectory_target": torch.tensor([1.0, 0.0])}
        >>> p = torch.tensor([0.25, 0.75, 0.5])
        >>> Objective().trajectory_scores(p, batch).tolist(), Objective(trajectory_read="mean").trajectory_scores(
        ...     p, batch).tolist()
        ([0.75, 0.5], [0.5, 0.5])

        ```
        """
        read_row, scored = batch["read_row"], batch["scored"].float()
        rows = batch["trajectory_target"].shape[0]
        if self.trajectory_read == "mean":
            sums = torch.zeros(rows, device=probabilities.device).index_add_(0, read_row, probabilities * scored)
            return sums / torch.zeros(rows, device=probabilities.device).index_add_(0, read_row, scored).clamp(min=1)
        return probabilities[_last_read(read_row, rows)]

    def _loss(self, log_p: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """L per read, from the head's log-probabilities ``[n, 2]`` and targets in [0, 1]."""
        if self.loss == "mse":
            return (log_p[:, 1].exp() - targets) ** 2
        return -(targets * log_p[:, 1] + (1 - targets) * log_p[:, 0])

    def _trajectory_loss(self, log_p: torch.Tensor, batch: dict[str, torch.Tensor], targets: torch.Tensor
                         ) -> torch.Tensor:
        rows = targets.shape[0]
        if self.trajectory_read == "last_step":
            return self._loss(log_p[_last_read(batch["read_row"], rows)], targets)
        score = self.trajectory_scores(log_p[:, 1].exp(), batch)
        if self.loss == "mse":
            return (score - targets) ** 2
        score = score.clamp(1e-6, 1 - 1e-6)
        return -(targets * score.log() + (1 - targets) * (1 - score).log())


def _last_read(read_row: torch.Tensor, rows: int) -> torch.Tensor:
    """The flat index of each row's last read (reads are in row order)."""
    counts = torch.zeros(rows, dtype=torch.long, device=read_row.device).index_add_(
        0, read_row, torch.ones_like(read_row))
    return counts.cumsum(0) - 1
