"""Group token rows into forward passes and lay them out as tensors: one code path for every PRM kind.

Rows are sorted longest first and cut into batches by a token budget, so a long trace does not make every short one
pad to its length. A batch is either *padded* (``[rows, longest]``; right padding by default, which causal attention
needs no mask for; left padding with a mask) or
*packed* (all rows end to end in one ``[1, total]`` row whose ``position_ids`` restart at 0 for each row and no
attention mask; transformers then keeps the rows apart: a block-diagonal causal mask for SDPA/eager, variable-length
kernels for flash-attention 2, where packing wastes no compute on padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

PaddingSide = Literal["right", "left"]
PADDING_SIDES: tuple[str, ...] = ("right", "left")


# What one more forward pass costs beyond its tokens (kernel launches, Python, a small batch's idle compute), in
# padded-token equivalents: a bucket split is worth it when it saves more padding than this. See
# PRMScorer.batch_overhead for the value used on each device.
BATCH_OVERHEAD_TOKENS = 256


def length_buckets(
    lengths: Sequence[int], batch_tokens: int, packed: bool = False, overhead: int = BATCH_OVERHEAD_TOKENS
) -> list[list[int]]:
    """Indices of the non-empty rows, longest first, cut into batches of at most ``batch_tokens`` tokens.

    A padded batch costs its longest row times its number of rows. Among the ways of cutting the length-sorted rows
    into batches within the budget, the one with the fewest padded tokens plus ``overhead`` per batch is taken
    (exact, by dynamic programming), so a long trace is not padded onto short ones just because the budget allows
    it. A packed batch has no padding: rows are added while the sum of lengths fits. A row longer than the budget
    gets a batch of its own.

    Example:
    ```python
    >>> from reasonflux_rl.prm.engine.batching import length_buckets
    >>> length_buckets([300, 2000, 0, 280, 310], batch_tokens=4096)
    [[1], [4, 0, 3]]
    >>> length_buckets([300, 310, 280], batch_tokens=600)
    [[1], [0, 2]]
    >>> length_buckets([3, 10, 0, 4, 2], batch_tokens=10, packed=True)
    [[1], [3, 0, 4]]

    ```
    """
    if batch_tokens <= 0:
        raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: -lengths[i])
    if packed:
        buckets: list[list[int]] = []
        total = 0
        for i in order:
            if buckets and total + lengths[i] <= batch_tokens:
                buckets[-1].append(i)
                total += lengths[i]
            else:
                buckets.append([i])
                total = lengths[i]
        return buckets
    # best[end]: cheapest cost of cutting order[:end]; a batch order[start:end] pads to order[start]'s length.
    width = [lengths[i] for i in order]
    best = [0] + [float("inf")] * len(order)
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end - 1, -1, -1):
            size = end - start
            if size > 1 and width[start] * size > batch_tokens:
                break  # widths grow as start moves left: every earlier start is over budget too
            cost = best[start] + width[start] * size + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    buckets = []
    end = len(order)
    while end:
        buckets.append(order[cut[end] : end])
        end = cut[end]
    return buckets[::-1]


@dataclass(frozen=True)
class Batch:
    """Tensors for one forward pass and where to read each row's outputs.

    Attributes:
        input_ids: ``[rows, width]`` (padded) or ``[1, total]`` (packed).
        attention_mask: ``[rows, width]`` for a left-padded batch; ``None`` for a right-padded one (causal attention
            already keeps real tokens from the padding after them) and for a packed one.
        position_ids: positions restarting at 0 at each row's first real token.
        read_index: flat indices into the ``[rows * width]`` (or ``[total]``) token axis of the positions to read.
        counts: how many of ``read_index`` belong to each row, in row order.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    position_ids: torch.Tensor
    read_index: torch.Tensor
    counts: list[int]


def build_batch(
    rows: Sequence[Sequence[int]],
    read_positions: Sequence[Sequence[int]],
    pad_id: int,
    padding_side: PaddingSide = "right",
    packed: bool = False,
) -> Batch:
    """Lay ``rows`` of token ids out as one batch; ``read_positions[j]`` are positions within row ``j`` to read.

    Example:
    ```python
    >>> from reasonflux_rl.prm.engine.batching import build_batch
    >>> b = build_batch([[5, 6, 7], [8]], [[2], [0]], pad_id=0, padding_side="left")
    >>> b.input_ids.tolist(), b.position_ids.tolist(), b.read_index.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[0, 1, 2], [0, 0, 0]], [2, 5])
    >>> p = build_batch([[5, 6, 7], [8]], [[2], [0]], pad_id=0, packed=True)
    >>> p.input_ids.tolist(), p.position_ids.tolist(), p.attention_mask, p.read_index.tolist()
    ([[5, 6, 7, 8]], [[0, 1, 2, 0]], None, [2, 3])

    ```
    """
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side={padding_side!r} is not one of {PADDING_SIDES}")
    lengths = [len(r) for r in rows]
    counts = [len(p) for p in read_positions]
    read: list[int] = []
    if packed:
        ids = [t for r in rows for t in r]
        positions = [k for n in lengths for k in range(n)]
        start = 0
        for n, wanted in zip(lengths, read_positions):
            read += [start + k for k in wanted]
            start += n
        return Batch(
            input_ids=torch.tensor([ids], dtype=torch.long),
            attention_mask=None,
            position_ids=torch.tensor([positions], dtype=torch.long),
            read_index=torch.tensor(read, dtype=torch.long),
            counts=counts,
        )
    width = max(lengths)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for j, (row, wanted) in enumerate(zip(rows, read_positions)):
        offset = width - len(row) if padding_side == "left" else 0
        input_ids[j, offset : offset + len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[j, offset : offset + len(row)] = 1
        # Explicit positions: with left padding the default (0..width-1) would shift every real token's position.
        position_ids[j, offset : offset + len(row)] = torch.arange(len(row))
        read += [j * width + offset + k for k in wanted]
    # Right padding needs no mask: under causal attention a real token never sees the padding after it (and padding
    # positions are never read). Without a mask SDPA takes its causal kernel instead of building a [seq, seq] mask:
    # faster on CPU and no quadratic memory for long rows.
    mask = attention_mask if padding_side == "left" else None
    return Batch(input_ids, mask, position_ids, torch.tensor(read, dtype=torch.long), counts)
