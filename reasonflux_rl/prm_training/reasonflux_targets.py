"""ReasonFlux-PRM's step targets (arXiv 2506.18896, sec. 4.1), as ``prm label --method reasonflux`` makes them.

Each step gets three scores in [0, 1] and their fusion:

- **alignment**: how closely a thinking step matches the response step it is matched with, the cosine similarity of
  the two under a sentence encoder ([`SentenceEncoder`]), clipped to [0, 1]. Matching (``match``): ``position``
  (the maintainer's rule, ReasonFlux issue 17) pairs thinking step t with response step t and merges the thinking
  steps past the last response step into the block of the step before, so every step of that block is scored as
  the block; ``best`` takes, for each step, the most similar step of the other part. A response step gets the
  alignment of the thinking block it is matched with (``best``: its most similar thinking step); a row with no
  thinking or no response has none.
- **quality**: a judge's probability that the step is right given the problem, the steps before it in its part and
  the response ([`StepQuery`]; [`LocalJudge`] asks a local causal LM with [`QUALITY_PROMPT`]).
- **coherence**: the contrastive score of step t against step t-1 of the same part,
  ``softmax([sim(t-1, t), sim(t-1, n_1), ..., sim(t-1, n_K)] / temperature)[0]``, the probability that the step
  really follows its predecessor against K negatives drawn from other rows' steps (the paper writes it as the log of
  this, a number <= 0; the probability keeps the targets in [0, 1]). The first step of a part has no coherence.
- **fusion** (the paper's): ``r = sum_k softmax(s)_k * s_k`` over the scores a step has, so the largest score
  weighs most; a step with none has no target.

Why the defaults: ``temperature`` 0.1 is PURE's and CLIP-style contrastive practice (on cosine similarities, a gap
of 0.1 is a factor e); 8 negatives put chance at 1/9, low enough that a coherent step stands out, small enough that
a chunk of rows always has them. Every choice here that the paper leaves open is named in docs/prm-training.md.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm_training.fields import LabelledPair
from reasonflux_rl.trajectory import step_spans, trajectory_regions

MATCH_RULES: tuple[str, ...] = ("position", "best")
COMPONENTS: tuple[str, ...] = ("alignment", "quality", "coherence")
QUALITY_PROMPT = Path(__file__).with_name("step_quality_prompt.txt")
QUERY_FIELDS: tuple[str, ...] = ("problem", "before", "step", "response")

Encode = Callable[[Sequence[str]], torch.Tensor]


@dataclass(frozen=True)
class PairSteps:
    """A pair's steps by part, as the scorer splits them (blank-line paragraphs of the thinking and the response).

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.fields import LabelledPair
    >>> from reasonflux_rl.prm_training.reasonflux_targets import PairSteps
    >>> steps = PairSteps.of(LabelledPair(0, "1+1?", "<think>\\nAdd.\\n\\nSum 2.\\n</think>\\n\\nIt is 2."))
    >>> steps.thinking, steps.response
    (('Add.', 'Sum 2.'), ('It is 2.',))

    ```
    """

    problem: str
    thinking: tuple[str, ...]
    response: tuple[str, ...]

    @classmethod
    def of(cls, pair: LabelledPair, thinking_prefilled: bool = False) -> PairSteps:
        regions = trajectory_regions(pair.completion, thinking_prefilled)
        thinking, response = ([pair.completion[s:e] for s, e in step_spans(pair.completion, *region)]
                              for region in regions)
        return cls(str(pair.problem), tuple(thinking), tuple(response))

    def labelled(self, parts: str) -> list[tuple[str, int]]:
        """The ``(part, index)`` of each step that gets a target, in the scorer's order for ``parts``."""
        chosen = {"both": ("thinking", "response"), "thinking": ("thinking",), "response": ("response",)}[parts]
        return [(part, k) for part in chosen for k in range(len(getattr(self, part)))]


@dataclass(frozen=True)
class StepQuery:
    """What the judge of quality reads for one step: the problem, the steps before it in its part, the step, the
    response."""

    problem: str
    before: tuple[str, ...]
    step: str
    response: str


class StepJudge(Protocol):
    """Rates steps: ``rate(queries)`` gives each query's probability in [0, 1] that its step is right."""

    def rate(self, queries: Sequence[StepQuery]) -> list[float]:
        ...


@dataclass(frozen=True)
class StepComponents:
    """One pair's targets, one entry per labelled step (``None``: that step has no such score)."""

    fused: list[float | None]
    alignment: list[float | None]
    quality: list[float | None]
    coherence: list[float | None]


def fuse(scores: Sequence[float | None]) -> float | None:
    """The paper's fusion of one step's scores: ``sum_k softmax(s)_k * s_k`` over those present.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.reasonflux_targets import fuse
    >>> round(fuse([1.0, 0.0, None]), 4)  # e / (1 + e): the larger score weighs more
    0.7311
    >>> fuse([0.5, 0.5, 0.5]), fuse([None, None, None])
    (0.5, None)

    ```
    """
    present = [s for s in scores if s is not None]
    if not present:
        return None
    weights = [math.exp(s - max(present)) for s in present]
    return sum(w * s for w, s in zip(weights, present)) / sum(weights)


def position_blocks(thinking_count: int, response_count: int) -> list[int]:
    """The ``position`` rule: the response step each thinking step is matched with; the thinking steps past the
    last response step join the block of the step before (ReasonFlux issue 17).

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.reasonflux_targets import position_blocks
    >>> position_blocks(5, 3), position_blocks(2, 3), position_blocks(2, 0)
    ([0, 1, 2, 2, 2], [0, 1], [])

    ```
    """
    return [min(t, response_count - 1) for t in range(thinking_count)] if response_count else []


class _Vectors:
    """The unit vectors of a batch's texts, each text encoded once."""

    def __init__(self, texts: Sequence[str], encode: Encode) -> None:
        unique = list(dict.fromkeys(texts))
        self.index = {text: k for k, text in enumerate(unique)}
        vectors = encode(unique) if unique else torch.zeros(0, 1)
        if vectors.shape[0] != len(unique):
            raise RuntimeError(f"the encoder gave {vectors.shape[0]} vectors for {len(unique)} texts")
        self.vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)

    def similarity(self, a: str, b: str) -> float:
        return float(self.vectors[self.index[a]] @ self.vectors[self.index[b]])


def _blocks(steps: PairSteps) -> list[str]:
    """The thinking block of each response step under the ``position`` rule ('' where none is matched)."""
    blocks = [[] for _ in steps.response]
    for t, j in enumerate(position_blocks(len(steps.thinking), len(steps.response))):
        blocks[j].append(steps.thinking[t])
    return ["\n\n".join(block) for block in blocks]


def _alignment(steps: PairSteps, vectors: _Vectors, match: str) -> dict[tuple[str, int], float | None]:
    out: dict[tuple[str, int], float | None] = {}
    if not steps.thinking or not steps.response:
        return out
    clip = lambda s: min(max(s, 0.0), 1.0)  # noqa: E731
    if match == "best":
        for part, other in (("thinking", "response"), ("response", "thinking")):
            for k, step in enumerate(getattr(steps, part)):
                out[part, k] = clip(max(vectors.similarity(step, o) for o in getattr(steps, other)))
        return out
    blocks = _blocks(steps)
    for t, j in enumerate(position_blocks(len(steps.thinking), len(steps.response))):
        out["thinking", t] = clip(vectors.similarity(blocks[j], steps.response[j]))
    for j, block in enumerate(blocks):
        out["response", j] = clip(vectors.similarity(block, steps.response[j])) if block else None
    return out


def coherence_score(similarities: Sequence[float], temperature: float) -> float:
    """``softmax(similarities / temperature)[0]``: the first is the true predecessor's, the rest the negatives'.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.reasonflux_targets import coherence_score
    >>> round(coherence_score([0.9, 0.8], 0.1), 4), coherence_score([0.5, 0.5, 0.5, 0.5], 0.1)
    (0.7311, 0.25)

    ```
    """
    logits = [s / temperature for s in similarities]
    top = max(logits)
    weights = [math.exp(x - top) for x in logits]
    return weights[0] / sum(weights)


def _coherence(batch: Sequence[PairSteps], row: int, vectors: _Vectors, temperature: float, negatives: int,
               rng: random.Random) -> dict[tuple[str, int], float | None]:
    others = [s for k, steps in enumerate(batch) if k != row for s in (*steps.thinking, *steps.response)]
    out: dict[tuple[str, int], float | None] = {}
    for part in ("thinking", "response"):
        steps = getattr(batch[row], part)
        for k in range(1, len(steps)):
            drawn = rng.sample(others, min(negatives, len(others)))
            out[part, k] = (coherence_score([vectors.similarity(steps[k - 1], s) for s in (steps[k], *drawn)],
                                            temperature) if drawn else None)
    return out


def reasonflux_targets(batch: Sequence[PairSteps], encode: Encode, judge: StepJudge, *, parts: str = "both",
                       match: str = "position", temperature: float = 0.1, negatives: int = 8,
                       seed: int = 0) -> list[StepComponents]:
    """The targets of every labelled step of ``batch`` (see the module docstring): the texts are encoded in one call
    of ``encode`` (texts to unit-normalisable vectors, one row each), the steps rated in one call of ``judge.rate``,
    the coherence negatives drawn from the other rows of ``batch`` with ``random.Random(seed)``.

    Example (an encoder that sees only whether a text mentions 2, and a judge that trusts every step):
    ```python
    >>> import torch
    >>> from reasonflux_rl.prm_training.reasonflux_targets import PairSteps, reasonflux_targets
    >>> encode = lambda texts: torch.tensor([[1.0, 0.0] if "2" in t else [0.0, 1.0] for t in texts])
    >>> class Trusting:
    ...     def rate(self, queries):
    ...         return [1.0] * len(queries)
    >>> pair = PairSteps("1+1?", thinking=("Add 1 and 1.", "It is 2."), response=("So 2.",))
    >>> [row.alignment for row in reasonflux_targets([pair], encode, Trusting())]
    [[1.0, 1.0, 1.0]]
    >>> [row.coherence for row in reasonflux_targets([pair], encode, Trusting())]  # no other row: no negatives
    [[None, None, None]]

    ```
    (``position``: both thinking steps form the block of the one response step, and the block mentions 2.)
    """
    if match not in MATCH_RULES:
        raise ConfigError(f"match={match!r} is not one of {list(MATCH_RULES)}")
    if not temperature > 0 or negatives < 0:
        raise ConfigError(f"temperature={temperature} must be > 0 and negatives={negatives} >= 0")
    labelled = [steps.labelled(parts) for steps in batch]
    blocks = [_blocks(steps) if match == "position" else [] for steps in batch]
    texts = [s for steps, merged in zip(batch, blocks) for s in (*steps.thinking, *steps.response, *merged) if s]
    vectors = _Vectors(texts, encode)
    queries = [StepQuery(steps.problem, getattr(steps, part)[:k], getattr(steps, part)[k], "\n\n".join(steps.response))
               for steps, keys in zip(batch, labelled) for part, k in keys]
    ratings = iter(_checked_ratings(judge.rate(queries), len(queries)))
    rng = random.Random(seed)
    out = []
    for row, (steps, keys) in enumerate(zip(batch, labelled)):
        alignment = _alignment(steps, vectors, match)
        coherence = _coherence(batch, row, vectors, temperature, negatives, rng)
        scores = {"alignment": [alignment.get(key) for key in keys], "quality": [next(ratings) for _ in keys],
                  "coherence": [coherence.get(key) for key in keys]}
        fused = [fuse([scores[c][k] for c in COMPONENTS]) for k in range(len(keys))]
        out.append(StepComponents(fused, **scores))
    return out


def _checked_ratings(ratings: Sequence[Any], expected: int) -> list[float]:
    """The judge's ratings, refused unless there is one number in [0, 1] per query (a judge that fails must say
    so, never give a silent zero)."""
    if len(ratings) != expected:
        raise RuntimeError(f"the judge gave {len(ratings)} ratings for {expected} steps")
    for k, rating in enumerate(ratings):
        if not isinstance(rating, (int, float)) or not 0.0 <= float(rating) <= 1.0:
            raise RuntimeError(f"the judge's rating of step {k} is {rating!r}, not a probability in [0, 1]")
    return [float(r) for r in ratings]


def read_prompt(path: str | Path, names: Sequence[str] = QUERY_FIELDS) -> str:
    """The prompt in the file at ``path``, refused unless it has a ``{name}`` for each of ``names`` (default: the
    judge's ``{problem}``, ``{before}``, ``{step}`` and ``{response}``)."""
    template = Path(path).read_text()
    missing = [f"{{{name}}}" for name in names if f"{{{name}}}" not in template]
    if missing:
        raise ConfigError(f"the prompt {path} lacks {', '.join(missing)}")
    return template


def fill(template: str, /, **values: str) -> str:
    """``template`` with each ``{name}`` of ``values`` replaced in one pass: not ``str.format``, since a prompt may
    hold braces of its own (``\\boxed{}``) and a value that reads ``{step}`` must stay as written.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.reasonflux_targets import fill
    >>> fill("{problem}: {step} {}", problem="say {step}", step="2")
    'say {step}: 2 {}'

    ```
    """
    pattern = re.compile(r"\{(" + "|".join(map(re.escape, values)) + r")\}")
    return pattern.sub(lambda m: values[m.group(1)], template)


def fill_prompt(template: str, query: StepQuery) -> str:
    """The judge's ``template`` filled with ``query`` (``{before}``: the steps before, or ``(none)``)."""
    return fill(template, problem=query.problem, before="\n\n".join(query.before) or "(none)", step=query.step,
                response=query.response)


class SentenceEncoder:
    """A sentence encoder from any transformers encoder checkpoint (``AutoModel``): the mean of the last hidden
    states over a text's tokens, batched (``batch_size`` texts, longest first), on ``device`` (default: cuda when
    available), without gradients.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm_training.reasonflux_targets import SentenceEncoder
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> encoder = SentenceEncoder(str(write_tiny_models(tempfile.mkdtemp()).policy), device="cpu")
    >>> vectors = encoder(["Add 1 and 1.", "It is 2.", "Add 1 and 1."])
    >>> tuple(vectors.shape), bool((vectors[0] - vectors[2]).abs().max() < 1e-5)
    ((3, 64), True)

    ```
    """

    def __init__(self, path: str, *, device: str | None = None, batch_size: int = 32, max_length: int = 512) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        order = sorted(range(len(texts)), key=lambda k: -len(texts[k]))
        out = torch.zeros(len(texts), self.model.config.hidden_size)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            encoded = self.tokenizer([texts[k] for k in chosen], return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.max_length).to(self.device)
            hidden = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[chosen] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu()
        return out


class LocalJudge:
    """A [`StepJudge`] on a local causal LM: each query written into ``prompt`` (a file with ``{problem}``,
    ``{before}``, ``{step}`` and ``{response}``; default [`QUALITY_PROMPT`]), put on the model's chat template when
    it has one, and rated ``P(yes) / (P(yes) + P(no))`` of the first answer token (``yes`` and ``no`` must each be
    one token of the judge's tokenizer); it also [`write`]s, greedily.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm_training.reasonflux_targets import LocalJudge, StepQuery
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> judge = LocalJudge(str(write_tiny_models(tempfile.mkdtemp()).policy), yes="1", no="0", device="cpu")
    >>> [0.0 < r < 1.0 for r in judge.rate([StepQuery("1+1?", (), "It is 2.", "So 2.")] * 2)]
    [True, True]

    ```
    """

    def __init__(self, path: str, *, prompt: str | Path = QUALITY_PROMPT, yes: str = "Yes", no: str = "No",
                 device: str | None = None, batch_size: int = 8) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.template = read_prompt(prompt)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.words = (yes, no)
        self.model = AutoModelForCausalLM.from_pretrained(path).to(self.device).eval()
        self.batch_size = batch_size

    @property
    def answer_ids(self) -> list[int]:
        """The token ids of the answers ``yes`` and ``no``, each refused unless it is one token."""
        return [self._one_token(word) for word in self.words]

    def _one_token(self, word: str) -> int:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise ConfigError(f"the judge's answer {word!r} is {len(ids)} tokens of its tokenizer, not one: name "
                              "another (judge_yes / judge_no)")
        return ids[0]

    def prompt(self, query: StepQuery) -> str:
        """The judge's input for ``query``."""
        return self._chat(fill_prompt(self.template, query))

    def _chat(self, text: str) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        return text

    @torch.no_grad()
    def write(self, prompts: Sequence[str], max_tokens: int) -> list[str]:
        """The judge's greedy answer to each of ``prompts`` (a user message each), at most ``max_tokens`` tokens:
        the template writer of ``trajectory_target: template``."""
        answers: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            encoded = self.tokenizer([self._chat(p) for p in prompts[start : start + self.batch_size]],
                                     return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            out = self.model.generate(**encoded, max_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
            answers += self.tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
        return answers

    @torch.no_grad()
    def rate(self, queries: Sequence[StepQuery]) -> list[float]:
        answer_ids = self.answer_ids
        prompts = [self.prompt(q) for q in queries]
        # Batches of similar lengths pad little; only the last position's logits are needed (a full [batch, length,
        # vocabulary] tensor of a 150k-word judge is gigabytes).
        order = sorted(range(len(prompts)), key=lambda k: -len(prompts[k]))
        ratings = [0.0] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            encoded = self.tokenizer([prompts[k] for k in chosen], return_tensors="pt", padding=True,
                                     add_special_tokens=False)
            logits = self.model(**encoded.to(self.device), logits_to_keep=1).logits[:, -1, answer_ids].float()
            for k, rating in zip(chosen, torch.softmax(logits, dim=-1)[:, 0].tolist()):
                ratings[k] = rating
        return ratings
