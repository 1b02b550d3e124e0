"""Score every step of many trajectories with a step-classifier PRM, in length-sorted token-budget batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .format import DEFAULT_SYSTEM_PROMPT, STEP_TAG, Parts, format_steps, trajectory_steps
from .inspect import inspect_checkpoint
from .model import Qwen2ForProcessRewardModel


@dataclass(frozen=True)
class StepScores:
    """The PRM's verdict on one trajectory.

    Attributes:
        step_scores: P(step is good) for each scored step, in order. These are the *last* ``len(step_scores)``
            steps of the trajectory: when the input did not fit the PRM's context the oldest steps were dropped.
        num_steps: how many steps the trajectory has.
        dropped_steps: how many of its oldest steps were not scored because they did not fit ``max_length``.
    """

    step_scores: list[float] = field(default_factory=list)
    num_steps: int = 0
    dropped_steps: int = 0

    @property
    def dropped_fraction(self) -> float:
        """Fraction of the trajectory's steps that were not scored (0 for a trajectory without steps)."""
        return self.dropped_steps / self.num_steps if self.num_steps else 0.0


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"`` is bf16 on an accelerator and fp32 on CPU; strings like ``"bfloat16"`` name a torch dtype.

    Example:
    ```python
    >>> import torch
    >>> from reasonflux_rl.prm.scorer import resolve_dtype
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


class StepScorer:
    """Scores every step of (problem, completion) pairs with a step-classifier PRM.

    Inputs are re-tokenised with the PRM's own tokenizer, grouped into batches of at most ``batch_tokens`` padded
    tokens after sorting by length (so a long trace does not make every short one pad to its length), right-padded so
    causal attention makes a sample's scores independent of its batch, and returned in input order.

    When a formatted input exceeds ``max_length`` tokens, the oldest steps (thinking first) are dropped until it fits;
    the dropped steps get no score and are counted in [`StepScores.dropped_steps`].

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> from reasonflux_rl.prm.scorer import StepScorer
    >>> paths = write_tiny_models(tempfile.mkdtemp())
    >>> scorer = StepScorer.from_pretrained(paths.prm)
    >>> [result] = scorer.score(["1+1?"], ["<think>\\n1+1=2.\\n\\nCheck: yes.\\n</think>\\n\\n\\\\boxed{2}"])
    >>> len(result.step_scores), result.dropped_steps
    (3, 0)

    ```
    """

    def __init__(
        self,
        model: Qwen2ForProcessRewardModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        parts: Parts = "both",
        max_steps: int | None = None,
        max_length: int | None = None,
        batch_tokens: int = 16384,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        step_tag: str = STEP_TAG,
    ) -> None:
        tag_ids = tokenizer.encode(step_tag, add_special_tokens=False)
        if len(tag_ids) != 1:
            raise ValueError(f"step tag {step_tag!r} is not a single token of the PRM tokenizer (ids {tag_ids})")
        if batch_tokens <= 0:
            raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.parts = parts
        self.max_steps = max_steps
        self.max_length = max_length or model.config.max_position_embeddings
        self.batch_tokens = batch_tokens
        self.system_prompt = system_prompt
        self.step_tag = step_tag
        self.tag_id = tag_ids[0]
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None and pad != self.tag_id else tokenizer.eos_token_id or 0

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "auto",
        attn_implementation: str | None = "sdpa",
        **kwargs,
    ) -> StepScorer:
        """Load a step-classifier PRM from a local checkpoint directory (hub layout, no remote code).

        ``device`` defaults to CUDA when available; ``dtype="auto"`` picks bf16 there and fp32 on CPU. Other keyword
        arguments go to [`StepScorer`].

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.tiny import write_tiny_models
        >>> from reasonflux_rl.prm.scorer import StepScorer
        >>> scorer = StepScorer.from_pretrained(write_tiny_models(tempfile.mkdtemp()).prm, batch_tokens=4096)
        >>> scorer.batch_tokens, scorer.model.dtype
        (4096, torch.float32)

        ```
        """
        inspect_checkpoint(path)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = Qwen2ForProcessRewardModel.from_pretrained(
            path, dtype=resolve_dtype(dtype, device), attn_implementation=attn_implementation
        ).to(device)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, **kwargs)

    def encode(self, problem: str, completion: str) -> tuple[list[int], StepScores]:
        """Token ids of the formatted input and an empty [`StepScores`] carrying the step and truncation counts."""
        steps = trajectory_steps(completion, self.parts, self.max_steps)
        if not steps:
            return [], StepScores()
        ids = self._ids(problem, steps)
        dropped = 0
        if len(ids) > self.max_length:
            # Binary search for the fewest oldest steps to drop; tokenising every candidate would be quadratic.
            low, high = 1, len(steps)
            while low < high:
                mid = (low + high) // 2
                if len(self._ids(problem, steps[mid:])) <= self.max_length:
                    high = mid
                else:
                    low = mid + 1
            dropped = low
            ids = self._ids(problem, steps[dropped:]) if dropped < len(steps) else []
        kept = len(steps) - dropped
        if ids and ids.count(self.tag_id) != kept:
            raise ValueError(
                f"the PRM tokenizer produced {ids.count(self.tag_id)} step tags for {kept} steps; "
                f"the step tag {self.step_tag!r} must tokenise to one token wherever it appears"
            )
        return ids, StepScores(num_steps=len(steps), dropped_steps=dropped)

    def _ids(self, problem: str, steps: list[str]) -> list[int]:
        text = format_steps(self.tokenizer, problem, steps, self.system_prompt, self.step_tag)
        return self.tokenizer.encode(text)

    def score(self, problems: Sequence[str], completions: Sequence[str]) -> list[StepScores]:
        """Step scores for each (problem, completion) pair, in input order.

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.tiny import write_tiny_models
        >>> from reasonflux_rl.prm.scorer import StepScorer
        >>> scorer = StepScorer.from_pretrained(write_tiny_models(tempfile.mkdtemp()).prm)
        >>> [len(r.step_scores) for r in scorer.score(["2+2?", "3+3?"], ["4", "Six.\\n\\nSo \\\\boxed{6}."])]
        [1, 2]

        ```
        """
        if len(problems) != len(completions):
            raise ValueError(f"got {len(problems)} problems but {len(completions)} completions")
        encoded = [self.encode(p, c) for p, c in zip(problems, completions)]
        results: list[StepScores] = [meta for _, meta in encoded]
        order = sorted((i for i, (ids, _) in enumerate(encoded) if ids), key=lambda i: -len(encoded[i][0]))
        for batch in self._buckets(order, [len(ids) for ids, _ in encoded]):
            probabilities = self._forward([encoded[i][0] for i in batch])
            for i, scores in zip(batch, probabilities):
                meta = results[i]
                results[i] = StepScores(scores, meta.num_steps, meta.dropped_steps)
        return results

    def _buckets(self, order: list[int], lengths: list[int]) -> list[list[int]]:
        # `order` is longest first, so a bucket's padded size is its first length times its size.
        buckets: list[list[int]] = []
        for i in order:
            if buckets and lengths[buckets[-1][0]] * (len(buckets[-1]) + 1) <= self.batch_tokens:
                buckets[-1].append(i)
            else:
                buckets.append([i])
        return buckets

    @torch.inference_mode()
    def _forward(self, rows: list[list[int]]) -> list[list[float]]:
        device = self.model.device
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, row in enumerate(rows):
            input_ids[j, : len(row)] = torch.tensor(row)
            attention_mask[j, : len(row)] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        hidden = self.model.hidden_states(input_ids, attention_mask)
        is_tag = (input_ids == self.tag_id) & attention_mask.bool()
        # The head runs on tag positions only: a few dozen rows instead of every token.
        logits = self.model.score(hidden[is_tag]).float()
        positive = torch.softmax(logits, dim=-1)[:, 1].tolist()
        out, start = [], 0
        for count in is_tag.sum(dim=1).tolist():
            out.append(positive[start : start + count])
            start += count
        return out
