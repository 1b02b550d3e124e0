"""Score every step with a token-logit PRM (Math-Shepherd style): a causal LM read at a step tag.

Every step ends with a step tag token; the step's score is the probability of the "good" token against the "bad"
token in the LM's next-token distribution at the tag, ``softmax([logit_good, logit_bad])[0]``, exactly as the
Math-Shepherd card computes it. The input is the card's raw text ``problem + " " + step_1 + " <tag>\\n" + ...`` (see
[`~reasonflux_rl.prm.engine.format.format_tagged_text`]); no chat template.

Such a checkpoint is an ordinary causal LM, so it is never auto-detected: load it with ``kind="token_logit"`` and
name its step tag and its good/bad tokens (as strings that are single tokens of its tokenizer, or as token ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from reasonflux_rl.prm.checkpoint import TOKEN_LOGIT
from reasonflux_rl.prm.engine.format import Parts, format_tagged_text
from reasonflux_rl.prm.engine.results import StepScores
from reasonflux_rl.prm.kinds.tagged import StepTagScorer, single_token_id
from reasonflux_rl.prm.placement.zero3 import gathered


class TokenLogitScorer(StepTagScorer):
    """Step scores P(good | tag) / (P(good | tag) + P(bad | tag)) from a causal LM.

    ``step_tag``, ``good_token`` and ``bad_token`` are required strings (each one token of the PRM tokenizer, e.g.
    Math-Shepherd's ``"ки"``, ``"+"``, ``"-"``); ``step_tag_id``, ``good_token_id``, ``bad_token_id`` override the ids
    when a tokenizer spells them differently in context. Steps, truncation and batching as for every step kind
    (see [`~reasonflux_rl.prm.kinds.tagged.StepTagScorer`]); ``max_length`` defaults to the checkpoint's
    ``max_position_embeddings``.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.tiny import write_tiny_token_logit, TINY_TOKEN_LOGIT_TOKENS
    >>> from reasonflux_rl.prm.kinds.token_logit import TokenLogitScorer
    >>> scorer = TokenLogitScorer.from_pretrained(write_tiny_token_logit(tempfile.mkdtemp()), **TINY_TOKEN_LOGIT_TOKENS)
    >>> [result] = scorer.score(["1+1?"], ["1+1=2.\\n\\nSo \\\\boxed{2}."])
    >>> len(result.step_scores), all(0 < s < 1 for s in result.step_scores)
    (2, True)

    ```
    """

    kind = TOKEN_LOGIT
    model_class = AutoModelForCausalLM

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        step_tag: str | None = None,
        good_token: str | None = None,
        bad_token: str | None = None,
        step_tag_id: int | None = None,
        good_token_id: int | None = None,
        bad_token_id: int | None = None,
        parts: Parts = "both",
        max_steps: int | None = None,
        max_length: int | None = None,
        batch_tokens: int | None = None,
        **options,
    ) -> None:
        if step_tag is None or (good_token is None and good_token_id is None) or (
            bad_token is None and bad_token_id is None
        ):
            raise ValueError(
                "a token-logit PRM needs step_tag, good_token and bad_token (or their ids), e.g. Math-Shepherd's "
                "step_tag='ки', good_token='+', bad_token='-'"
            )
        lm_head = model.get_output_embeddings()
        if not isinstance(lm_head, nn.Linear):
            raise TypeError(f"the token-logit PRM needs a linear LM head; found {type(lm_head).__name__}")
        if step_tag_id is None:
            step_tag_id = single_token_id(tokenizer, step_tag, "step tag")
        good = good_token_id if good_token_id is not None else single_token_id(tokenizer, good_token, "good token")
        bad = bad_token_id if bad_token_id is not None else single_token_id(tokenizer, bad_token, "bad token")
        super().__init__(
            model.get_decoder(),
            tokenizer,
            step_tag=step_tag,
            tag_id=step_tag_id,
            parts=parts,
            max_steps=max_steps,
            max_length=max_length or model.config.max_position_embeddings,
            batch_tokens=batch_tokens,
            **options,
        )
        self.model = model.eval()
        self.good_token_id, self.bad_token_id = good, bad
        # Only the two rows of the LM head that the score uses: a [2, hidden] matmul per tag, not a vocabulary one.
        # Kept whole on every rank when the model is sharded (ZeRO-3), so the LM head itself never runs.
        with gathered([lm_head.weight, lm_head.bias]):
            self._pair = lm_head.weight[[good, bad]].detach()
            self._pair_bias = None if lm_head.bias is None else lm_head.bias[[good, bad]].detach()

    @classmethod
    def from_pretrained(cls, path: str | Path, **options: Any) -> TokenLogitScorer:
        """Load a causal LM from a local checkpoint directory as a token-logit PRM (no remote code).

        Loading options as for [`~reasonflux_rl.prm.kinds.step_classifier.StepScorer.from_pretrained`]; the tokens go to
        [`TokenLogitScorer`].

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.tiny import write_tiny_token_logit
        >>> from reasonflux_rl.prm.kinds.token_logit import TokenLogitScorer
        >>> try:
        ...     TokenLogitScorer.from_pretrained(write_tiny_token_logit(tempfile.mkdtemp()))
        ... except ValueError as err:
        ...     print(str(err)[:58])
        a token-logit PRM needs step_tag, good_token and bad_token

        ```
        """
        return super().from_pretrained(path, **options)

    def format(self, problem: str, steps: list[str]) -> str:
        """The Math-Shepherd input (see [`~reasonflux_rl.prm.engine.format.format_tagged_text`])."""
        return format_tagged_text(problem, steps, self.step_tag)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """softmax over the (good, bad) logits at each tag; the good one's probability."""
        logits = nn.functional.linear(hidden, self._pair, self._pair_bias)
        return torch.softmax(logits.float(), dim=-1)[:, 0]

    def score(self, problems: Sequence[str], completions: Sequence[str]) -> list[StepScores]:
        """Step scores for each (problem, completion) pair, in input order.

        Example:
        ```python
        >>> import tempfile
        >>> from reasonflux_rl.tiny import write_tiny_token_logit, TINY_TOKEN_LOGIT_TOKENS
        >>> from reasonflux_rl.prm.kinds.token_logit import TokenLogitScorer
        >>> path = write_tiny_token_logit(tempfile.mkdtemp())
        >>> scorer = TokenLogitScorer.from_pretrained(path, **TINY_TOKEN_LOGIT_TOKENS)
        >>> [r.num_steps for r in scorer.score(["2+2?", "3+3?"], ["4", "Six.\\n\\nSo 6."])]
        [1, 2]

        ```
        """
        return super().score(problems, completions)
