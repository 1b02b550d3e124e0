"""The scoring loop every PRM kind shares: encode, batch by a token budget, one forward, read, reassemble.

A kind says three things: how a (problem, completion) pair becomes token rows and the positions each row is read at
([`PRMScorer.encode`]), how a last-layer hidden state there becomes a probability ([`PRMScorer.head`]) and how a
row's probabilities become a [`StepScores`] ([`PRMScorer.finish`]). Batching, padding or packing, the backbone call
and putting results back in input order are here, once.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from reasonflux_rl.prm.checkpoint import CheckpointInfo, inspect_checkpoint
from reasonflux_rl.prm.engine.batching import (
    BATCH_OVERHEAD_TOKENS,
    PADDING_SIDES,
    Batch,
    PaddingSide,
    build_batch,
    length_buckets,
)
from reasonflux_rl.prm.engine.format import PARTS, Parts
from reasonflux_rl.prm.engine.results import StepScores
from reasonflux_rl.prm.placement.zero3 import agree_passes, load_partitioned, shard

# Padded tokens per forward pass when none is given. An accelerator needs large batches to be busy; on CPU a batch
# past a few thousand tokens leaves the caches and runs slower per token (benchmarks/prm_scoring.py --sweep).
DEFAULT_BATCH_TOKENS = 16384
DEFAULT_CPU_BATCH_TOKENS = 4096
# What one more forward pass costs, in padded tokens (see length_buckets). A pass has a fixed cost in time
# (launching every layer's kernels, a small batch's idle compute); in tokens that is the time over the time per token,
# so it shrinks as the model grows. On an H200 one more pass cost about what 3e12 parameter-tokens cost: 1.5B
# scored fastest with ~2000 tokens, 7B with ~250 (benchmarks/results/gpu-h200-*.json, ``ours_by_batch_overhead``).
# On CPU the cost is flat and small.
PASS_COST_PARAMETER_TOKENS = 3e12
BATCH_OVERHEAD_RANGE = (256, 4096)
DEFAULT_CPU_BATCH_OVERHEAD = BATCH_OVERHEAD_TOKENS
ATTENTION_AUTO = "auto"


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"`` is bf16 on an accelerator and fp32 on CPU; strings like ``"bfloat16"`` name a torch dtype.

    Example:
    ```python
    >>> import torch
    >>> from reasonflux_rl.prm.engine.base import resolve_dtype
    >>> resolve_dtype("auto", torch.device("cpu")), resolve_dtype("bfloat16", torch.device("cpu"))
    (torch.float32, torch.bfloat16)

    ```
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype={dtype!r} is not a torch dtype name (e.g. 'bfloat16', 'float32', 'auto')")
    return resolved


def default_batch_tokens(device: torch.device) -> int:
    """The token budget per forward pass used when none is given: 16384 on an accelerator, 4096 on CPU.

    Example:
    ```python
    >>> import torch
    >>> from reasonflux_rl.prm.engine.base import default_batch_tokens
    >>> default_batch_tokens(torch.device("cpu")), default_batch_tokens(torch.device("cuda"))
    (4096, 16384)

    ```
    """
    return DEFAULT_CPU_BATCH_TOKENS if device.type == "cpu" else DEFAULT_BATCH_TOKENS


def default_batch_overhead(device: torch.device, num_parameters: int) -> int:
    """What one more forward pass of a model of ``num_parameters`` costs in padded tokens, when length buckets are
    cut (see [`~reasonflux_rl.prm.engine.batching.length_buckets`]): on an accelerator 3e12 parameter-tokens, within
    [256, 4096]; 256 on CPU.

    Example:
    ```python
    >>> import torch
    >>> from reasonflux_rl.prm.engine.base import default_batch_overhead
    >>> [default_batch_overhead(torch.device("cuda"), n) for n in (1.5e9, 7.6e9, 72e9)]
    [2000, 395, 256]
    >>> default_batch_overhead(torch.device("cpu"), 7e9)
    256

    ```
    """
    if device.type == "cpu":
        return DEFAULT_CPU_BATCH_OVERHEAD
    low, high = BATCH_OVERHEAD_RANGE
    return int(min(high, max(low, round(PASS_COST_PARAMETER_TOKENS / max(num_parameters, 1)))))


def resolve_attention(attn_implementation: str | None, device: torch.device, dtype: torch.dtype) -> str | None:
    """``"auto"`` is flash-attention 2 on CUDA in bf16/fp16 when ``flash_attn`` is importable, else SDPA.

    Any other value is passed to transformers unchanged.

    Example:
    ```python
    >>> import torch
    >>> from reasonflux_rl.prm.engine.base import resolve_attention
    >>> resolve_attention("auto", torch.device("cpu"), torch.float32), resolve_attention("eager", None, None)
    ('sdpa', 'eager')

    ```
    """
    if attn_implementation != ATTENTION_AUTO:
        return attn_implementation
    if (
        device.type == "cuda"
        and dtype in (torch.bfloat16, torch.float16)
        and importlib.util.find_spec("flash_attn") is not None
    ):
        return "flash_attention_2"
    return "sdpa"


@contextmanager
def without_zero3_partitioning() -> Iterator[None]:
    """Load whole weights even when the trainer has set up DeepSpeed ZeRO-3.

    Under ZeRO-3, transformers loads every model through ``deepspeed.zero.Init``, which leaves each rank a shard of
    each weight; a PRM replica that scores on its own (outside DeepSpeed's engine) would then see empty tensors.

    Example:
    ```python
    >>> from transformers.integrations import HfDeepSpeedConfig, is_deepspeed_zero3_enabled
    >>> from reasonflux_rl.prm.engine.base import without_zero3_partitioning
    >>> ds = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    >>> with without_zero3_partitioning():
    ...     inside = is_deepspeed_zero3_enabled()
    >>> inside, is_deepspeed_zero3_enabled()
    (False, True)
    >>> del ds

    ```
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    reference = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = None if reference is None else reference()
    if config is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


@dataclass(frozen=True)
class Runtime:
    """Where and how a PRM runs: the resolved device, dtype, attention implementation and batch layout, and whether
    it is sharded with the policy's ZeRO-3 (``prm_placement: zero3``) or a whole replica."""

    device: torch.device
    dtype: torch.dtype
    attn_implementation: str | None
    packed: bool
    sharded: bool = False

    def load(self, model_class: type[PreTrainedModel], path: str | Path) -> PreTrainedModel:
        """``model_class.from_pretrained(path)`` in this dtype and attention: whole on the device for a replica
        (never ZeRO-3 shards), partitioned across the ranks when sharded (see [`~reasonflux_rl.prm.placement.zero3`])."""
        if self.sharded:
            return load_partitioned(model_class, path, self.dtype, self.attn_implementation)
        with without_zero3_partitioning():
            model = model_class.from_pretrained(path, dtype=self.dtype, attn_implementation=self.attn_implementation)
        return model.to(self.device)

    def place(self, scorer: PRMScorer) -> PRMScorer:
        """``scorer`` ready to score: as it is for a replica; given a DeepSpeed ZeRO-3 inference engine (and so
        lockstep scoring) when sharded."""
        if self.sharded:
            scorer.engine = shard(scorer.sharded_modules(), scorer.read, self.dtype)
        return scorer


def resolve_runtime(
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = "auto",
    attn_implementation: str | None = ATTENTION_AUTO,
    packed: bool | None = None,
    sharded: bool = False,
) -> Runtime:
    """Resolve the loading options every kind takes.

    ``device`` defaults to CUDA when available; ``dtype="auto"`` is bf16 there and fp32 on CPU;
    ``attn_implementation="auto"`` see [`resolve_attention`]; ``packed=None`` packs rows (no padding) exactly when
    the attention is flash-attention 2, whose variable-length kernels make packing free; with SDPA a packed batch
    needs a dense block mask, so padded length-sorted batches are the default there. ``sharded`` loads the weights
    partitioned with the policy's ZeRO-3 instead of whole (see [`Runtime.load`]).

    Example:
    ```python
    >>> from reasonflux_rl.prm.engine.base import resolve_runtime
    >>> runtime = resolve_runtime("cpu")
    >>> runtime.device, runtime.dtype, runtime.attn_implementation, runtime.packed, runtime.sharded
    (device(type='cpu'), torch.float32, 'sdpa', False, False)

    ```
    """
    resolved_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    attention = resolve_attention(attn_implementation, resolved_device, resolved_dtype)
    return Runtime(
        resolved_device,
        resolved_dtype,
        attention,
        attention == "flash_attention_2" if packed is None else packed,
        sharded,
    )


@dataclass(frozen=True)
class Encoded:
    """One (problem, completion) pair made ready for the model.

    Attributes:
        rows: token rows to run (several under the ``windows`` policy; none when there is nothing to score).
        reads: for each row, the positions whose hidden states the head reads (a step kind: one per step the row
            holds, in step order; the value head: the last token).
        result: the counts of the final [`StepScores`]; [`PRMScorer.finish`] fills in the scores.
        steps: for step kinds, the step indices each row scores: its *last* ``len(steps[j])`` read positions (the
            positions before them belong to context steps scored in another row).
        step_spans: for step kinds, the character span of every step in the completion.
    """

    rows: list[list[int]]
    reads: list[list[int]]
    result: StepScores
    steps: list[range] = field(default_factory=list)
    step_spans: list[tuple[int, int]] = field(default_factory=list)


class PRMScorer(ABC):
    """Base of every PRM kind: ``score(problems, completions)`` in length-sorted token-budget batches.

    Rows are sorted longest first and batched so that a padded batch holds at most ``batch_tokens`` tokens (a packed
    one at most ``batch_tokens`` real tokens; default [`default_batch_tokens`]), with as little padding as that allows (see
    [`~reasonflux_rl.prm.engine.batching.length_buckets`]). Every row gets explicit position ids (and, left-padded, an
    attention mask), so a sample's scores do not depend on its batch, the padding side or packing. Results come back
    in input order.

    Attributes:
        kind: the PRM kind name ([`~reasonflux_rl.prm.checkpoint.KINDS`]).
        backbone: the decoder that gives last-layer hidden states ``[batch, seq, hidden]``; ``None`` for a scorer
            whose model runs elsewhere (see [`~reasonflux_rl.prm.placement.remote.RemoteStepScorer`]).
        tokenizer: the PRM's own tokenizer (inputs are always re-tokenised with it).
        max_length: the longest row the PRM reads, in tokens.
        thinking_prefilled: whether the policy's prompt opened the thinking (DeepSeek-R1-Distill), so that a
            completion without ``</think>`` is read as cut-off thinking, not as a response.
        engine: the DeepSpeed ZeRO-3 inference engine that runs [`read`] when the PRM is sharded with the policy
            (``prm_placement: zero3``, see [`~reasonflux_rl.prm.placement.zero3`]); every rank then scores in lockstep.
            ``None`` for a replica, which runs [`read`] directly.
    """

    kind: str = ""
    engine: nn.Module | None = None
    # Set by each local kind: besides [`assemble`], the one thing its loading differs in (a remote kind loads none).
    model_class: ClassVar[type[Any]]

    def __init__(
        self,
        backbone: nn.Module | None,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int,
        parts: Parts = "both",
        batch_tokens: int | None = None,
        padding_side: PaddingSide = "right",
        packed: bool = False,
        pad_id: int | None = None,
        thinking_prefilled: bool = False,
    ) -> None:
        if parts not in PARTS:
            raise ValueError(f"parts={parts!r} is not one of {PARTS}")
        if batch_tokens is not None and batch_tokens <= 0:
            raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side={padding_side!r} is not one of {PADDING_SIDES}")
        if max_length is None or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2, got {max_length}")
        self.backbone = None if backbone is None else backbone.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.parts = parts
        self.thinking_prefilled = thinking_prefilled
        self.batch_tokens = batch_tokens or default_batch_tokens(self.device)
        # None: read from the device at scoring time, when a ZeRO-3 engine knows the rank's device.
        self.batch_overhead: int | None = None
        self.padding_side = padding_side
        self.packed = packed
        if pad_id is None:
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
        self.pad_id = pad_id

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "auto",
        attn_implementation: str | None = ATTENTION_AUTO,
        packed: bool | None = None,
        sharded: bool = False,
        **kwargs: Any,
    ) -> Self:
        """Load this kind from a local checkpoint directory (hub layout, no remote code): check that the directory
        holds it ([`checkpoint_info`]), resolve the runtime, load the weights with [`model_class`] and the PRM's own
        tokenizer, build the scorer ([`assemble`]) and place it.

        ``device`` defaults to CUDA when available; ``dtype="auto"`` picks bf16 there and fp32 on CPU;
        ``attn_implementation="auto"`` picks flash-attention 2 (with packed rows) on CUDA when ``flash_attn`` is
        importable, else SDPA (see [`resolve_runtime`]); ``sharded`` partitions the weights with the policy's
        DeepSpeed ZeRO-3 (see [`~reasonflux_rl.prm.placement.zero3`]). Other keyword arguments go to the kind's
        constructor.

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.prm.kinds.token_logit import TokenLogitScorer
        >>> from reasonflux_rl.tiny import TINY_TOKEN_LOGIT_TOKENS, write_tiny_token_logit
        >>> path = write_tiny_token_logit(tempfile.mkdtemp())
        >>> scorer = TokenLogitScorer.from_pretrained(path, device="cpu", dtype="float32", **TINY_TOKEN_LOGIT_TOKENS)
        >>> type(scorer).__name__, scorer.device.type, scorer.model.dtype, scorer.packed
        ('TokenLogitScorer', 'cpu', torch.float32, False)

        ```
        """
        info = cls.checkpoint_info(path)
        runtime = resolve_runtime(device, dtype, attn_implementation, packed, sharded)
        model = runtime.load(cls.model_class, path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return runtime.place(cls.assemble(model, tokenizer, info, runtime, **kwargs))

    @classmethod
    def checkpoint_info(cls, path: str | Path) -> CheckpointInfo:
        """What the checkpoint in ``path`` holds, checked to be this kind (see
        [`~reasonflux_rl.prm.checkpoint.inspect_checkpoint`]).

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.prm.kinds.value_head import ValueHeadScorer
        >>> from reasonflux_rl.tiny import write_tiny_value_head
        >>> ValueHeadScorer.checkpoint_info(write_tiny_value_head(tempfile.mkdtemp())).kind
        'value_head'

        ```
        """
        return inspect_checkpoint(path, kind=cls.kind)

    @classmethod
    def assemble(
        cls,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        info: CheckpointInfo,
        runtime: Runtime,
        **kwargs: Any,
    ) -> Self:
        """The scorer of a loaded ``model``: ``cls(model, tokenizer, packed=runtime.packed, **kwargs)``; a kind whose
        checkpoint has more than the model (the value head's head file) reads it here.

        Example:
        ```python
        >>> import tempfile
        >>> from transformers import AutoTokenizer
        >>> from reasonflux_rl.prm.checkpoint import inspect_checkpoint
        >>> from reasonflux_rl.prm.engine.base import resolve_runtime
        >>> from reasonflux_rl.prm.kinds.step_classifier import StepScorer
        >>> from reasonflux_rl.tiny import write_tiny_models
        >>> path = write_tiny_models(tempfile.mkdtemp()).prm
        >>> runtime = resolve_runtime("cpu")
        >>> model = runtime.load(StepScorer.model_class, path)
        >>> scorer = StepScorer.assemble(model, AutoTokenizer.from_pretrained(path), inspect_checkpoint(path), runtime,
        ...                              max_steps=2)
        >>> scorer.max_steps, scorer.packed
        (2, False)

        ```
        """
        return cls(model, tokenizer, packed=runtime.packed, **kwargs)

    @abstractmethod
    def encode(self, problem: str, completion: str) -> Encoded:
        """Token rows, the positions each is read at, and counts for one pair."""

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[n, hidden]`` last-layer states at read positions -> ``[n]`` probabilities (float32); every kind that
        runs its model in this process defines it."""
        raise NotImplementedError(f"{type(self).__name__} runs no model in this process")

    @abstractmethod
    def finish(self, encoded: Encoded, outputs: list[list[float]]) -> StepScores:
        """The final [`StepScores`] from the head's outputs for each of ``encoded.rows``."""

    @property
    def device(self) -> torch.device:
        """Where the backbone's weights are (the CPU for a scorer without a local backbone)."""
        if self.engine is not None:
            # A partitioned weight's placeholder may sit on the CPU (parameter offload); the engine knows the rank's
            # device.
            return self.engine.device
        if self.backbone is None:
            return torch.device("cpu")
        return next(self.backbone.parameters()).device

    @property
    def num_parameters(self) -> int:
        """Parameters of the modules [`read`] runs (whole, also when ZeRO-3 holds a shard of each here)."""
        return sum(getattr(p, "ds_numel", p.numel()) for m in self.sharded_modules() if m is not None
                   for p in m.parameters())

    def sharded_modules(self) -> list[nn.Module]:
        """The modules [`read`] runs, which a ZeRO-3 engine partitions and gathers (the backbone unless a kind's
        head has weights of its own)."""
        return [self.backbone]

    def score(self, problems: Sequence[str], completions: Sequence[str]) -> list[StepScores]:
        """Scores for each (problem, completion) pair, in input order."""
        if len(problems) != len(completions):
            raise ValueError(f"got {len(problems)} problems but {len(completions)} completions")
        encoded = [self.encode(p, c) for p, c in zip(problems, completions)]
        keys = [(i, j) for i, e in enumerate(encoded) for j in range(len(e.rows))]
        rows = [encoded[i].rows[j] for i, j in keys]
        outputs = dict(zip(keys, self.run_rows(rows, [encoded[i].reads[j] for i, j in keys])))
        return [self.finish(e, [outputs[(i, j)] for j in range(len(e.rows))]) for i, e in enumerate(encoded)]

    def run_rows(self, rows: list[list[int]], reads: list[list[int]]) -> list[list[float]]:
        """The head's probabilities at each row's read positions (``reads[j]`` for ``rows[j]``), in row order:
        length-sorted token-budget batches through the local backbone (a remote scorer sends the rows to its servers
        instead).

        Sharded (ZeRO-3), every rank runs the same number of forward passes, because each pass gathers the weights
        from every rank: the ranks agree on the largest number of batches first, and a rank with fewer batches (or
        no rows) runs one-token dummy passes (through the head too) for the rest.
        """
        outputs: list[list[float]] = [[] for _ in rows]
        overhead = self.batch_overhead or default_batch_overhead(self.device, self.num_parameters)
        buckets = length_buckets([len(r) for r in rows], self.batch_tokens, self.packed, overhead)
        # Agreed before any pass: a collective between two forwards would meet another rank's weight gathering.
        passes = len(buckets) if self.engine is None else agree_passes(len(buckets), self.device)
        # Every pass is queued before any result is copied back: a copy waits for the device, and the host would
        # otherwise sit idle there instead of preparing and launching the next pass.
        launched = [(bucket, self.launch_rows([rows[k] for k in bucket], [reads[k] for k in bucket]))
                    for bucket in buckets]
        for _ in range(passes - len(buckets)):
            self.launch_rows([[self.pad_id]], [[0]])
        for bucket, (probabilities, counts) in launched:
            for k, out in zip(bucket, _split(probabilities.tolist(), counts)):
                outputs[k] = out
        return outputs

    def launch_rows(self, rows: list[list[int]], reads: list[list[int]]) -> tuple[torch.Tensor, list[int]]:
        """Queue one forward pass over ``rows``: the head's probabilities at the positions ``reads``, all rows' end
        to end, still on the device, and how many belong to each row."""
        batch: Batch = build_batch(rows, reads, self.pad_id, self.padding_side, self.packed)
        device = self.device
        # inference_mode mixed with ZeRO-3 training has failed in DeepSpeed's ZeRO-3 linear ("Inference tensors cannot
        # be saved for backward"); no_grad costs nothing more here, and is how TRL runs its ZeRO-3 reference model.
        with torch.inference_mode() if self.engine is None else torch.no_grad():
            run = self.read if self.engine is None else self.engine
            probabilities = run(
                batch.input_ids.to(device),
                None if batch.attention_mask is None else batch.attention_mask.to(device),
                batch.position_ids.to(device),
                batch.read_index.to(device),
            ).float()
        return probabilities, batch.counts

    def read(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        read_index: torch.Tensor,
    ) -> torch.Tensor:
        """Backbone, then [`head`] at ``read_index`` (flat indices into the batch's tokens): ``[n]`` probabilities."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        # The head runs on the read positions only: a few rows per sample instead of every token.
        return self.head(hidden.reshape(-1, hidden.shape[-1])[read_index])


def _split(values: list[float], counts: list[int]) -> list[list[float]]:
    """``values`` cut into consecutive runs of ``counts[j]`` values."""
    out, start = [], 0
    for count in counts:
        out.append(values[start : start + count])
        start += count
    return out
