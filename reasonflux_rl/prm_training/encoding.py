"""Labelled pairs made ready for the trainer: token rows by the scorer's own encoding, batches of similar length by
a token budget, and the tensors of one batch.

A PRM reads at scoring time exactly what it was trained on, because a training row *is* what
[`~reasonflux_rl.prm.kinds.step_classifier.StepScorer.encode`] gives for the pair: its chat template, its step split
and step tags, its truncation of a trajectory longer than the context (the steps a row holds only as context get no
target, as they get no score). Batches are cut from the length-sorted rows by the scorer's own rule
([`~reasonflux_rl.prm.engine.batching.length_buckets`]): at most ``batch_tokens`` padded tokens, the fewest padded
tokens plus a fixed cost per batch, so a long trace does not make every short one pad to its length.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler

from reasonflux_rl.prm.engine.batching import build_batch, length_buckets
from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.prm_training.fields import LabelledPair

NO_TARGET = math.nan


@dataclass(frozen=True)
class TrainingRow:
    """One token row of one labelled pair.

    Attributes:
        input_ids: the row as the scorer encodes it.
        reads: the position of each step tag in the row, in step order.
        step_index: the step (of the pair) each read belongs to.
        scored: whether the row scores that step (``False``: a context step of a window, scored in another row).
        step_targets: the target of each read (``NaN``: none).
        trajectory_target: the pair's trajectory target on the row that holds its last step (``NaN`` elsewhere, or
            when the pair has none).
        example: the pair's input row index.
    """

    input_ids: list[int]
    reads: list[int]
    step_index: list[int]
    scored: list[bool]
    step_targets: list[float]
    trajectory_target: float
    example: int


def _target(value: float | None) -> float:
    return NO_TARGET if value is None else float(value)


def encode_pair(scorer: StepScorer, pair: LabelledPair) -> tuple[list[TrainingRow], int]:
    """The training rows of ``pair`` as ``scorer`` encodes it, and how many of its steps no row scores (dropped by
    the truncation; they get no target).

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm.kinds.step_classifier import StepScorer
    >>> from reasonflux_rl.prm_training.encoding import encode_pair
    >>> from reasonflux_rl.prm_training.fields import LabelledPair
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> scorer = StepScorer.from_pretrained(write_tiny_models(tempfile.mkdtemp()).prm)
    >>> pair = LabelledPair(7, "1+1?", "Add.\\n</think>\\n\\n2", steps=("Add.", "2"), step_targets=(1.0, None),
    ...                     trajectory_target=1.0)
    >>> [row], dropped = encode_pair(scorer, pair)
    >>> row.step_targets[0], row.step_targets[1], row.trajectory_target, row.example, dropped
    (1.0, nan, 1.0, 7, 0)
    >>> [row.input_ids[k] for k in row.reads] == [scorer.tag_id] * 2
    True

    ```
    """
    encoded = scorer.encode(pair.problem, pair.completion)
    targets = pair.step_targets or (None,) * encoded.result.num_steps
    if encoded.result.num_steps != len(targets):
        raise ValueError(f"row {pair.row}: the scorer reads {encoded.result.num_steps} steps, the targets are for "
                         f"{len(targets)}")
    last = encoded.result.num_steps - 1
    rows = []
    for ids, reads, steps in zip(encoded.rows, encoded.reads, encoded.steps):
        # A row reads its context steps first, then the steps it scores (the last len(steps) reads).
        first = steps.start - (len(reads) - len(steps))
        indices = list(range(first, steps.stop))
        holds_last = steps.stop - 1 == last
        rows.append(TrainingRow(
            input_ids=list(ids),
            reads=list(reads),
            step_index=indices,
            scored=[k in steps for k in indices],
            step_targets=[_target(targets[k]) if k in steps else NO_TARGET for k in indices],
            trajectory_target=_target(pair.trajectory_target) if holds_last else NO_TARGET,
            example=pair.row,
        ))
    return rows, encoded.result.dropped_steps


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batches of row indices, each at most ``batch_tokens`` padded tokens (a longer row alone), of rows of similar
    length.

    Each epoch (``set_epoch``; the trainer sets it) shuffles the rows (``seed`` + epoch: the same on every rank),
    cuts them into pools of about ``pool_batches`` batches' worth of rows, cuts each pool, sorted by length, by
    [`~reasonflux_rl.prm.engine.batching.length_buckets`], and shuffles the batches. A pool is what trades padding
    for variety: sorting the whole data (fairseq's batches) pads least but puts the same rows of one length together
    every epoch, which kept the lab's PRM on its 50/50 plateau (docs/prm-training.md); ``pool_batches=1`` batches
    rows in their shuffled order. ``shuffle=False`` (evaluation) sorts every row, longest first.

    Under accelerate each rank takes every ``world_size``-th batch, so a step of ``world_size`` processes trains on
    the same batches as one process accumulating ``world_size`` of them.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.encoding import TokenBudgetBatchSampler
    >>> sampler = TokenBudgetBatchSampler([10, 300, 12, 290, 11], batch_tokens=600, shuffle=False)
    >>> list(sampler), len(sampler)
    ([[1, 3], [2, 4, 0]], 2)
    >>> sampler = TokenBudgetBatchSampler([10, 300, 12, 290, 11] * 20, batch_tokens=600, seed=1)
    >>> sampler.set_epoch(3)
    >>> batches = list(sampler)
    >>> sorted(k for b in batches for k in b) == list(range(100)), max(max(300 if k % 5 in (1, 3) else 12 for k in b)
    ...                                                               * len(b) for b in batches) <= 600
    (True, True)

    ```
    """

    def __init__(self, lengths: Sequence[int], batch_tokens: int, *, shuffle: bool = True, seed: int = 0,
                 pool_batches: int = 16) -> None:
        if batch_tokens < 1 or pool_batches < 1:
            raise ValueError(f"batch_tokens={batch_tokens} and pool_batches={pool_batches} must be positive")
        self.lengths = list(lengths)
        self.batch_tokens = batch_tokens
        self.shuffle = shuffle
        self.seed = seed
        mean = sum(self.lengths) / max(len(self.lengths), 1)
        self.pool_rows = max(1, round(pool_batches * batch_tokens / max(mean, 1)))
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Plan the batches of ``epoch``."""
        self.epoch = epoch
        if not self.shuffle:
            self.batches = length_buckets(self.lengths, self.batch_tokens)
            return
        rng = random.Random(f"{self.seed}-{epoch}")
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), self.pool_rows):
            pool = order[start : start + self.pool_rows]
            # length_buckets sorts with a stable sort: the shuffle above breaks ties between equal lengths.
            batches += [[pool[k] for k in bucket] for bucket in length_buckets([self.lengths[i] for i in pool],
                                                                                self.batch_tokens)]
        rng.shuffle(batches)
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def collate_rows(rows: Sequence[TrainingRow], pad_id: int) -> dict[str, torch.Tensor]:
    """The tensors of one batch: right-padded rows with explicit positions (as the scorer batches them), the flat
    index of every read, and per read its row, whether it is scored and its target; per row its trajectory target
    and its example.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.encoding import TrainingRow, collate_rows
    >>> a = TrainingRow([5, 6, 9], [2], [0], [True], [1.0], 1.0, example=0)
    >>> b = TrainingRow([7, 9, 8, 9], [1, 3], [0, 1], [True, True], [0.0, float("nan")], float("nan"), example=1)
    >>> batch = collate_rows([a, b], pad_id=0)
    >>> batch["input_ids"].tolist(), batch["read_index"].tolist(), batch["read_row"].tolist()
    ([[5, 6, 9, 0], [7, 9, 8, 9]], [2, 5, 7], [0, 1, 1])

    ```
    """
    batch = build_batch([r.input_ids for r in rows], [r.reads for r in rows], pad_id, "right")
    return {
        "input_ids": batch.input_ids,
        "position_ids": batch.position_ids,
        "read_index": batch.read_index,
        "read_row": torch.tensor([j for j, r in enumerate(rows) for _ in r.reads], dtype=torch.long),
        "scored": torch.tensor([s for r in rows for s in r.scored], dtype=torch.bool),
        "step_targets": torch.tensor([t for r in rows for t in r.step_targets], dtype=torch.float32),
        "step_index": torch.tensor([k for r in rows for k in r.step_index], dtype=torch.long),
        "trajectory_target": torch.tensor([r.trajectory_target for r in rows], dtype=torch.float32),
        "example": torch.tensor([r.example for r in rows], dtype=torch.long),
    }


class RowCollator:
    """[`collate_rows`] with the tokenizer's pad id, as the trainer's ``data_collator`` (picklable, for
    dataloader workers).

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.encoding import RowCollator, TrainingRow
    >>> RowCollator(pad_id=0)([TrainingRow([5, 9], [1], [0], [True], [1.0], 1.0, 0)])["step_targets"].tolist()
    [1.0]

    ```
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: Sequence[TrainingRow]) -> dict[str, torch.Tensor]:
        return collate_rows(rows, self.pad_id)
