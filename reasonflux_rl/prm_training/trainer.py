"""``PRMTrainer``: transformers' ``Trainer`` with the trajectory-aware objective, batches by a token budget and a
held-out evaluation of the step scores.

What it changes in ``Trainer``, each through a method ``Trainer`` documents for overriding:

- ``get_train_dataloader`` / ``get_eval_dataloader``: [`~reasonflux_rl.prm_training.encoding.TokenBudgetBatchSampler`]
  batches (accelerate shards them over the ranks);
- ``get_batch_samples``: counts the rows of the whole optimizer step (all accumulation steps, all ranks), so that
  ``compute_loss`` can weigh every row the same: a 2-process run equals a 1-process run accumulating the same
  batches;
- ``compute_loss``: the model's step head at the reads, then [`~reasonflux_rl.prm_training.objective.Objective`];
- ``evaluate``: the held-out step accuracy, recall on wrong steps, AUROC and the overlap of good and bad
  trajectories' scores ([`~reasonflux_rl.prm_training.metrics`]), logged as ``eval_*`` like any Trainer metric
  (so W&B, ``trainer_state.json`` and ``metric_for_best_model`` see them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import gather_object
from torch.utils.data import DataLoader
from transformers import Trainer

from reasonflux_rl.prm_training.encoding import RowCollator, TokenBudgetBatchSampler, TrainingRow
from reasonflux_rl.prm_training.metrics import finite, step_metrics, trajectory_metrics
from reasonflux_rl.prm_training.objective import Objective

_MODEL_INPUTS = ("input_ids", "position_ids", "read_index")


@dataclass(frozen=True)
class Predictions:
    """What the PRM says on held-out rows, by example: the score of each step it scores (``steps[example][k]`` for
    step ``k``), and the trajectory score where the objective reads it."""

    steps: dict[int, dict[int, float]]
    trajectory: dict[int, float]


class PRMTrainer(Trainer):
    """``Trainer`` for a step-classifier PRM on [`~reasonflux_rl.prm_training.encoding.TrainingRow`] datasets.

    ``objective`` is the loss; ``batch_tokens`` the padded tokens of a batch on one device (training and
    evaluation), ``pool_batches`` how many batches' worth of rows are sorted by length together (see
    [`~reasonflux_rl.prm_training.encoding.TokenBudgetBatchSampler`]); the tokenizer (``processing_class``) gives
    the pad id. ``per_device_train_batch_size`` is not used:
    a batch holds as many rows as ``batch_tokens`` allows.

    Example:
    ```python
    >>> import tempfile
    >>> from transformers import TrainingArguments
    >>> from reasonflux_rl.prm.kinds.step_classifier import StepScorer
    >>> from reasonflux_rl.prm_training.encoding import encode_pair
    >>> from reasonflux_rl.prm_training.fields import LabelledPair
    >>> from reasonflux_rl.prm_training.objective import Objective
    >>> from reasonflux_rl.prm_training.trainer import PRMTrainer
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> scorer = StepScorer.from_pretrained(write_tiny_models(tempfile.mkdtemp()).prm)
    >>> pair = LabelledPair(0, "1+1?", "Add.\\n</think>\\n\\n2", steps=("Add.", "2"), step_targets=(1.0, 0.0))
    >>> rows = encode_pair(scorer, pair)[0] * 4
    >>> args = TrainingArguments(tempfile.mkdtemp(), max_steps=2, use_cpu=True, report_to="none",
    ...                          learning_rate=1e-2, save_strategy="no", disable_tqdm=True)
    >>> trainer = PRMTrainer(model=scorer.model, args=args, train_dataset=rows, eval_dataset=rows,
    ...                      processing_class=scorer.tokenizer, objective=Objective(), batch_tokens=64)
    >>> trainer.train().global_step, sorted(trainer.evaluate())[:3]  # doctest: +ELLIPSIS
    {...}
    (2, ['epoch', 'eval_loss', 'eval_runtime'])

    ```
    """

    # compute_loss divides by the rows of the whole optimizer step (see get_batch_samples).
    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, objective: Objective, batch_tokens: int, pool_batches: int = 16,
                 **kwargs: Any) -> None:
        tokenizer = kwargs.get("processing_class")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        kwargs.setdefault("data_collator", RowCollator(pad_id))
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.batch_tokens = batch_tokens
        self.pool_batches = pool_batches

    def _row_dataloader(self, rows: Sequence[TrainingRow], shuffle: bool) -> DataLoader:
        sampler = TokenBudgetBatchSampler([len(r.input_ids) for r in rows], self.batch_tokens, shuffle=shuffle,
                                          seed=self.args.seed, pool_batches=self.pool_batches)
        loader = DataLoader(rows, batch_sampler=sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def get_train_dataloader(self) -> DataLoader:
        """Token-budget batches of the training rows, their order shuffled each epoch."""
        return self._row_dataloader(self.train_dataset, shuffle=True)

    def get_eval_dataloader(self, eval_dataset: Any = None) -> DataLoader:
        """Token-budget batches of the evaluation rows, longest first."""
        return self._row_dataloader(self.eval_dataset if eval_dataset is None else eval_dataset, shuffle=False)

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """The optimizer step's batches, and how many rows they hold on all ranks together."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        rows = torch.tensor(sum(b["trajectory_target"].shape[0] for b in batches), device=device)
        if self.args.world_size > 1:
            rows = self.accelerator.gather(rows).sum()
        return batches, rows

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """The objective's row losses, summed and divided by the optimizer step's rows (times the ranks, whose
        gradients DDP and DeepSpeed average); without a row count (evaluation), their mean."""
        logits = model(**{name: inputs[name] for name in _MODEL_INPUTS})
        per_row = self.objective.row_losses(logits, inputs)
        if num_items_in_batch is None:
            loss = per_row.mean()
        else:
            loss = per_row.sum() / num_items_in_batch * self.accelerator.num_processes
        return (loss, logits) if return_outputs else loss

    def predict_rows(self, eval_dataset: Any = None) -> tuple[Predictions, list[dict[str, Any]], float]:
        """The PRM's scores on ``eval_dataset`` (default: the evaluation rows) by example, every rank's rows
        gathered; also each row's records (step scores and targets) and the mean loss per row."""
        model = self.model_wrapped if self.model_wrapped is not None else self.model
        model.eval()
        records: list[dict[str, Any]] = []
        with torch.no_grad():
            for batch in self.get_eval_dataloader(eval_dataset):
                batch = self._prepare_inputs(batch)
                logits = model(**{name: batch[name] for name in _MODEL_INPUTS})
                losses = self.objective.row_losses(logits, batch)
                probabilities = torch.softmax(logits.float(), dim=-1)[:, 1]
                records += _row_records(batch, probabilities, self.objective.trajectory_scores(probabilities, batch),
                                        losses)
        # A rank can repeat a batch to even out the shards: keep each (example, first step) once.
        unique = {(r["example"], r["steps"][0] if r["steps"] else -1): r for r in gather_object(records)}
        rows = list(unique.values())
        predictions = Predictions({}, {})
        for row in rows:
            predictions.steps.setdefault(row["example"], {}).update(zip(row["steps"], row["scores"]))
            if row["trajectory_score"] is not None:
                predictions.trajectory[row["example"]] = row["trajectory_score"]
        loss = sum(r["loss"] for r in rows) / max(len(rows), 1)
        return predictions, rows, loss

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """Held-out loss, step accuracy at 0.5, recall on wrong steps, step AUROC, the overlap of the mean step
        scores of good and bad trajectories and the trajectory accuracy, logged with ``metric_key_prefix``."""
        start = time.time()
        predictions, rows, loss = self.predict_rows(eval_dataset)
        metrics = {"loss": loss, **held_out_metrics(predictions, rows), "runtime": round(time.time() - start, 4)}
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in finite(metrics).items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def _row_records(batch: dict[str, torch.Tensor], probabilities: torch.Tensor, trajectory: torch.Tensor,
                 losses: torch.Tensor) -> list[dict[str, Any]]:
    """Per row of a batch: its example, the steps it scores with their scores and targets, its trajectory score and
    target (``None`` where it holds none) and its loss: plain Python, to gather across ranks."""
    records = []
    read_row, scored = batch["read_row"].tolist(), batch["scored"].tolist()
    steps, targets, scores = batch["step_index"].tolist(), batch["step_targets"].tolist(), probabilities.tolist()
    finals = batch["trajectory_target"].tolist()
    for j, example in enumerate(batch["example"].tolist()):
        mine = [k for k, row in enumerate(read_row) if row == j and scored[k]]
        records.append({
            "example": example,
            "steps": [steps[k] for k in mine],
            "scores": [scores[k] for k in mine],
            "targets": [targets[k] for k in mine],
            "trajectory_score": None if math.isnan(finals[j]) else trajectory[j].item(),
            "trajectory_target": None if math.isnan(finals[j]) else finals[j],
            "loss": losses[j].item(),
        })
    return records


def held_out_metrics(predictions: Predictions, rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """[`~reasonflux_rl.prm_training.metrics.step_metrics`] over every targeted step and
    [`~reasonflux_rl.prm_training.metrics.trajectory_metrics`] over every trajectory with a target (its mean step
    score from every row that scores its steps)."""
    pairs = [(s, t) for row in rows for s, t in zip(row["scores"], row["targets"]) if not math.isnan(t)]
    finals = {row["example"]: row["trajectory_target"] for row in rows if row["trajectory_target"] is not None}
    examples = sorted(finals)
    means = [sum(predictions.steps[e].values()) / len(predictions.steps[e]) for e in examples]
    return {
        **step_metrics([s for s, _ in pairs], [t for _, t in pairs]),
        **trajectory_metrics(means, [predictions.trajectory[e] for e in examples], [finals[e] for e in examples]),
    }
