"""Step and trajectory targets for trajectory-response pairs: the labelling methods of ``prm label``.

- ``given``: the targets are in the data already (TRL's stepwise ``labels``, PRM800K or Math-Shepherd as ``trl-lib``
  ships them, or any column of one number in [0, 1] per step); [`~reasonflux_rl.prm_training.fields`] checks them.
- ``mc`` (Math-Shepherd, arXiv 2312.08935, section 3.3): from the prefix that ends with step t, K continuations of a
  completer policy, each judged by the package's outcome reward against the gold answer; the soft target is the
  fraction that reach it, the hard one (``hard``) whether any does. The last step's prefix is the whole
  completion, so its target is the row's own outcome: no rollout is spent on it.
- ``reasonflux``: the paper's own targets, alignment, quality and coherence fused by a softmax
  ([`~reasonflux_rl.prm_training.reasonflux_targets`]).

The trajectory target is the row's own outcome (``outcome``: 1 when its final answer equals the gold, by
math-verify), the data's (``given``), the paper's template-guided one (``template``:
[`~reasonflux_rl.prm_training.template_target`]), or none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from reasonflux_rl.prm.engine.format import located_steps
from reasonflux_rl.prm_training.fields import LabelledPair
from reasonflux_rl.trajectory import THINK_CLOSE, THINK_OPEN

METHODS: tuple[str, ...] = ("given", "mc", "reasonflux")
TRAJECTORY_TARGETS: tuple[str, ...] = ("outcome", "given", "none", "template")
# Each prefix ends a paragraph; the continuation starts the next one, as the steps are written.
STEP_BREAK = "\n\n"

Judge = Callable[[Sequence[str], Sequence[str]], list[float | None]]


class Completer(Protocol):
    """What ``mc`` continues step prefixes with: ``continuations(problems, prefixes, n)`` gives ``n`` texts for each
    (problem, prefix), each continuing the prefix."""

    def continuations(self, problems: Sequence[str], prefixes: Sequence[str], n: int) -> list[list[str]]:
        ...


@dataclass(frozen=True)
class Prefix:
    """The text of ``pair`` up to the end of its step ``step``, followed by a paragraph break: what a continuation
    of that step starts from.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.labels import step_prefixes
    >>> from reasonflux_rl.prm_training.fields import LabelledPair
    >>> pair = LabelledPair(0, "1+1?", "Add.\\n\\nSum: 2.\\n</think>\\n\\nSo 2.", steps=("Add.", "Sum: 2.", "So 2."))
    >>> [p.text for p in step_prefixes(pair)]
    ['Add.\\n\\n', 'Add.\\n\\nSum: 2.\\n\\n']

    ```
    """

    pair: LabelledPair
    step: int
    text: str


def step_prefixes(pair: LabelledPair, parts: str = "both", thinking_prefilled: bool = False) -> list[Prefix]:
    """The prefixes ``mc`` continues: one per step but the last (whose prefix is the whole completion)."""
    _, spans = located_steps(pair.completion, parts, None, thinking_prefilled)
    return [Prefix(pair, k, pair.completion[:end] + STEP_BREAK) for k, (_, end) in enumerate(spans[:-1])]


def judged_as_thinking(pair: LabelledPair, thinking_prefilled: bool) -> bool:
    """Whether a rollout of ``pair`` is judged as R1-style text (a rollout that never closes its thinking scores
    0): when the prompt opened the thinking, or the completion has a thinking of its own.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.labels import judged_as_thinking
    >>> from reasonflux_rl.prm_training.fields import LabelledPair
    >>> judged_as_thinking(LabelledPair(0, "1+1?", "Add.\\n</think>\\n\\n2"), False), judged_as_thinking(
    ...     LabelledPair(0, "1+1?", "So 2."), False)
    (True, False)

    ```
    """
    return thinking_prefilled or THINK_CLOSE in pair.completion or THINK_OPEN in pair.completion


def judged_text(pair: LabelledPair, text: str, thinking_prefilled: bool) -> str:
    """The text the outcome reward judges for a rollout (or the row's own completion): opened with ``<think>`` when
    the row is R1-style and the text has no tag, so a rollout that never closes its thinking scores 0 instead of
    being read as a plain answer.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.fields import LabelledPair
    >>> from reasonflux_rl.prm_training.labels import judged_text
    >>> pair = LabelledPair(0, "1+1?", "Add.\\n</think>\\n\\n\\\\boxed{2}")
    >>> judged_text(pair, "Add.\\n\\nthe answer may be \\\\boxed{2}", False)
    '<think>\\nAdd.\\n\\nthe answer may be \\\\boxed{2}'

    ```
    """
    if judged_as_thinking(pair, thinking_prefilled) and THINK_OPEN not in text and THINK_CLOSE not in text:
        return THINK_OPEN + "\n" + text
    return text


def mc_targets(pairs: Sequence[LabelledPair], outcomes: Sequence[float], completer: Completer, judge: Judge, *,
               rollouts: int, hard: bool = False, parts: str = "both",
               thinking_prefilled: bool = False) -> list[list[float]]:
    """Math-Shepherd's targets of every step of ``pairs``: for step t the fraction (``hard``: any) of ``rollouts``
    continuations from its prefix that ``judge(completions, golds)`` scores 1 (each completion as
    [`judged_text`] writes it); the last step's is the pair's own
    ``outcomes`` entry. All prefixes of all pairs go to ``completer`` in one call, so it can batch them.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.fields import LabelledPair
    >>> from reasonflux_rl.prm_training.labels import mc_targets
    >>> class Fixed:  # each prefix gets "bad" then "good" continuations
    ...     def continuations(self, problems, prefixes, n):
    ...         return [["\\n</think>\\n\\n\\\\boxed{1}", "\\n</think>\\n\\n\\\\boxed{2}"][:n] for _ in prefixes]
    >>> judge = lambda texts, golds: [float(t.endswith("{" + g + "}")) for t, g in zip(texts, golds)]
    >>> pair = LabelledPair(0, "1+1?", "Add.\\n\\nSum: 2.\\n</think>\\n\\n\\\\boxed{2}", steps=("a", "b", "c"),
    ...                     gold="2")
    >>> mc_targets([pair], [1.0], Fixed(), judge, rollouts=2), mc_targets([pair], [1.0], Fixed(), judge, rollouts=1)
    ([[0.5, 0.5, 1.0]], [[0.0, 0.0, 1.0]])
    >>> mc_targets([pair], [1.0], Fixed(), judge, rollouts=2, hard=True)
    [[1.0, 1.0, 1.0]]

    ```
    """
    prefixes = [p for pair in pairs for p in step_prefixes(pair, parts, thinking_prefilled)]
    texts = completer.continuations([p.pair.problem for p in prefixes], [p.text for p in prefixes], rollouts)
    if len(texts) != len(prefixes) or any(len(t) != rollouts for t in texts):
        raise RuntimeError(f"the completer gave {[len(t) for t in texts]} continuations for {len(prefixes)} prefixes "
                           f"x {rollouts}")
    scores = judge([judged_text(p.pair, p.text + c, thinking_prefilled)
                    for p, continuations in zip(prefixes, texts) for c in continuations],
                   [p.pair.gold for p in prefixes for _ in range(rollouts)])
    targets = {id(pair): [None] * (len(pair.steps) - 1) + [outcome] for pair, outcome in zip(pairs, outcomes)}
    for k, prefix in enumerate(prefixes):
        right = [s == 1.0 for s in scores[k * rollouts : (k + 1) * rollouts]]
        targets[id(prefix.pair)][prefix.step] = float(any(right)) if hard else sum(right) / rollouts
    return [targets[id(pair)] for pair in pairs]


def rollout_count(pairs: Sequence[LabelledPair], rollouts: int) -> int:
    """How many continuations ``mc`` samples for ``pairs``: steps but the last, times ``rollouts``.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.fields import LabelledPair
    >>> from reasonflux_rl.prm_training.labels import rollout_count
    >>> rollout_count([LabelledPair(0, "p", "c", steps=("a", "b", "c")), LabelledPair(1, "p", "c", steps=("a",))], 8)
    16

    ```
    """
    return sum(len(pair.steps) - 1 for pair in pairs) * rollouts


class PolicyCompleter:
    """A [`Completer`] on a policy sampler ([`~reasonflux_rl.tools.sampling.load_sampler`]): each prompt is the
    problem on the policy's chat template followed by the prefix (a ``<think>`` the template already opened is not
    written twice); ``seed`` seeds each call; ``on_batch(k)`` reports ``k`` continuations done.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm_training.labels import PolicyCompleter
    >>> from reasonflux_rl.tools.sampling import load_sampler
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> sampler = load_sampler(str(write_tiny_models(tempfile.mkdtemp()).policy), backend="transformers",
    ...                        max_new_tokens=3)
    >>> completer = PolicyCompleter(sampler)
    >>> completer.prompt("1+1?", "<think>\\nAdd.\\n\\n").endswith("<think>\\nAdd.\\n\\n"), completer.prompt(
    ...     "1+1?", "<think>\\nAdd.\\n\\n").count("<think>")
    (True, 1)
    >>> [len(c) for c in completer.continuations(["1+1?", "2+2?"], ["Add.\\n\\n", "Sum.\\n\\n"], 2)]
    [2, 2]

    ```
    """

    def __init__(self, sampler: object, *, seed: int = 0, on_batch: Callable[[int], None] | None = None) -> None:
        self.sampler = sampler
        self.seed = seed
        self.on_batch = on_batch

    def prompt(self, problem: str, prefix: str) -> str:
        """The generation prompt of ``problem`` followed by ``prefix``."""
        prompt = self.sampler.chat_prompt(problem)
        if prompt.rstrip().endswith(THINK_OPEN) and prefix.lstrip().startswith(THINK_OPEN):
            prefix = prefix.lstrip()[len(THINK_OPEN):].lstrip("\n")
        return prompt + prefix

    def continuations(self, problems: Sequence[str], prefixes: Sequence[str], n: int) -> list[list[str]]:
        prompts = [self.prompt(problem, prefix) for problem, prefix in zip(problems, prefixes)]
        return self.sampler.sample(prompts, n, seed=self.seed, on_batch=self.on_batch)
