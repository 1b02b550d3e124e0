"""What the kinds that score steps share: split into steps, put a step tag after each, fit the context, read tags.

The step kinds differ only in how the tagged steps are laid out (a chat template, raw text, or token rows built step
by step) and in the head read at each tag; the truncation policies and the tag bookkeeping live here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import cache
from itertools import pairwise

from torch import nn
from transformers import PreTrainedTokenizerBase

from reasonflux_rl.prm.engine.base import Encoded, PRMScorer
from reasonflux_rl.prm.engine.format import located_steps
from reasonflux_rl.prm.engine.results import StepScores
from reasonflux_rl.prm.engine.truncation import TRUNCATIONS, drop_oldest, plan_windows


def single_token_id(tokenizer: PreTrainedTokenizerBase, text: str, what: str) -> int:
    """The id of ``text`` when the tokenizer encodes it as exactly one token; otherwise a clear error.

    Example:
    ```python
    >>> from reasonflux_rl.tiny import build_tokenizer
    >>> from reasonflux_rl.prm.kinds.tagged import single_token_id
    >>> tok = build_tokenizer()
    >>> single_token_id(tok, "<extra_0>", "step tag") == tok.convert_tokens_to_ids("<extra_0>")
    True

    ```
    """
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(
            f"{what} {text!r} is not a single token of the PRM tokenizer (ids {ids}); give a single-token string or "
            "its token id"
        )
    return ids[0]


# A token row and the position of the step tag of each step it holds, in step order.
TaggedRow = tuple[list[int], list[int]]


class StepTagScorer(PRMScorer):
    """Base of the kinds that score every step at a step tag (one score per step, each in [0, 1]).

    Steps are the blank-line separated paragraphs of the thinking trajectory and/or the final response (``parts``),
    at most ``max_steps`` (the tail merged into the last kept step). ``truncation`` decides what happens when the
    formatted input is longer than ``max_length`` (see [`~reasonflux_rl.prm.engine.truncation`]): ``"drop_oldest"`` or
    ``"windows"`` (context of about ``window_overlap`` tokens, default a quarter of ``max_length``).

    A kind lays out its input as text ([`format`], tokenised whole, its tags found by their id) or builds the token
    rows itself ([`step_rows`]).
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        step_tag: str,
        tag_id: int,
        max_steps: int | None = None,
        truncation: str = "drop_oldest",
        window_overlap: int | None = None,
        **options,
    ) -> None:
        super().__init__(backbone, tokenizer, **options)
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation={truncation!r} is not one of {TRUNCATIONS}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer or None, got {max_steps}")
        self.step_tag = step_tag
        self.tag_id = tag_id
        self.max_steps = max_steps
        self.truncation = truncation
        self.window_overlap = self.max_length // 4 if window_overlap is None else window_overlap
        if self.pad_id == tag_id:
            # A pad that looked like a tag would be harmless (padding is masked out of the reads) but confusing.
            self.pad_id = tokenizer.eos_token_id or 0

    def format(self, problem: str, steps: list[str]) -> str:
        """The PRM's input text for ``problem`` and ``steps``, one step tag after each step (a kind that builds its
        token rows itself overrides [`step_rows`] instead)."""
        raise NotImplementedError(f"{type(self).__name__} builds its token rows itself (step_rows)")

    def step_rows(self, problem: str, steps: list[str]) -> Callable[[int, int], TaggedRow]:
        """The rows of one pair: a function of ``(start, end)`` giving the token row of ``problem`` with
        ``steps[start:end]`` and the position of each of those steps' tags in it (the truncation policies ask for
        several ranges). Here: [`format`]'s text, tokenised whole, checked to hold one tag per step."""

        @cache
        def row(start: int, end: int) -> TaggedRow:
            ids = self.tokenizer.encode(self.format(problem, steps[start:end]))
            tags = [k for k, token in enumerate(ids) if token == self.tag_id]
            if len(tags) != end - start:
                raise ValueError(
                    f"the PRM tokenizer produced {len(tags)} step tags for {end - start} steps; the step tag "
                    f"{self.step_tag!r} must tokenise to one token wherever it appears"
                )
            return ids, tags

        return row

    def encode(self, problem: str, completion: str) -> Encoded:
        """Token rows for one pair under the truncation policy, and the tag of each step in them."""
        steps, step_spans = located_steps(completion, self.parts, self.max_steps, self.thinking_prefilled)
        if not steps:
            return Encoded([], [], StepScores())
        n = len(steps)
        row = self.step_rows(problem, steps)

        def length_of(start: int, end: int) -> int:
            return len(row(start, end)[0])

        full, tags = row(0, n)
        if len(full) <= self.max_length:
            spans = [(0, 0, n)]
            dropped = 0
        elif self.truncation == "drop_oldest":
            dropped = drop_oldest(n, length_of, self.max_length)
            spans = [(dropped, dropped, n)] if dropped < n else []
        else:
            step_tokens = [tags[0] + 1] + [b - a for a, b in pairwise(tags)]
            windows, lost = plan_windows(n, length_of, self.max_length, self.window_overlap, step_tokens)
            spans = [(w.context, w.first, w.end) for w in windows]
            dropped = len(lost)
        rows = [row(context, end) for context, _, end in spans]
        result = StepScores(num_steps=n, dropped_steps=dropped)
        return Encoded([ids for ids, _ in rows], [reads for _, reads in rows], result,
                       [range(f, e) for _, f, e in spans], step_spans)

    def finish(self, encoded: Encoded, outputs: list[list[float]]) -> StepScores:
        """Keep each row's scores of the steps it scores (its last ones); context steps were scored elsewhere."""
        scores: list[float] = []
        indices: list[int] = []
        for steps, out in zip(encoded.steps, outputs):
            scores += out[len(out) - len(steps) :]
            indices += list(steps)
        spans = [encoded.step_spans[i] for i in indices]
        return replace(encoded.result, step_scores=scores, step_indices=indices, step_spans=spans)
