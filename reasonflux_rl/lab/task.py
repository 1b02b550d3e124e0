"""The lab's task: apply two lookup functions in turn, written as R1-style reasoning.

The lab has four fixed functions on the digits 0-9 (permutations named F, G, H, K: [`FUNCTIONS`]); the policy learns
them by heart in warm-start training, as a model knows its arithmetic facts. A problem picks two of them, a start and
a count ("Start at 5. Apply H then G, in turn, 4 times."). Its solution thinks one step per paragraph
(``Step 1: H(5) = 7``, ``Step 2: G(7) = 1``, ...), closes the thinking and answers (``The answer is
$\\boxed{4}$.``). Each step can be checked on its own: it must apply the function whose turn it is, to the previous
step's result (the start for the first step), and give that function's value; the answer must be the last result.
That is what makes the task a lab for process rewards: a wrong final answer comes from a step that can be pointed at.

Why these steps: a 0.6M-parameter model learns them in a couple of minutes on a CPU (a table of 40 facts, the
previous line, the function named in the prompt), where it did not learn two-digit or even modular sums, nor a
per-problem rule table looked up by the previous result, in a comparable budget.

Training data for the warm-start policy carries corrupted steps at a set rate (a wrong value, or a step that does
not start from the previous result); the chain then goes on from what was written, so the policy learns to make
local, step-sized mistakes, which RL can remove. Problems are split into train and eval by a hash of their text, so
the two never share a problem, whatever the seed. The number of functions and the chain lengths set the difficulty.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Fixed once (random.Random(12345) shuffles of 0-9): the facts the warm-start policy and the PRM learn.
FUNCTIONS: dict[str, tuple[int, ...]] = {
    "F": (8, 7, 3, 5, 1, 2, 9, 4, 0, 6),
    "G": (8, 0, 4, 7, 9, 3, 6, 1, 5, 2),
    "H": (3, 2, 0, 9, 8, 7, 4, 6, 1, 5),
    "K": (7, 1, 4, 6, 2, 9, 0, 8, 5, 3),
}
DIGITS = 10
STEP_LINE = re.compile(r"^Step (\d+): ([A-Z])\((\d)\) = (\d)$")
BOXED = re.compile(r"\\boxed\{(\d)\}")
# One problem in EVAL_SHARE (by the hash of its text) is held out for evaluation.
EVAL_SHARE = 8


@dataclass(frozen=True)
class Problem:
    """Apply ``first`` and ``second`` in turn, ``times`` times, starting from ``start``.

    Example:
    ```python
    >>> from reasonflux_rl.lab.task import Problem
    >>> p = Problem(5, "H", "G", 4)
    >>> p.text
    'Start at 5. Apply H then G, in turn, 4 times.'
    >>> p.answer, p.function_at(3), p.split
    (4, 'H', 'train')

    ```
    """

    start: int
    first: str
    second: str
    times: int

    @property
    def text(self) -> str:
        """The problem as the policy reads it."""
        return f"Start at {self.start}. Apply {self.first} then {self.second}, in turn, {self.times} times."

    def function_at(self, number: int) -> str:
        """The function step ``number`` (from 1) applies."""
        return self.first if number % 2 == 1 else self.second

    @property
    def answer(self) -> int:
        """The right final result."""
        return solve(self)[-1].result

    @property
    def split(self) -> str:
        """``"eval"`` or ``"train"``, fixed by the problem's text."""
        digest = hashlib.sha256(self.text.encode()).digest()
        return "eval" if digest[0] % EVAL_SHARE == 0 else "train"


@dataclass(frozen=True)
class Step:
    """One thinking step ``Step number: function(digit) = result``.

    Example:
    ```python
    >>> from reasonflux_rl.lab.task import Problem, Step
    >>> p, step = Problem(5, "H", "G", 4), Step(2, "G", 7, 1)
    >>> step.text, step.is_right_after(7, p), step.is_right_after(6, p)
    ('Step 2: G(7) = 1', True, False)

    ```
    """

    number: int
    function: str
    digit: int
    result: int

    @property
    def text(self) -> str:
        return f"Step {self.number}: {self.function}({self.digit}) = {self.result}"

    def is_right_after(self, previous: int, problem: Problem) -> bool:
        """Whether this step is right in ``problem`` when the previous result (or the start) was ``previous``."""
        return (
            self.function == problem.function_at(self.number)
            and self.digit == previous
            and self.result == FUNCTIONS[self.function][self.digit]
        )


def solve(problem: Problem) -> list[Step]:
    """The right steps of ``problem``.

    Example:
    ```python
    >>> from reasonflux_rl.lab.task import Problem, solve
    >>> [s.text for s in solve(Problem(5, "H", "G", 3))]
    ['Step 1: H(5) = 7', 'Step 2: G(7) = 1', 'Step 3: H(1) = 2']

    ```
    """
    steps, value = [], problem.start
    for number in range(1, problem.times + 1):
        function = problem.function_at(number)
        steps.append(Step(number, function, value, FUNCTIONS[function][value]))
        value = steps[-1].result
    return steps


def all_problems(functions: int = 4, lengths: Sequence[int] = (3, 4, 5)) -> list[Problem]:
    """Every problem over the first ``functions`` functions and the chain ``lengths``.

    Example:
    ```python
    >>> from reasonflux_rl.lab.task import all_problems
    >>> len(all_problems()), len(all_problems(functions=2, lengths=(3,)))
    (360, 20)

    ```
    """
    if not 2 <= functions <= len(FUNCTIONS):
        raise ValueError(f"functions={functions} must be in [2, {len(FUNCTIONS)}]")
    names = list(FUNCTIONS)[:functions]
    return [Problem(start, first, second, times) for first in names for second in names if first != second
            for start in range(DIGITS) for times in lengths]


def problems(split: str, functions: int = 4, lengths: Sequence[int] = (3, 4, 5)) -> list[Problem]:
    """The problems of ``split`` (``"train"`` or ``"eval"``): disjoint, and fixed by the problems' texts.

    Example:
    ```python
    >>> from reasonflux_rl.lab.task import problems
    >>> train, held_out = problems("train"), problems("eval")
    >>> len(train), len(held_out), set(train) & set(held_out)
    (314, 46, set())

    ```
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split={split!r} must be 'train' or 'eval'")
    return [p for p in all_problems(functions, lengths) if p.split == split]


def corrupt(step: Step, rng: random.Random) -> Step:
    """``step`` with one local mistake: a wrong value, or a step that does not start from the previous result (its
    value then follows from the wrong digit).

    Example:
    ```python
    >>> import random
    >>> from reasonflux_rl.lab.task import Problem, Step, corrupt
    >>> p = Problem(5, "H", "G", 4)
    >>> all(not corrupt(Step(1, "H", 5, 7), random.Random(s)).is_right_after(5, p) for s in range(50))
    True

    ```
    """
    if rng.random() < 0.5:
        wrong = rng.choice([d for d in range(DIGITS) if d != step.result])
        return Step(step.number, step.function, step.digit, wrong)
    digit = rng.choice([d for d in range(DIGITS) if d != step.digit])
    return Step(step.number, step.function, digit, FUNCTIONS[step.function][digit])


@dataclass(frozen=True)
class Written:
    """A written solution: its steps, the answer it gives, and whether each step (then the answer) is right."""

    steps: tuple[Step, ...]
    answer: int
    labels: tuple[bool, ...]

    @property
    def completion(self) -> str:
        """The completion after the pre-filled ``<think>\\n``: thinking steps, ``</think>``, the answer."""
        thinking = "\n\n".join(step.text for step in self.steps)
        return f"{thinking}\n</think>\n\nThe answer is $\\boxed{{{self.answer}}}$."


def write(problem: Problem, corruption: float, rng: random.Random, answer_corruption: float = 0.0) -> Written:
    """A solution of ``problem`` in which each step is corrupted with probability ``corruption``; later steps go on
    from what was written, and the answer is the last written result (another digit with probability
    ``answer_corruption``).

    Example:
    ```python
    >>> import random
    >>> from reasonflux_rl.lab.task import Problem, write
    >>> w = write(Problem(5, "H", "G", 2), 0.0, random.Random(0))
    >>> print(w.completion)
    Step 1: H(5) = 7
    <BLANKLINE>
    Step 2: G(7) = 1
    </think>
    <BLANKLINE>
    The answer is $\\boxed{1}$.
    >>> w.labels
    (True, True, True)

    ```
    """
    steps, labels, value = [], [], problem.start
    for right in solve(problem):
        step = Step(right.number, right.function, value, FUNCTIONS[right.function][value])
        if rng.random() < corruption:
            step = corrupt(step, rng)
        labels.append(step.is_right_after(value, problem))
        steps.append(step)
        value = step.result
    answer = value
    if rng.random() < answer_corruption:
        answer = rng.choice([d for d in range(DIGITS) if d != value])
    return Written(tuple(steps), answer, (*labels, answer == value))


def labelled_solutions(problems_: Sequence[Problem], count: int, corruption: float, answer_corruption: float,
                       rng: random.Random) -> list[dict]:
    """``count`` solutions of problems drawn from ``problems_``, written with wrong steps ([`write`]), as rows
    ``prm label --method given`` reads: ``problem``, ``completion``, the gold ``solution`` and ``labels``, the judge's
    verdict on every step (the answer last).

    Example:
    ```python
    >>> import random
    >>> from reasonflux_rl.lab.task import Problem, labelled_solutions
    >>> [row] = labelled_solutions([Problem(5, "H", "G", 2)], 1, 0.0, 0.0, random.Random(0))
    >>> row["labels"], row["solution"]
    ([True, True, True], '1')

    ```
    """
    rows = []
    for _ in range(count):
        problem = rng.choice(problems_)
        written = write(problem, corruption, rng, answer_corruption)
        rows.append({"problem": problem.text, "completion": written.completion, "solution": str(problem.answer),
                     "labels": list(written.labels)})
    return rows


def step_labels(problem: Problem, completion: str) -> list[bool] | None:
    """Judge a completion step by step, as the lab's PRM is trained to: each thinking paragraph must be the next
    numbered step, apply the function whose turn it is to the previous result and give its value; the answer must be
    the last result. ``None`` for a completion without the lab's form (as many steps as the problem asks,
    ``</think>``, an answer).

    Example:
    ```python
    >>> from reasonflux_rl.lab.task import Problem, step_labels
    >>> p = Problem(5, "H", "G", 2)
    >>> step_labels(p, "Step 1: H(5) = 7\\n\\nStep 2: G(7) = 1\\n</think>\\n\\nThe answer is $\\\\boxed{1}$.")
    [True, True, True]
    >>> step_labels(p, "Step 1: H(5) = 6\\n\\nStep 2: G(6) = 6\\n</think>\\n\\nThe answer is $\\\\boxed{6}$.")
    [False, True, True]
    >>> step_labels(p, "Step 1: H(5) = 7\\n</think>\\n\\nThe answer is $\\\\boxed{7}$.") is None  # a step missing
    True

    ```
    """
    thinking, close, response = completion.partition("</think>")
    paragraphs = [p.strip() for p in thinking.strip().split("\n\n")]
    answer = BOXED.search(response)
    chain = chain_labels(problem, paragraphs)
    if not close or answer is None or len(paragraphs) != problem.times or chain is None:
        return None
    labels, value = chain
    return [*labels, int(answer[1]) == value]


def boxed_answer(completion: str) -> int | None:
    """The boxed digit a completion answers with, after its last ``</think>``; None when there is none.

    Example:
    ```python
    >>> from reasonflux_rl.lab.task import boxed_answer
    >>> boxed_answer(r"Step 1: H(5) = 7 </think> The answer is $\\boxed{7}$."), boxed_answer("</think> 7")
    (7, None)

    ```
    """
    found = BOXED.search(completion.rpartition("</think>")[2])
    return None if found is None else int(found[1])


def read_step(paragraph: str) -> Step | None:
    """The step a paragraph writes, or None when it is not a step of the lab's form.

    Example:
    ```python
    >>> from reasonflux_rl.lab.task import read_step
    >>> read_step("Step 2: G(7) = 1"), read_step("Step 2: Q(7) = 1")
    (Step(number=2, function='G', digit=7, result=1), None)

    ```
    """
    match = STEP_LINE.match(paragraph)
    if match is None or match[2] not in FUNCTIONS:
        return None
    return Step(int(match[1]), match[2], int(match[3]), int(match[4]))


def chain_labels(problem: Problem, paragraphs: Sequence[str]) -> tuple[list[bool], int] | None:
    """Whether each paragraph is the next numbered step of ``problem``, applied to the previous result (the start
    for the first) and computed right; and the last result. None when a paragraph is not a step.

    Example:
    ```python
    >>> from reasonflux_rl.lab.task import Problem, chain_labels
    >>> chain_labels(Problem(5, "H", "G", 2), ["Step 1: H(5) = 6", "Step 2: G(6) = 6"])
    ([False, True], 6)

    ```
    """
    labels, value = [], problem.start
    for number, paragraph in enumerate(paragraphs, 1):
        step = read_step(paragraph)
        if step is None:
            return None
        labels.append(step.number == number and step.is_right_after(value, problem))
        value = step.result
    return labels, value


def corpus(count: int = 1000, seed: int = 0) -> Iterator[str]:
    """Texts covering the lab's vocabulary (problems and solutions), to train its tokenizer on."""
    rng = random.Random(seed)
    every = all_problems()
    for _ in range(count):
        problem = rng.choice(every)
        yield problem.text
        yield write(problem, 0.3, rng).completion


SPLIT_FILES = {"train": "train", "test": "eval"}


def dataset_rows(split: str, functions: int = 4, lengths: Sequence[int] = (3, 4, 5)) -> list[dict[str, str]]:
    """The lab's problems of a dataset split (``"train"`` or ``"test"``, the held-out problems) as ``{"problem",
    "solution"}`` rows, as ``builtin:lab`` ships them.

    Example:
    ```python
    >>> from reasonflux_rl.lab.task import dataset_rows
    >>> dataset_rows("test")[0]
    {'problem': 'Start at 2. Apply F then G, in turn, 5 times.', 'solution': '6'}

    ```
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"split={split!r} is not one of {list(SPLIT_FILES)}")
    return [{"problem": p.text, "solution": str(p.answer)} for p in problems(SPLIT_FILES[split], functions, lengths)]
