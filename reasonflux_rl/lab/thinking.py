"""The lab's task written as R1 writes: thinking that explores and corrects itself, then a clean response.

A solution of a [`~reasonflux_rl.lab.task.Problem`] is a trajectory-response pair. The thinking, one step per
paragraph (as the scorer splits them), may

- make a slip and notice it in the next paragraph: ``Step 2: G(7) = 3``, ``Wait, G(7) is 1, not 3.``, then the step
  again (or ``Wait, I should apply G to 7, not 6.`` for a step that started from the wrong result);
- make a slip that is never noticed (the chain goes on from what was written);
- start down a wrong line (the functions in the wrong order) and abandon it: ``No: H comes first. Start again from
  5.``, then the chain from step 1;
- re-check a step: ``Check: G(7) = 1. Yes.``.

After ``</think>`` the response restates the chain the thinking ended with, one step per paragraph, and boxes its
last result. [`judge`] reads any such text back and says, for every thinking step, whether it is right, wrong and
later corrected, wrong and never corrected, a correction, or a check, and for every response step (the answer last)
whether it is right; [`write_solution`] writes solutions with the rates of [`ThinkingStyle`].
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from reasonflux_rl.lab.task import BOXED, DIGITS, FUNCTIONS, Problem, Step, chain_labels, read_step, solve

RIGHT = "right"
WRONG_CORRECTED = "wrong_corrected"
WRONG_UNCORRECTED = "wrong_uncorrected"
CORRECTION = "correction"
CHECK = "check"
KINDS = (RIGHT, WRONG_CORRECTED, WRONG_UNCORRECTED, CORRECTION, CHECK)
# The kinds of response steps (the answer is one), for figures by kind.
RESPONSE_RIGHT = "response_right"
RESPONSE_WRONG = "response_wrong"

_VALUE_FIX = re.compile(r"^Wait, ([A-Z])\((\d)\) is (\d), not (\d)\.$")
_INPUT_FIX = re.compile(r"^Wait, I should apply ([A-Z]) to (\d), not (\d)\.$")
_RESTART = re.compile(r"^No: ([A-Z]) comes first\. Start again from (\d)\.$")
_CHECK = re.compile(r"^Check: ([A-Z])\((\d)\) = (\d)\. Yes\.$")
# Until a correction reaches it, a wrong thinking step is wrong; at the end it is wrong and never corrected.
_WRONG = "wrong"


@dataclass(frozen=True)
class ThinkingStyle:
    """How a written solution thinks: per step, the chance of a slip noticed at once (``corrected``) and of one never
    noticed (``uncorrected``), of re-checking a right step (``recheck``); per solution, the chance of first going
    down the wrong line for 1-3 steps and abandoning it (``abandoned``).

    Example:
    ```python
    >>> from reasonflux_rl.lab.thinking import ThinkingStyle
    >>> ThinkingStyle(corrected=0.2).uncorrected
    0.05
    >>> ThinkingStyle(corrected=0.8, uncorrected=0.4)
    Traceback (most recent call last):
    ...
    ValueError: corrected + uncorrected = 1.2: the chances of a step's slips must sum to at most 1

    ```
    """

    corrected: float = 0.15
    uncorrected: float = 0.05
    abandoned: float = 0.15
    recheck: float = 0.1

    def __post_init__(self) -> None:
        for name in ("corrected", "uncorrected", "abandoned", "recheck"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if self.corrected + self.uncorrected > 1.0:
            raise ValueError(f"corrected + uncorrected = {self.corrected + self.uncorrected:.1f}: the chances of a "
                             "step's slips must sum to at most 1")


@dataclass(frozen=True)
class Solution:
    """A written trajectory-response pair: the thinking paragraphs and the response paragraphs (the answer last)."""

    thinking: tuple[str, ...]
    response: tuple[str, ...]

    @property
    def completion(self) -> str:
        """The completion after the pre-filled ``<think>\\n``."""
        return "\n\n".join(self.thinking) + "\n</think>\n\n" + "\n\n".join(self.response)


@dataclass(frozen=True)
class Judgement:
    """What [`judge`] says of a solution: one of [`KINDS`] per thinking step, and per response step (the answer
    last) whether it is right; ``steps`` of the two in the scorer's order."""

    thinking: tuple[str, ...]
    response: tuple[bool, ...]

    @property
    def kinds(self) -> list[str]:
        """Per step in the scorer's order, its kind: the thinking's, then ``response_right`` or ``response_wrong``."""
        return [*self.thinking, *(RESPONSE_RIGHT if right else RESPONSE_WRONG for right in self.response)]

    @property
    def labels(self) -> list[bool]:
        """Per step in the scorer's order, whether it is no error: a corrected detour, a correction and a check are
        not; a wrong thinking step never corrected, or a wrong response step, is."""
        return [kind != WRONG_UNCORRECTED for kind in self.thinking] + list(self.response)


def _slip(step: Step, rng: random.Random) -> tuple[Step, str]:
    """A wrong ``step`` and the paragraph that corrects it."""
    if rng.random() < 0.5:
        wrong = rng.choice([d for d in range(DIGITS) if d != step.result])
        return (Step(step.number, step.function, step.digit, wrong),
                f"Wait, {step.function}({step.digit}) is {step.result}, not {wrong}.")
    digit = rng.choice([d for d in range(DIGITS) if d != step.digit])
    return (Step(step.number, step.function, digit, FUNCTIONS[step.function][digit]),
            f"Wait, I should apply {step.function} to {step.digit}, not {digit}.")


def _abandoned_line(problem: Problem, rng: random.Random) -> list[str]:
    """A start with the functions in the wrong order, 1-3 steps long, and the paragraph that abandons it."""
    value, paragraphs = problem.start, []
    for number in range(1, rng.randint(1, min(3, problem.times)) + 1):
        function = problem.second if number % 2 == 1 else problem.first
        step = Step(number, function, value, FUNCTIONS[function][value])
        paragraphs.append(step.text)
        value = step.result
    return [*paragraphs, f"No: {problem.first} comes first. Start again from {problem.start}."]


def write_solution(problem: Problem, style: ThinkingStyle, rng: random.Random) -> Solution:
    """A solution of ``problem`` thinking in ``style``: the response restates the chain the thinking ended with (an
    uncorrected slip included) and boxes its last result.

    Example:
    ```python
    >>> import random
    >>> from reasonflux_rl.lab.task import Problem
    >>> from reasonflux_rl.lab.thinking import ThinkingStyle, write_solution
    >>> clean = write_solution(Problem(5, "H", "G", 2), ThinkingStyle(0, 0, 0, 0), random.Random(0))
    >>> print(clean.completion)
    Step 1: H(5) = 7
    <BLANKLINE>
    Step 2: G(7) = 1
    </think>
    <BLANKLINE>
    Step 1: H(5) = 7
    <BLANKLINE>
    Step 2: G(7) = 1
    <BLANKLINE>
    The answer is $\\boxed{1}$.
    >>> fixed = write_solution(Problem(5, "H", "G", 2), ThinkingStyle(1, 0, 0, 0), random.Random(0))
    >>> fixed.thinking[:3]
    ('Step 1: H(5) = 4', 'Wait, H(5) is 7, not 4.', 'Step 1: H(5) = 7')

    ```
    """
    thinking = _abandoned_line(problem, rng) if rng.random() < style.abandoned else []
    chain, value = [], problem.start
    for right in solve(problem):
        step = Step(right.number, right.function, value, FUNCTIONS[right.function][value])
        draw = rng.random()
        if draw < style.corrected:
            wrong, correction = _slip(step, rng)
            thinking += [wrong.text, correction]
        elif draw < style.corrected + style.uncorrected:
            step, _ = _slip(step, rng)
        thinking.append(step.text)
        if step.is_right_after(value, problem) and rng.random() < style.recheck:
            thinking.append(f"Check: {step.function}({step.digit}) = {step.result}. Yes.")
        chain.append(step)
        value = step.result
    return Solution(tuple(thinking), (*(s.text for s in chain), f"The answer is $\\boxed{{{value}}}$."))


class _Thinking:
    """The judge's reading of the thinking so far: the kind of every paragraph, and the chain in force (the
    paragraph index of each of its steps) from which the next step must go on."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.kinds: list[str] = []
        self.chain: list[tuple[int, Step]] = []

    @property
    def value(self) -> int:
        return self.chain[-1][1].result if self.chain else self.problem.start

    def step(self, step: Step) -> None:
        right = step.number == len(self.chain) + 1 and step.is_right_after(self.value, self.problem)
        self.chain.append((len(self.kinds), step))
        self.kinds.append(RIGHT if right else _WRONG)

    def undo_from(self, position: int, truthful: bool) -> None:
        """A correction of the chain's step at ``position`` (and so of all after it): the wrong ones among them are
        corrected, the chain goes back to before it; an untruthful correction is itself a wrong step."""
        if truthful:
            for index, _ in self.chain[position:]:
                if self.kinds[index] == _WRONG:
                    self.kinds[index] = WRONG_CORRECTED
            del self.chain[position:]
        self.kinds.append(CORRECTION if truthful else _WRONG)

    def previous_value(self, position: int) -> int:
        return self.chain[position - 1][1].result if position else self.problem.start


def _last_position(thinking: _Thinking, function: str, digit: int, result: int | None = None) -> int | None:
    """Where in the chain the last step ``function(digit)`` (``= result``) stands."""
    for position in range(len(thinking.chain) - 1, -1, -1):
        step = thinking.chain[position][1]
        if step.function == function and step.digit == digit and result in (None, step.result):
            return position
    return None


def _read_thinking_paragraph(thinking: _Thinking, paragraph: str) -> bool:
    """Judge one thinking paragraph into ``thinking``; False when it is none of the lab's forms."""
    problem = thinking.problem
    if step := read_step(paragraph):
        thinking.step(step)
    elif match := _VALUE_FIX.match(paragraph):
        function, digit, said, was = match[1], int(match[2]), int(match[3]), int(match[4])
        position = _last_position(thinking, function, digit, was) if function in FUNCTIONS else None
        truthful = position is not None and FUNCTIONS[function][digit] == said != was
        thinking.undo_from(position if truthful else len(thinking.chain), truthful)
    elif match := _INPUT_FIX.match(paragraph):
        function, should, was = match[1], int(match[2]), int(match[3])
        position = _last_position(thinking, function, was) if function in FUNCTIONS else None
        truthful = position is not None and should != was and thinking.previous_value(position) == should
        thinking.undo_from(position if truthful else len(thinking.chain), truthful)
    elif match := _RESTART.match(paragraph):
        truthful = match[1] == problem.first and int(match[2]) == problem.start
        thinking.undo_from(0 if truthful else len(thinking.chain), truthful)
    elif match := _CHECK.match(paragraph):
        function, digit, result = match[1], int(match[2]), int(match[3])
        last = thinking.chain[-1][1] if thinking.chain else None
        checks_last = last is not None and (last.function, last.digit, last.result) == (function, digit, result)
        thinking.kinds.append(CHECK if checks_last and FUNCTIONS[function][digit] == result else _WRONG)
    else:
        return False
    return True


def _judge_response(problem: Problem, paragraphs: Sequence[str]) -> tuple[bool, ...] | None:
    """Each response step right after the previous one (from the start), and the answer the last result."""
    *steps, answer = paragraphs
    found, chain = BOXED.search(answer), chain_labels(problem, steps)
    if found is None or chain is None:
        return None
    labels, value = chain
    return (*labels, int(found[1]) == value)


def judge(problem: Problem, completion: str) -> Judgement | None:
    """The step-by-step judge of R1-style solutions: the kind of every thinking paragraph, whether every response
    paragraph is right; ``None`` for a completion with a paragraph of none of the lab's forms or without
    ``</think>`` and a boxed answer.

    A thinking step is right when it is the next step of the chain in force and computes it; a wrong one is
    corrected when a later truthful correction (``Wait, ...``, ``No: ... Start again ...``) takes the chain back to
    before it, else never corrected. A correction or a check that states something false is a wrong step itself.

    Example:
    ```python
    >>> from reasonflux_rl.lab.task import Problem
    >>> from reasonflux_rl.lab.thinking import judge
    >>> thinking = ["Step 1: H(5) = 7", "Step 2: G(7) = 3", "Wait, G(7) is 1, not 3.", "Step 2: G(7) = 1",
    ...             "Check: G(7) = 1. Yes."]
    >>> response = ["Step 1: H(5) = 7", "Step 2: G(7) = 1", "The answer is $\\\\boxed{1}$."]
    >>> completion = "\\n\\n".join(thinking) + "\\n</think>\\n\\n" + "\\n\\n".join(response)
    >>> verdict = judge(Problem(5, "H", "G", 2), completion)
    >>> verdict.thinking
    ('right', 'wrong_corrected', 'correction', 'right', 'check')
    >>> verdict.response, verdict.labels
    ((True, True, True), [True, True, True, True, True, True, True, True])

    ```
    """
    head, close, tail = completion.partition("</think>")
    if not close:
        return None
    thinking = _Thinking(problem)
    for paragraph in (p.strip() for p in head.strip().split("\n\n")):
        if not _read_thinking_paragraph(thinking, paragraph):
            return None
    response = _judge_response(problem, [p.strip() for p in tail.strip().split("\n\n")])
    if response is None:
        return None
    kinds = tuple(WRONG_UNCORRECTED if kind == _WRONG else kind for kind in thinking.kinds)
    return Judgement(kinds, response)


def labelled_r1_solutions(problems_: Sequence[Problem], count: int, style: ThinkingStyle,
                          rng: random.Random) -> list[dict]:
    """``count`` solutions of problems drawn from ``problems_``, written in ``style``, as rows ``prm label --method
    given`` reads: ``problem``, ``completion``, the gold ``solution``, ``labels`` (per step, whether it is no error:
    [`Judgement.labels`]) and ``kinds`` ([`Judgement.kinds`]); ``response`` holds the response alone, the clean
    step-by-step solution a PRM that never sees thinking is trained on ([`response_rows`]).

    Example:
    ```python
    >>> import random
    >>> from reasonflux_rl.lab.task import Problem
    >>> from reasonflux_rl.lab.thinking import ThinkingStyle, labelled_r1_solutions
    >>> [row] = labelled_r1_solutions([Problem(5, "H", "G", 2)], 1, ThinkingStyle(1, 0, 0, 0), random.Random(0))
    >>> row["kinds"]
    ['wrong_corrected', 'correction', 'right', 'wrong_corrected', 'correction', 'right', 'response_right', \
'response_right', 'response_right']
    >>> row["labels"].count(False), row["solution"]
    (0, '1')

    ```
    """
    rows = []
    for _ in range(count):
        problem = rng.choice(problems_)
        solution = write_solution(problem, style, rng)
        verdict = judge(problem, solution.completion)
        rows.append({"problem": problem.text, "completion": solution.completion, "solution": str(problem.answer),
                     "labels": verdict.labels, "kinds": verdict.kinds, "response": "\n\n".join(solution.response)})
    return rows


def response_rows(rows: Sequence[dict]) -> list[dict]:
    """The rows of [`labelled_r1_solutions`] as a standard PRM is trained on them: the response alone, as a
    completion that closes an empty thinking, labelled step by step.

    Example:
    ```python
    >>> import random
    >>> from reasonflux_rl.lab.task import Problem
    >>> from reasonflux_rl.lab.thinking import ThinkingStyle, labelled_r1_solutions, response_rows
    >>> rows = labelled_r1_solutions([Problem(5, "H", "G", 2)], 1, ThinkingStyle(0, 1, 0, 0), random.Random(0))
    >>> [row] = response_rows(rows)
    >>> row["completion"].startswith("</think>"), row["labels"], row["kinds"][0]
    (True, [False, False, True], 'response_wrong')

    ```
    """
    out = []
    for row in rows:
        steps = len(row["response"].split("\n\n"))
        out.append({"problem": row["problem"], "completion": "</think>\n\n" + row["response"],
                    "solution": row["solution"], "labels": row["labels"][-steps:], "kinds": row["kinds"][-steps:]})
    return out
