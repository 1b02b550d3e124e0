"""Score whole trajectories with a value-head PRM (ReasonFlux-PRM-1.5B): one scalar per (problem, completion).

The layout of the released checkpoint: a causal-LM backbone saved with ``save_pretrained`` and, beside it,
``reward_head.pt``, the state dict of a ``Linear(hidden, 1)``. The input is the raw string ``problem + completion``
(no chat template, no step tags); the score is ``sigmoid(head(h))`` where ``h`` is the last layer's hidden state at
the last real token. ``reward_head.pt`` is read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedTokenizerBase

from reasonflux_rl.prm.checkpoint import REWARD_HEAD_FILE, VALUE_HEAD, CheckpointInfo, PRMCheckpointError
from reasonflux_rl.prm.engine.base import Encoded, PRMScorer, Runtime
from reasonflux_rl.prm.engine.format import Parts
from reasonflux_rl.prm.engine.results import StepScores
from reasonflux_rl.trajectory import split_trajectory

# The context the released checkpoint was trained and is used with (its model card tokenises with max_length=2048).
VALUE_HEAD_MAX_LENGTH = 2048


class ValueHeadScorer(PRMScorer):
    """One score per trajectory from a value-head PRM, batched like every kind.

    ``parts="both"`` reads the completion exactly as given (thinking tags included, as the model card feeds it);
    ``"thinking"`` or ``"response"`` reads only that part. The result has no step scores: its
    [`StepScores.trajectory_score`] is the score.

    Past ``max_length`` tokens (default 2048, the released model's length, capped by the backbone's positions) the
    input keeps the problem (at most half of ``max_length``, from its start) and the *end* of the completion, where
    the final answer is and where the score is read; the tokens cut from the middle are counted in
    [`StepScores.dropped_tokens`]. (The model card's tokenizer call keeps the first 2048 tokens instead, which for a
    long thinking trace scores a text that stops mid-thought; up to 2048 tokens both are the same.) There is no
    ``windows`` policy for a single-score head: averaging window scores would invent a score the model never gave.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.tiny import write_tiny_value_head
    >>> from reasonflux_rl.prm.kinds.value_head import ValueHeadScorer
    >>> scorer = ValueHeadScorer.from_pretrained(write_tiny_value_head(tempfile.mkdtemp()))
    >>> [result] = scorer.score(["1+1?"], ["<think>\\n1+1=2.\\n</think>\\n\\n\\\\boxed{2}"])
    >>> 0.0 < result.trajectory_score < 1.0, result.step_scores, result.dropped_tokens
    (True, [], 0)

    ```
    """

    kind = VALUE_HEAD
    model_class = AutoModel  # the backbone, without its LM head

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        reward_head: nn.Linear,
        *,
        parts: Parts = "both",
        max_length: int | None = None,
        batch_tokens: int | None = None,
        truncation: str = "drop_oldest",
        **options,
    ) -> None:
        if truncation != "drop_oldest":
            raise ValueError(
                f"truncation={truncation!r} is not available for a value-head PRM, which gives one score per "
                "trajectory: it keeps the problem and the end of the completion ('drop_oldest')"
            )
        limit = getattr(backbone.config, "max_position_embeddings", None) or VALUE_HEAD_MAX_LENGTH
        super().__init__(
            backbone,
            tokenizer,
            parts=parts,
            max_length=max_length or min(VALUE_HEAD_MAX_LENGTH, limit),
            batch_tokens=batch_tokens,
            **options,
        )
        if not tokenizer.is_fast:
            raise ValueError("the value-head scorer needs a fast tokenizer (it cuts at character offsets)")
        self.reward_head = reward_head.eval()

    @classmethod
    def from_pretrained(cls, path: str | Path, **options: Any) -> ValueHeadScorer:
        """Load the backbone (without its LM head) and ``reward_head.pt`` from a local checkpoint directory.

        Loading options as for [`~reasonflux_rl.prm.kinds.step_classifier.StepScorer.from_pretrained`]; the head stays float32 (and
        whole on every rank when the backbone is sharded: it is one row of ``hidden`` weights).

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.tiny import write_tiny_value_head
        >>> from reasonflux_rl.prm.kinds.value_head import ValueHeadScorer
        >>> scorer = ValueHeadScorer.from_pretrained(write_tiny_value_head(tempfile.mkdtemp()), max_length=512)
        >>> scorer.max_length, scorer.reward_head.weight.shape
        (512, torch.Size([1, 64]))

        ```
        """
        return super().from_pretrained(path, **options)

    @classmethod
    def assemble(
        cls,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        info: CheckpointInfo,
        runtime: Runtime,
        **kwargs: Any,
    ) -> ValueHeadScorer:
        """The scorer of a loaded backbone, with the checkpoint's ``reward_head.pt`` (read with
        ``weights_only=True``) on the runtime's device.

        Example:
        ```python
        >>> import tempfile
        >>> from transformers import AutoTokenizer
        >>> from reasonflux_rl.prm.engine.base import resolve_runtime
        >>> from reasonflux_rl.prm.kinds.value_head import ValueHeadScorer
        >>> from reasonflux_rl.tiny import write_tiny_value_head
        >>> path = write_tiny_value_head(tempfile.mkdtemp())
        >>> runtime = resolve_runtime("cpu")
        >>> scorer = ValueHeadScorer.assemble(runtime.load(ValueHeadScorer.model_class, path),
        ...                                   AutoTokenizer.from_pretrained(path), ValueHeadScorer.checkpoint_info(path),
        ...                                   runtime)
        >>> scorer.reward_head.weight.dtype, scorer.reward_head.bias is not None
        (torch.float32, True)

        ```
        """
        head = _reward_head(info)
        return cls(model, tokenizer, head.to(runtime.device), packed=runtime.packed, **kwargs)

    def text(self, completion: str) -> str:
        """The part of ``completion`` the head reads (``parts``)."""
        if self.parts == "both":
            return completion
        trajectory = split_trajectory(completion, self.thinking_prefilled)
        return trajectory.thinking if self.parts == "thinking" else trajectory.response

    def encode(self, problem: str, completion: str) -> Encoded:
        """The tokens of ``problem + completion``, cut to the problem and the completion's end past ``max_length``."""
        text = self.text(completion)
        if not text.strip():
            return Encoded([], [], StepScores())
        encoding = self.tokenizer(problem + text, return_offsets_mapping=True)
        ids: list[int] = encoding["input_ids"]
        if len(ids) <= self.max_length:
            return Encoded([ids], [_last(ids)], StepScores(num_tokens=len(ids)))
        # Tokens that start inside the problem (and a leading BOS, at offset 0) belong to the problem.
        in_problem = sum(1 for start, _ in encoding["offset_mapping"] if start < len(problem))
        keep_problem = min(in_problem, self.max_length // 2)
        kept = ids[:keep_problem] + ids[len(ids) - (self.max_length - keep_problem) :]
        return Encoded([kept], [_last(kept)], StepScores(num_tokens=len(ids), dropped_tokens=len(ids) - len(kept)))

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """``sigmoid(reward_head(h))`` in float32."""
        weight = self.reward_head.weight
        return torch.sigmoid(self.reward_head(hidden.to(weight.dtype))).squeeze(-1)

    def finish(self, encoded: Encoded, outputs: list[list[float]]) -> StepScores:
        """The single read position's score is the trajectory score."""
        if not outputs:
            return encoded.result
        [[score]] = outputs
        return StepScores(
            trajectory_score=score, num_tokens=encoded.result.num_tokens, dropped_tokens=encoded.result.dropped_tokens
        )

    def score(self, problems: Sequence[str], completions: Sequence[str]) -> list[StepScores]:
        """One [`StepScores`] with a ``trajectory_score`` per pair, in input order (none for an empty completion).

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.tiny import write_tiny_value_head
        >>> from reasonflux_rl.prm.kinds.value_head import ValueHeadScorer
        >>> scorer = ValueHeadScorer.from_pretrained(write_tiny_value_head(tempfile.mkdtemp()))
        >>> [r.trajectory_score is None for r in scorer.score(["1+1?", "2+2?"], ["2", "  "])]
        [False, True]

        ```
        """
        return super().score(problems, completions)


def _last(row: list[int]) -> list[int]:
    """The position the head reads: the last real token."""
    return [len(row) - 1]


def _reward_head(info: CheckpointInfo) -> nn.Linear:
    """The ``Linear(hidden, 1)`` of the checkpoint's ``reward_head.pt``, in float32."""
    state = torch.load(info.path / REWARD_HEAD_FILE, map_location="cpu", weights_only=True)
    head = nn.Linear(info.hidden_size, 1, bias="bias" in state)
    try:
        head.load_state_dict(state)
    except RuntimeError as err:
        raise PRMCheckpointError(f"{REWARD_HEAD_FILE} of {info.path} does not fit Linear(hidden, 1): {err}") from None
    return head
