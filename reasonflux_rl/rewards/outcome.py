"""Outcome reward: does the final answer of a completion equal the gold answer? Judged by math-verify.

This module holds the judging rules: which text is the answer (after ``</think>``), how gold and answer are parsed,
what scores 1.0, 0.0 or ``None``. The judging itself runs in worker processes of
[`~reasonflux_rl.rewards.verify_pool.Pool`], with a wall-clock limit on every item: math-verify can hang in sympy on
pathological answers, and its own timeouts rely on ``signal.alarm``, which only works in the main thread (TRL runs
``async def`` reward functions on an event loop in a daemon thread). An item that runs out of time scores 0.0.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import threading
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Self

from latex2sympy2_extended import NormalizationConfig
from math_verify import LatexExtractionConfig, parse, verify

from reasonflux_rl.rewards.formula import Score
from reasonflux_rl.rewards.verify_pool import Lost, Pool, Stats, default_num_workers
from reasonflux_rl.trajectory import THINK_CLOSE, THINK_OPEN, completion_text, split_trajectory

if TYPE_CHECKING:
    # Only for annotations: config loads torch, transformers and the PRM stack, and every verification worker
    # imports this module.
    from reasonflux_rl.rewards.config import RewardArguments

LogMetric = Callable[[str, float], None]
LogExtra = Callable[[str, list], None]

logger = logging.getLogger(__name__)

# The answer must be boxed or anchored ("final answer is ..."), as TRL's accuracy_reward extracts it, plus
# malformed_operators so that the common shorthand `\frac12` and `\sqrt 2` is read as 1/2 and sqrt(2) rather
# than failing to parse and scoring a right answer 0.
_ANSWER_CONFIG = [
    LatexExtractionConfig(
        normalization_config=NormalizationConfig(units=True, malformed_operators=True),
        boxed_match_priority=0,
        try_extract_without_anchor=False,
    )
]
_TEXT_LIMIT = 200
# Typical answer forms a worker parses before it reports ready. latex2sympy's ANTLR parser builds its prediction
# cache as it sees input: a cold process runs about half as fast for its first thousand items.
# fmt: off
_WARMUP_ANSWERS = (
    "7", "-12", "3.25", "1,000", "\\frac{3}{4}", "\\dfrac{5}{8}", "-\\frac{1}{2}", "2/3", "3\\frac{1}{2}", "2\\sqrt{3}",
    "\\sqrt{2}/2", "\\frac{\\sqrt{3}}{2}", "\\pi", "\\frac{2\\pi}{3}", "[1, 4)", "(-\\infty, 2]", "(0, 1)",
    "\\{1, 2, 3\\}", "(3, -1)", "45^\\circ", "30^{\\circ}", "25\\%", "12\\text{ cm}", "5 \\text{ meters}", "\\$20",
    "x = 4", "y=-2x+3", "x^2+5x+6", "(x+2)(x+3)", "2^{10}", "10^{-3}", "1.5\\times10^{3}", "\\log_2 8", "\\ln 2",
    "\\sin 30^\\circ", "e^{2}", "a+b", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\infty", "\\text{(B)}", "3+4i",
    "\\left(2, \\frac{\\pi}{3}\\right)", "\\binom{5}{2}", "5!", "\\frac{x+1}{x-1}", "|x-2|", "x \\in [2, 5]", "1 < x < 3",
)
# fmt: on


# What a row scores when the pool has no result for it: (score, gold_parsed, answer_parsed).
_LOST_ROWS = {Lost.TIMEOUT: (0.0, "", "[timeout]"), Lost.WORKER_DIED: (0.0, "", "[worker died]")}


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    # One prompt's completions share a gold, so most rows of a GRPO batch hit this cache.
    return parse(gold, parsing_timeout=None)


def _judge(gold: str, response: str | None, want_text: bool) -> tuple[Score, str, str]:
    """(score, gold_parsed, answer_parsed) for one row; ``response=None`` marks a truncated completion. The job
    that the pool's workers run, so it must stay a top-level function of this module (pickled by reference)."""
    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return None, "[unparseable]", "[skipped]"
    gold_text = str(gold_parsed)[:_TEXT_LIMIT] if want_text else ""
    if response is None:
        return 0.0, gold_text, "[truncated]"
    answer = parse(response, extraction_config=_ANSWER_CONFIG, extraction_mode="first_match", parsing_timeout=None)
    score = float(verify(gold_parsed, answer, timeout_seconds=None))
    answer_text = (str(answer)[:_TEXT_LIMIT] if answer else "[unparseable]") if want_text else ""
    return score, gold_text, answer_text


def _quiet_math_verify() -> None:
    # The pool enforces the time limits, so math-verify's "timeout is disabled" warnings are noise.
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _warm_up() -> None:
    """Parse and verify the typical answer forms once, filling latex2sympy's parser caches."""
    _quiet_math_verify()
    for i, answer in enumerate(_WARMUP_ANSWERS):
        _judge(f"${answer}$", f"The answer is $\\boxed{{{answer}}}$.", True)
        _judge(answer, f"The final answer is ${_WARMUP_ANSWERS[i - 1]}$.", False)


# ----------------------------------------------------------------------------------------------- public API


def gold_text(gold: object) -> str:
    r"""
    The text of a gold answer as math-verify should parse it: strings as they are, numbers written out.

    Datasets loaded from CSV or parquet often hold numeric answers. Integers are written without a decimal point,
    floats by their shortest round-tripping digits in positional notation (math-verify reads `1e-05` as 1), and
    infinities as `\infty`. A missing gold (`None`, NaN) becomes the empty string, which no parse accepts, so the
    row is skipped (`None`) like any unparseable gold. Other types raise `TypeError`.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.outcome import gold_text

    >>> [gold_text(g) for g in ["$\\frac{1}{2}$", 12, 0.5, 1.5e-05, 3.0, None, float("nan"), float("-inf")]]
    ['$\\frac{1}{2}$', '12', '0.5', '0.000015', '3.0', '', '', '-\\infty']

    ```
    """
    if isinstance(gold, str):
        return gold
    if gold is None:
        return ""
    if isinstance(gold, numbers.Integral) and not isinstance(gold, bool):
        return str(int(gold))
    if isinstance(gold, numbers.Real) and not isinstance(gold, bool):
        value = float(gold)  # also numpy scalars, whose repr is `np.float64(...)`
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "\\infty" if value > 0 else "-\\infty"
        text = repr(value)
        return format(Decimal(text), "f") if "e" in text else text
    raise TypeError(f"a gold answer must be a str or a number, got {type(gold).__name__}: {gold!r:.80}")


class OutcomeReward:
    r"""
    Outcome reward: 1.0 if the final answer of a completion equals the gold answer according to math-verify, else 0.0.

    The gold is parsed with math-verify's default extraction and passed first to `verify(gold, answer)`. The answer is
    extracted from the final response only (the text after the last `</think>`), boxed answers first, as TRL's
    `accuracy_reward` does; an answer that only appears inside the thinking scores 0.0.
        - Completions under the DeepSeek-R1-Distill template (no `<think>`, one `</think>`) are handled; a completion
          with no think tags at all is judged on its whole text.
        - A completion that opened `<think>` but never closed it (cut at the length limit) scores 0.0 when
          `require_closed_thinking=True` (the default). With `require_closed_thinking=False` it is judged on the text
          after `<think>` instead.
        - If the gold is not parseable the row is `None` (TRL ignores it), never 0.0.

    Verification runs in `num_workers` worker processes, started on first use and reused. Every item gets
    `timeout_seconds` of wall-clock time: the worker interrupts itself at the limit, and if it cannot (stuck in C
    code) the parent kills it half a second later; either way the item scores 0.0, counts as a timeout, and the
    worker is replaced (a replacement forks in milliseconds from a server where math-verify is already warm). A worker
    that crashes is replaced, and the item it was running is retried once (then 0.0). Gold answers may be strings or
    numbers (see [`gold_text`]); a missing one (`None`, NaN, empty) is unparseable. Safe to call from any thread, including TRL's event-loop thread for `async def` rewards. Workers come from a forkserver
    (never a plain fork of the trainer) and do not re-import the calling script, so a training script needs no
    `if __name__ == "__main__":` guard.

    Args:
        require_closed_thinking (`bool`, *optional*, defaults to `True`):
            Whether a completion that never closed its thinking scores 0.0 (`True`) or is judged on its thinking.
        timeout_seconds (`float`, *optional*, defaults to `5.0`):
            Wall-clock limit per item (gold parse, answer parse and verify together).
        num_workers (`int`, *optional*):
            Number of worker processes. Defaults to the CPUs this process may run on divided by the ranks on this
            node (`LOCAL_WORLD_SIZE`), at least 1; see [`~reasonflux_rl.rewards.verify_pool.default_num_workers`].
        gold_column (`str`, *optional*, defaults to `"solution"`):
            Dataset column holding the gold answers, passed by TRL as a keyword argument.
        thinking_prefilled (`bool`, *optional*, defaults to `False`):
            Whether the prompt opened the thinking (DeepSeek-R1-Distill's template ends with `<think>`), so that a
            completion without `</think>` is unclosed thinking rather than a plain answer. When it is `False` and a
            batch holds completions that close a thinking they never opened (that template's signature), a warning
            is logged once: such a policy's truncated completions would be judged as plain answers.

    Logged with `log_metric` (one scalar each per call): `outcome/accuracy` (mean over rows with a score),
    `outcome/gold_unparseable`, `outcome/timeouts`, `outcome/worker_restarts`, `outcome/truncated` (completions that
    never closed thinking), `outcome/worker_failures` (items whose worker died twice) and `outcome/max_item_seconds`.
    With `log_extra`, the `gold_parsed` and `answer_parsed` columns of the completions table.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.outcome import OutcomeReward

    >>> completions = [
    ...     [{"role": "assistant", "content": "<think>\nHalf of one.\n</think>\n\nThe answer is $\\boxed{0.5}$."}],
    ...     [{"role": "assistant", "content": "Half of one.\n</think>\n\n$\\boxed{\\frac{1}{3}}$"}],
    ...     [{"role": "assistant", "content": "<think>\nThe answer is \\boxed{\\frac{1}{2}} but I ran out of"}],
    ...     [{"role": "assistant", "content": "\\boxed{2}"}],
    ... ]
    >>> with OutcomeReward(num_workers=1) as reward:
    ...     reward(completions, solution=["$\\frac{1}{2}$"] * 3 + ["no math here"])
    [1.0, 0.0, 0.0, None]

    ```
    """

    __name__ = "outcome"  # TRL names the logged reward after this: rewards/outcome/mean

    def __init__(
        self,
        *,
        require_closed_thinking: bool = True,
        timeout_seconds: float = 5.0,
        num_workers: int | None = None,
        gold_column: str = "solution",
        thinking_prefilled: bool = False,
    ) -> None:
        if not timeout_seconds > 0:
            raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds}")
        if num_workers is None:
            num_workers = default_num_workers()
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.require_closed_thinking = require_closed_thinking
        self.timeout_seconds = float(timeout_seconds)
        self.num_workers = int(num_workers)
        self.gold_column = gold_column
        self.thinking_prefilled = thinking_prefilled
        # Test hook: False makes workers ignore the limit, like an item stuck in C code, to exercise the kill path.
        self._interrupt_in_worker = True
        self._pool: Pool | None = None
        self._lock = threading.Lock()
        self._warned_prefill = False

    @classmethod
    def from_args(cls, args: RewardArguments) -> OutcomeReward:
        r"""
        The outcome reward that the `outcome_*`, `solution_column` and `thinking_prefilled` fields of a
        [`~reasonflux_rl.rewards.config.RewardArguments`] describe (`thinking_prefilled=None` counts as `False`).

        Example:
        ```python
        >>> from reasonflux_rl.rewards.config import RewardArguments
        >>> from reasonflux_rl.rewards.outcome import OutcomeReward

        >>> reward = OutcomeReward.from_args(RewardArguments(prm_beta=0, outcome_num_workers=2, solution_column="answer"))
        >>> reward.num_workers, reward.gold_column, reward.timeout_seconds, reward.thinking_prefilled
        (2, 'answer', 5.0, False)

        ```
        """
        return cls(
            require_closed_thinking=args.outcome_require_closed_thinking,
            timeout_seconds=args.outcome_timeout_seconds,
            num_workers=args.outcome_num_workers,
            gold_column=args.solution_column,
            thinking_prefilled=bool(args.thinking_prefilled),
        )

    def __call__(
        self,
        completions: Sequence[str | list[dict]],
        log_metric: LogMetric | None = None,
        log_extra: LogExtra | None = None,
        **kwargs,
    ) -> list[Score]:
        r"""
        TRL reward-function entry point: gold answers come from `kwargs[self.gold_column]`.

        Example:
        ```python
        >>> from reasonflux_rl.rewards.outcome import OutcomeReward

        >>> with OutcomeReward(num_workers=1) as reward:
        ...     reward(["\\boxed{4}", [{"role": "assistant", "content": "\\boxed{5}"}]], solution=["4", "4"])
        [1.0, 0.0]

        ```
        """
        if self.gold_column not in kwargs:
            raise ValueError(
                f"the outcome reward reads gold answers from the {self.gold_column!r} dataset column, which is "
                f"missing; columns passed: {sorted(kwargs)}"
            )
        texts = [completion_text(completion) for completion in completions]
        return self.score(texts, kwargs[self.gold_column], log_metric, log_extra=log_extra)

    def score(
        self,
        completions: Sequence[str],
        golds: Sequence[str],
        log_metric: LogMetric | None = None,
        *,
        log_extra: LogExtra | None = None,
    ) -> list[Score]:
        r"""
        Score plain-string completions against gold answers; results are in input order.

        Example:
        ```python
        >>> from reasonflux_rl.rewards.outcome import OutcomeReward

        >>> with OutcomeReward(num_workers=1) as reward:
        ...     reward.score(["</think>\n\\boxed{\\{2, 1\\}}", "</think>\n\\boxed{\\{1, 2, 3\\}}"], ["$\\{1,2\\}$"] * 2)
        [1.0, 0.0]

        ```
        """
        if len(completions) != len(golds):
            raise ValueError(f"got {len(completions)} completions but {len(golds)} gold answers")
        jobs, truncated = self._jobs(completions, golds, want_text=log_extra is not None)
        rows, stats = self._judge_all(jobs)
        scores = [row[0] for row in rows]
        if log_metric is not None:
            judged = [s for s in scores if s is not None]
            if judged:
                log_metric("outcome/accuracy", sum(judged) / len(judged))
            log_metric("outcome/gold_unparseable", float(len(scores) - len(judged)))
            log_metric("outcome/timeouts", float(stats.timeouts))
            log_metric("outcome/worker_restarts", float(stats.restarts))
            log_metric("outcome/truncated", float(truncated))
            log_metric("outcome/worker_failures", float(stats.failures))
            log_metric("outcome/max_item_seconds", stats.max_item_seconds)
        if log_extra is not None:
            log_extra("gold_parsed", [row[1] for row in rows])
            log_extra("answer_parsed", [row[2] for row in rows])
        return scores

    def _jobs(
        self, completions: Sequence[str], golds: Sequence[str], want_text: bool
    ) -> tuple[list[tuple[str, str | None, bool]], int]:
        """The arguments of ``_judge`` for every row (the answer text, or `None` for a truncated completion that
        scores 0.0 by rule), and how many completions never closed their thinking."""
        jobs: list[tuple[str, str | None, bool]] = []
        truncated = 0
        prefill_signature = False
        for row, (completion, gold) in enumerate(zip(completions, golds)):
            try:
                gold = gold_text(gold)
            except TypeError as err:
                raise TypeError(f"gold answer at row {row}: {err}") from None
            trajectory = split_trajectory(completion, self.thinking_prefilled)
            prefill_signature = prefill_signature or (THINK_CLOSE in completion and THINK_OPEN not in completion)
            if trajectory.closed:
                response = trajectory.response
            else:
                truncated += 1
                response = None if self.require_closed_thinking else trajectory.thinking
            jobs.append((gold, response, want_text))
        if prefill_signature and not self.thinking_prefilled and not self._warned_prefill:
            self._warned_prefill = True
            logger.warning(
                "Completions close a thinking they never opened (`</think>` without `<think>`), as under a chat "
                "template that pre-fills <think> (DeepSeek-R1-Distill): truncated completions of such a policy will "
                "be judged on their text as plain answers unless thinking_prefilled is set (`reasonflux-rl train` "
                "reads it from the policy's chat template; pass --thinking-prefilled to score, select and bon; set "
                "REASONFLUX_THINKING_PREFILLED=true under trl grpo)."
            )
        return jobs, truncated

    def _judge_all(self, jobs: list[tuple[str, str | None, bool]]) -> tuple[list[tuple[Score, str, str]], Stats]:
        """Run ``_judge`` on every job in the pool; (score, gold_parsed, answer_parsed) per job, and the pool's stats."""
        if not jobs:
            return [], Stats()
        with self._lock:
            pool = self._get_pool()
            try:
                results, stats = pool.run(jobs, self.timeout_seconds, interrupt=self._interrupt_in_worker)
            except BaseException:
                # Interrupted mid-batch (e.g. KeyboardInterrupt): stale items sit in the workers' pipes.
                pool.close()
                self._pool = None
                raise
        return [_LOST_ROWS[result] if isinstance(result, Lost) else result for result in results], stats

    def worker_pids(self) -> list[int]:
        """Process ids of the workers once all are ready (starting the pool if needed); for tests and debugging."""
        with self._lock:
            pool = self._get_pool()
            pool.wait_ready()
            return [worker.process.pid for worker in pool.workers]

    def _get_pool(self) -> Pool:
        if self._pool is not None and self._pool.owner_pid != os.getpid():
            self._pool = None  # inherited through fork: those workers belong to the parent process
        if self._pool is None:
            self._pool = Pool(
                _judge,
                self.num_workers,
                setup=_quiet_math_verify,
                warm_up=_warm_up,
                # _verify_warmup runs _warm_up in the forkserver, so that every worker forked from it starts warm.
                preload=(__name__, f"{__package__}._verify_warmup"),
                name="outcome-verifier",
            )
        return self._pool

    def close(self) -> None:
        """Stop the worker processes; a later call starts a new pool."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # TRL may pickle reward functions into a spawned rollout process: ship the settings, not the pool.
    def __getstate__(self) -> dict:
        return {
            "require_closed_thinking": self.require_closed_thinking,
            "timeout_seconds": self.timeout_seconds,
            "num_workers": self.num_workers,
            "gold_column": self.gold_column,
            "thinking_prefilled": self.thinking_prefilled,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)


_default_reward: OutcomeReward | None = None
_default_lock = threading.Lock()
# The RewardArguments fields that configure the outcome reward; the PRM's fields do not concern it.
_ENV_FIELDS = (
    "thinking_prefilled",
    "outcome_require_closed_thinking",
    "outcome_timeout_seconds",
    "outcome_num_workers",
    "solution_column",
)


def outcome_reward_from_env(environ: dict[str, str] | None = None) -> OutcomeReward:
    """An [`OutcomeReward`] configured by the ``REASONFLUX_<FIELD>`` environment variables of its
    [`~reasonflux_rl.rewards.config.RewardArguments`] fields: ``REASONFLUX_THINKING_PREFILLED``,
    ``REASONFLUX_OUTCOME_REQUIRE_CLOSED_THINKING``, ``REASONFLUX_OUTCOME_TIMEOUT_SECONDS``,
    ``REASONFLUX_OUTCOME_NUM_WORKERS`` and ``REASONFLUX_SOLUTION_COLUMN``, parsed and checked exactly as
    [`~reasonflux_rl.rewards.build.reward_arguments_from_env`] parses them for the mixed reward. PRM variables are ignored.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.outcome import outcome_reward_from_env

    >>> reward = outcome_reward_from_env(
    ...     {"REASONFLUX_THINKING_PREFILLED": "true", "REASONFLUX_OUTCOME_NUM_WORKERS": "2", "REASONFLUX_PRM_BETA": "1"}
    ... )
    >>> reward.thinking_prefilled, reward.num_workers, reward.timeout_seconds
    (True, 2, 5.0)

    ```
    """
    # Imported here, not at the top: config loads torch, transformers and the PRM stack, and every verification
    # worker imports this module.
    from reasonflux_rl.rewards.config import ENV_PREFIX, reward_arguments_from_env

    environ = os.environ if environ is None else environ
    names = {ENV_PREFIX + name.upper() for name in _ENV_FIELDS}
    # prm_beta=0 so that the PRM checks (a PRM path is required when beta > 0) do not apply to the outcome alone.
    args = reward_arguments_from_env({**{k: v for k, v in environ.items() if k in names}, ENV_PREFIX + "PRM_BETA": "0"})
    return OutcomeReward.from_args(args)


def outcome_reward(completions: Sequence[str | list[dict]], **kwargs) -> list[Score]:
    r"""
    Outcome reward for `trl grpo --reward_funcs reasonflux_rl.rewards.outcome.outcome_reward`.

    Backed by one [`OutcomeReward`] created on first call from the `REASONFLUX_<FIELD>` environment variables
    (see [`outcome_reward_from_env`]; a TRL YAML config sets them in its `env:` section), with the defaults
    otherwise: gold answers in the `solution` column, 5 s per item, the node's cores shared among its ranks, and
    thinking not pre-filled. See [`OutcomeReward`] for the rules.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.outcome import outcome_reward

    >>> outcome_reward(["</think>\nSo $\\boxed{\\dfrac{3}{4}}$."], solution=["$0.75$"])
    [1.0]

    ```
    """
    global _default_reward
    with _default_lock:
        if _default_reward is None:
            _default_reward = outcome_reward_from_env()
    return _default_reward(completions, **kwargs)


def _has_boxed_answer(text: str) -> bool:
    start = text.find("\\boxed{")
    while start >= 0:
        depth, i = 1, start + len("\\boxed{")
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0 and text[start + len("\\boxed{") : i - 1].strip():
            return True
        start = text.find("\\boxed{", i)
    return False


def format_reward(completions: Sequence[str | list[dict]], **kwargs) -> list[float]:
    r"""
    Format reward: 1.0 if the completion closes its thinking exactly once and its final response has a non-empty
    `\boxed{...}` answer, else 0.0.

    The DeepSeek-R1-Distill template pre-fills `<think>` in the prompt, so a missing opening tag is allowed; at most one
    `<think>` may appear, and it must come before the `</think>`.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.outcome import format_reward

    >>> completions = [
    ...     "<think>\nAdd them.\n</think>\n\n$\\boxed{4}$",
    ...     "Add them.\n</think>\n\\boxed{4}",
    ...     "<think>\nAdd them.\n</think>\n\nIt is 4.",
    ...     "<think>\nThe answer is \\boxed{4}",
    ...     "\\boxed{4}",
    ... ]
    >>> format_reward(completions)
    [1.0, 1.0, 0.0, 0.0, 0.0]

    ```
    """
    rewards = []
    for completion in completions:
        text = completion_text(completion)
        closes, opens = text.count(THINK_CLOSE), text.count(THINK_OPEN)
        well_formed = closes == 1 and opens <= 1 and (opens == 0 or text.index(THINK_OPEN) < text.index(THINK_CLOSE))
        rewards.append(float(well_formed and _has_boxed_answer(split_trajectory(text).response)))
    return rewards
