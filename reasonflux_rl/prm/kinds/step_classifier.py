"""Score every step of many trajectories with a step-classifier PRM (ReasonFlux-PRM-7B, Qwen2.5-Math-PRM)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from reasonflux_rl.prm.checkpoint import STEP_CLASSIFIER, CheckpointInfo, PRMCheckpointError, inspect_checkpoint
from reasonflux_rl.prm.engine.base import resolve_dtype
from reasonflux_rl.prm.engine.format import DEFAULT_SYSTEM_PROMPT, STEP_TAG, Parts, format_steps
from reasonflux_rl.prm.engine.results import StepScores
from reasonflux_rl.prm.kinds.step_classifier_model import Qwen2ForProcessRewardModel
from reasonflux_rl.prm.kinds.tagged import StepTagScorer, single_token_id

__all__ = ["StepScorer", "StepScores", "resolve_dtype"]


class StepScorer(StepTagScorer):
    """Scores every step of (problem, completion) pairs with a step-classifier PRM.

    The input is the model card's: the PRM tokenizer's chat template over ``[system, user: problem, assistant:
    step_1<extra_0>...step_n<extra_0>]``; a step's score is P(label 1) of the 2-label head at its ``<extra_0>``.
    Inputs are re-tokenised with the PRM's own tokenizer and batched as in
    [`~reasonflux_rl.prm.engine.base.PRMScorer`].

    When a formatted input exceeds ``max_length`` tokens (default: the checkpoint's ``max_position_embeddings``),
    ``truncation="drop_oldest"`` drops the oldest steps (thinking first) until it fits and ``"windows"`` scores the
    steps in overlapping windows (see [`~reasonflux_rl.prm.engine.truncation`]); unscored steps are counted in
    [`StepScores.dropped_steps`].

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> from reasonflux_rl.prm.kinds.step_classifier import StepScorer
    >>> paths = write_tiny_models(tempfile.mkdtemp())
    >>> scorer = StepScorer.from_pretrained(paths.prm)
    >>> [result] = scorer.score(["1+1?"], ["<think>\\n1+1=2.\\n\\nCheck: yes.\\n</think>\\n\\n\\\\boxed{2}"])
    >>> len(result.step_scores), result.dropped_steps, result.step_indices
    (3, 0, [0, 1, 2])

    ```
    """

    kind = STEP_CLASSIFIER
    model_class = Qwen2ForProcessRewardModel

    def __init__(
        self,
        model: Qwen2ForProcessRewardModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        parts: Parts = "both",
        max_steps: int | None = None,
        max_length: int | None = None,
        batch_tokens: int | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        step_tag: str | None = None,
        **options,
    ) -> None:
        step_tag = step_tag or STEP_TAG
        super().__init__(
            model.model,
            tokenizer,
            step_tag=step_tag,
            tag_id=single_token_id(tokenizer, step_tag, "step tag"),
            parts=parts,
            max_steps=max_steps,
            max_length=max_length or model.config.max_position_embeddings,
            batch_tokens=batch_tokens,
            **options,
        )
        self.model = model.eval()
        self.system_prompt = system_prompt

    @classmethod
    def from_pretrained(cls, path: str | Path, **options: Any) -> StepScorer:
        """Load a step-classifier PRM from a local checkpoint directory (hub layout, no remote code).

        ``device`` defaults to CUDA when available; ``dtype="auto"`` picks bf16 there and fp32 on CPU;
        ``attn_implementation="auto"`` picks flash-attention 2 (with packed rows) on CUDA when ``flash_attn`` is
        importable, else SDPA (see [`~reasonflux_rl.prm.engine.base.resolve_runtime`]); ``sharded`` partitions it with the
        policy's DeepSpeed ZeRO-3 (see [`~reasonflux_rl.prm.placement.zero3`]). Other keyword arguments go to [`StepScorer`].
        (Every kind loads the same way: [`~reasonflux_rl.prm.engine.base.PRMScorer.from_pretrained`].)

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.tiny import write_tiny_models
        >>> from reasonflux_rl.prm.kinds.step_classifier import StepScorer
        >>> scorer = StepScorer.from_pretrained(write_tiny_models(tempfile.mkdtemp()).prm, batch_tokens=4096)
        >>> scorer.batch_tokens, scorer.model.dtype
        (4096, torch.float32)

        ```
        """
        return super().from_pretrained(path, **options)

    @classmethod
    def checkpoint_info(cls, path: str | Path) -> CheckpointInfo:
        """What the checkpoint in ``path`` holds, detected, so that a checkpoint of another kind is named as such.

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.tiny import write_tiny_value_head
        >>> from reasonflux_rl.prm.kinds.step_classifier import StepScorer
        >>> try:
        ...     StepScorer.checkpoint_info(write_tiny_value_head(tempfile.mkdtemp()))
        ... except ValueError as err:
        ...     print(str(err).split(": ")[0].split(" is ")[1])
        a value_head PRM, not a step classifier

        ```
        """
        info = inspect_checkpoint(path)
        if info.kind != STEP_CLASSIFIER:
            raise PRMCheckpointError(
                f"PRM checkpoint {path} is a {info.kind} PRM, not a step classifier: load it with "
                "reasonflux_rl.prm.load_scorer"
            )
        return info

    def format(self, problem: str, steps: list[str]) -> str:
        """The chat-template input of the model card (see [`~reasonflux_rl.prm.engine.format.format_steps`])."""
        return format_steps(self.tokenizer, problem, steps, self.system_prompt, self.step_tag)

    def sharded_modules(self) -> list[nn.Module]:
        """The whole model: the step head has weights too."""
        return [self.model]

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """P(label 1) of the 2-label step head."""
        return torch.softmax(self.model.score(hidden).float(), dim=-1)[:, 1]

    def score(self, problems: Sequence[str], completions: Sequence[str]) -> list[StepScores]:
        """Step scores for each (problem, completion) pair, in input order.

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.tiny import write_tiny_models
        >>> from reasonflux_rl.prm.kinds.step_classifier import StepScorer
        >>> scorer = StepScorer.from_pretrained(write_tiny_models(tempfile.mkdtemp()).prm)
        >>> [len(r.step_scores) for r in scorer.score(["2+2?", "3+3?"], ["4", "Six.\\n\\nSo \\\\boxed{6}."])]
        [1, 2]

        ```
        """
        return super().score(problems, completions)
