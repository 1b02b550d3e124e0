"""Score every step with a step value-head PRM (Skywork-o1-Open-PRM): a value head read at the token after each step.

Skywork's inference code (``SkyworkAI/skywork-o1-prm-inference``, ``model_utils/io_utils.py``: ``prepare_input`` and
``derive_step_rewards``; mirrored in ``openreasoner/openr``) builds the input as token ids, piece by piece: the
tokenizer's BOS token, the problem and ``"\\n"``, tokenised together; then each step tokenised on its own, followed by
the id of the step token ``"\\n"``. The step reward is ``sigmoid(v_head(h))`` at each of those appended step tokens,
``h`` the last layer's hidden state. No chat template, no system prompt.

Steps are this package's (blank-line paragraphs of the thinking and/or response, ``parts``), each ended by the step
token: Skywork's own examples make every line a step, so a step here that spans several lines is read once, at its
end, its inner line breaks being plain text. The engine's truncation policies apply as for every step kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from reasonflux_rl.prm.checkpoint import STEP_VALUE_HEAD, PRMCheckpointError
from reasonflux_rl.prm.engine.format import Parts
from reasonflux_rl.prm.engine.results import StepScores
from reasonflux_rl.prm.kinds.step_value_head_model import Qwen2ForPrmModel
from reasonflux_rl.prm.kinds.tagged import StepTagScorer, TaggedRow

# Skywork-o1-Open-PRM's step token: the end of a line.
STEP_TOKEN = "\n"


class StepValueHeadScorer(StepTagScorer):
    """Step scores ``sigmoid(v_head(h))`` at the step token after each step, from a step value-head PRM.

    ``step_tag`` is the step token (default ``"\\n"``, Skywork's); as in Skywork's code its id is the last id the
    tokenizer gives it. The tokenizer must have a BOS token (the input starts with it). Steps, truncation and
    batching as for every step kind (see [`~reasonflux_rl.prm.kinds.tagged.StepTagScorer`]); ``max_length``
    defaults to the checkpoint's ``max_position_embeddings``.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.tiny import write_tiny_step_value_head
    >>> from reasonflux_rl.prm.kinds.step_value_head import StepValueHeadScorer
    >>> scorer = StepValueHeadScorer.from_pretrained(write_tiny_step_value_head(tempfile.mkdtemp()))
    >>> [result] = scorer.score(["1+1?"], ["<think>\\n1+1=2.\\n\\nCheck: yes.\\n</think>\\n\\n\\\\boxed{2}"])
    >>> len(result.step_scores), all(0 < s < 1 for s in result.step_scores), result.step_indices
    (3, True, [0, 1, 2])

    ```
    """

    kind = STEP_VALUE_HEAD
    model_class = Qwen2ForPrmModel

    def __init__(
        self,
        model: Qwen2ForPrmModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        step_tag: str | None = None,
        parts: Parts = "both",
        max_steps: int | None = None,
        max_length: int | None = None,
        batch_tokens: int | None = None,
        **options,
    ) -> None:
        step_tag = step_tag or STEP_TOKEN
        if tokenizer.bos_token is None:
            raise PRMCheckpointError(
                "a step value-head PRM's input starts with the tokenizer's BOS token (Skywork's prepare_input), and "
                "this tokenizer has none: set bos_token in the checkpoint's tokenizer_config.json"
            )
        step_ids = tokenizer.encode(step_tag, add_special_tokens=False)
        if not step_ids:
            raise ValueError(f"the step token {step_tag!r} gives no token id")
        super().__init__(
            model.model,
            tokenizer,
            step_tag=step_tag,
            tag_id=step_ids[-1],
            parts=parts,
            max_steps=max_steps,
            max_length=max_length or model.config.max_position_embeddings,
            batch_tokens=batch_tokens,
            **options,
        )
        self.model = model.eval()

    @classmethod
    def from_pretrained(cls, path: str | Path, **options: Any) -> StepValueHeadScorer:
        """Load a step value-head PRM from a local checkpoint directory (hub layout, safetensors or
        ``pytorch_model.bin``, no remote code).

        Loading options as for [`~reasonflux_rl.prm.kinds.step_classifier.StepScorer.from_pretrained`]; the value
        head stays float32 whatever the decoder's dtype.

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.tiny import write_tiny_step_value_head
        >>> from reasonflux_rl.prm.kinds.step_value_head import StepValueHeadScorer
        >>> scorer = StepValueHeadScorer.from_pretrained(write_tiny_step_value_head(tempfile.mkdtemp()),
        ...                                              dtype="bfloat16")
        >>> scorer.model.model.dtype, scorer.model.v_head.summary.weight.dtype, repr(scorer.step_tag)
        (torch.bfloat16, torch.float32, "'\\\\n'")

        ```
        """
        return super().from_pretrained(path, **options)

    def step_rows(self, problem: str, steps: list[str]) -> Callable[[int, int], TaggedRow]:
        """Skywork's input, built from token pieces: ``BOS + problem + "\\n"`` tokenised, then each step tokenised on
        its own and followed by the step token's id; each step is read at that id.

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.tiny import write_tiny_step_value_head
        >>> from reasonflux_rl.prm.kinds.step_value_head import StepValueHeadScorer
        >>> scorer = StepValueHeadScorer.from_pretrained(write_tiny_step_value_head(tempfile.mkdtemp()))
        >>> ids, reads = scorer.step_rows("1+1?", ["1+1=2.", "So 2."])(0, 2)
        >>> [ids[k] for k in reads] == [scorer.tag_id] * 2, reads[-1] == len(ids) - 1
        (True, True)
        >>> print(scorer.tokenizer.decode(ids))
        <|im_start|>1+1?
        1+1=2.
        So 2.
        <BLANKLINE>

        ```
        """
        tokenize = self.tokenizer
        prompt = tokenize(tokenize.bos_token + problem + "\n", add_special_tokens=False)["input_ids"]
        pieces = [ids + [self.tag_id] for ids in tokenize(steps, add_special_tokens=False)["input_ids"]]

        def row(start: int, end: int) -> TaggedRow:
            ids = prompt + [token for piece in pieces[start:end] for token in piece]
            reads, position = [], len(prompt) - 1
            for piece in pieces[start:end]:
                position += len(piece)
                reads.append(position)
            return ids, reads

        return row

    def sharded_modules(self) -> list[nn.Module]:
        """The whole model: the value head has weights too."""
        return [self.model]

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """``sigmoid(v_head(h))`` in float32."""
        return torch.sigmoid(self.model.v_head(hidden).float())

    def score(self, problems: Sequence[str], completions: Sequence[str]) -> list[StepScores]:
        """Step scores for each (problem, completion) pair, in input order.

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.tiny import write_tiny_step_value_head
        >>> from reasonflux_rl.prm.kinds.step_value_head import StepValueHeadScorer
        >>> scorer = StepValueHeadScorer.from_pretrained(write_tiny_step_value_head(tempfile.mkdtemp()))
        >>> [len(r.step_scores) for r in scorer.score(["2+2?", "3+3?"], ["4", "Six.\\n\\nSo \\\\boxed{6}."])]
        [1, 2]

        ```
        """
        return super().score(problems, completions)
