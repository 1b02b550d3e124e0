"""Outcome reward: does the final answer of a completion equal the gold answer? Judged by math-verify.

math-verify can hang in sympy on pathological answers, and its own timeouts rely on ``signal.alarm``, which only
works in the main thread (TRL runs ``async def`` reward functions on an event loop in a daemon thread). So
verification runs in a small pool of worker processes with a wall-clock limit on every item: a worker interrupts an
item itself at the limit, the parent kills a worker that cannot, the item scores 0.0, and either way the worker is
replaced (sympy's caches after an interrupted computation are not to be trusted).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import numbers
import os
import signal
import sys
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from multiprocessing.connection import Connection, wait
from typing import Any, Self

from latex2sympy2_extended import NormalizationConfig
from math_verify import LatexExtractionConfig, parse, verify

from reasonflux_rl.trajectory import THINK_CLOSE, THINK_OPEN, completion_text, split_trajectory

Score = float | None
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
# A worker that ignores its own in-process interrupt (stuck in C code) is killed this long after the limit.
_KILL_GRACE_SECONDS = 0.5
# Most items per message to a worker: amortises IPC; each item still gets its own deadline.
_MAX_CHUNK = 16
# A pool whose workers cannot even import math-verify in this long is broken; fail loudly instead of hanging.
_STARTUP_SECONDS = 120.0
_TEXT_LIMIT = 200
_READY = "ready"
_MAIN_SWAP_LOCK = threading.Lock()
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


# ----------------------------------------------------------------------------------------------- worker process


class _ItemTimeout(BaseException):
    """Raised by SIGALRM inside a worker; a BaseException so math-verify's ``except Exception`` cannot swallow it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _ItemTimeout


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    # One prompt's completions share a gold, so most rows of a GRPO batch hit this cache.
    return parse(gold, parsing_timeout=None)


def _judge(gold: str, response: str | None, want_text: bool) -> tuple[Score, bool, str, str]:
    """(score, timed_out, gold_parsed, answer_parsed) for one row; ``response=None`` marks a truncated completion."""
    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return None, False, "[unparseable]", "[skipped]"
    gold_text = str(gold_parsed)[:_TEXT_LIMIT] if want_text else ""
    if response is None:
        return 0.0, False, gold_text, "[truncated]"
    answer = parse(response, extraction_config=_ANSWER_CONFIG, extraction_mode="first_match", parsing_timeout=None)
    score = float(verify(gold_parsed, answer, timeout_seconds=None))
    answer_text = (str(answer)[:_TEXT_LIMIT] if answer else "[unparseable]") if want_text else ""
    return score, False, gold_text, answer_text


def _judge_within(limit: float | None, gold: str, response: str | None, want_text: bool) -> tuple:
    # Interrupting here is the cheap path (no process restart); the parent's kill is only the backstop.
    try:
        if limit is not None:
            signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            return _judge(gold, response, want_text)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _ItemTimeout:
        return 0.0, True, "", "[timeout]"


def _warm_up() -> None:
    """Parse and verify the typical answer forms once, filling latex2sympy's parser caches."""
    # Timeouts are handled by the pool, so math-verify's "timeout is disabled" warnings are noise.
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for i, answer in enumerate(_WARMUP_ANSWERS):
        _judge(f"${answer}$", f"The answer is $\\boxed{{{answer}}}$.", True)
        _judge(answer, f"The final answer is ${_WARMUP_ANSWERS[i - 1]}$.", False)


def _worker_main(conn: Connection, warm_up: bool) -> None:
    # Ctrl-C reaches the whole process group; the parent owns shutdown, so a worker must not die mid-item.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_alarm)
    # Warm up before reporting ready: the parent starts each item's clock only once a worker is ready. The forkserver
    # has warmed up already (see _mp_context), so this is quick; it matters where the forkserver was started by
    # someone else, without our preload. A replacement skips it: it should take work at once, warm or not.
    if warm_up:
        _warm_up()
    else:
        for name in ("math_verify", "latex2sympy2_extended"):
            logging.getLogger(name).setLevel(logging.ERROR)
    conn.send(_READY)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        limit, want_text, items = message
        for pos, gold, response in items:
            conn.send((pos, *_judge_within(limit, gold, response, want_text)))


# ----------------------------------------------------------------------------------------------- parent side


def _mp_context() -> multiprocessing.context.BaseContext:
    # Never fork the trainer: it holds torch/CUDA threads. The forkserver forks workers from a clean process that has
    # math-verify imported and warmed up (the second preload runs _warm_up there), so a replacement for a killed or
    # timed-out worker is ready and fast in milliseconds, not after a sympy import and a cold parser cache.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, f"{__package__}._verify_warmup"])
    return ctx


@dataclass
class _Worker:
    process: Any
    conn: Connection
    created: float = field(default_factory=time.monotonic)
    ready: bool = False
    inflight: deque = field(default_factory=deque)  # job positions, in the order the worker runs them
    started: float = 0.0  # when inflight[0] began running
    reserved: list = field(default_factory=list)  # a crashed worker's item, retried first on its replacement


@dataclass
class _Stats:
    timeouts: int = 0
    restarts: int = 0
    failures: int = 0
    max_item_seconds: float = 0.0


def _stop_workers(workers: list[_Worker], owner_pid: int) -> None:
    if os.getpid() != owner_pid:  # a forked child must not kill its parent's workers
        return
    for worker in workers:
        try:
            worker.conn.send(None)
        except (OSError, ValueError):
            pass
    for worker in workers:
        worker.process.join(timeout=1.0)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()


class _Pool:
    """Worker processes plus the dispatch loop that enforces the per-item deadline. Not thread-safe by itself."""

    def __init__(self, num_workers: int) -> None:
        self.owner_pid = os.getpid()
        self._ctx = _mp_context()
        self.workers = [self._start_worker() for _ in range(num_workers)]
        self._finalizer = weakref.finalize(self, _stop_workers, self.workers, self.owner_pid)

    def _start_worker(self, warm_up: bool = True) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_worker_main, args=(child_conn, warm_up), name="outcome-verifier", daemon=True
        )
        # A spawned or forkserver child re-imports the parent's main script unless told otherwise; a training script
        # without an `if __name__ == "__main__":` guard would then train again inside every verifier. The worker
        # needs nothing from __main__, so the child is started while __main__ looks like an empty module.
        with _MAIN_SWAP_LOCK:
            main = sys.modules["__main__"]
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                process.start()
            finally:
                sys.modules["__main__"] = main
        child_conn.close()
        return _Worker(process, parent_conn)

    def close(self) -> None:
        self._finalizer()

    def wait_ready(self) -> None:
        """Block until every worker has warmed up; only while no batch is running (a READY is then all it sends)."""
        deadline = time.monotonic() + _STARTUP_SECONDS
        for worker in self.workers:
            try:
                if not worker.ready and worker.conn.poll(max(0.0, deadline - time.monotonic())):
                    worker.ready = worker.conn.recv() == _READY
            except (EOFError, OSError):
                pass
            if not worker.ready:
                code = worker.process.exitcode
                raise RuntimeError(f"an outcome-verifier worker did not become ready (exit code {code})")

    def _replace(self, worker: _Worker) -> _Worker:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5.0)
        worker.conn.close()
        fresh = self._start_worker(warm_up=False)
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    def run(self, jobs: list[tuple[str, str | None]], limit: float, soft_limit: float | None, want_text: bool):
        """Judge ``jobs`` of (gold, response); returns per-job (score, timed_out, gold_text, answer_text) and stats."""
        results: list[tuple | None] = [None] * len(jobs)
        queue = deque(range(len(jobs)))
        crashes = [0] * len(jobs)
        stats = _Stats()
        remaining = len(jobs)

        def finish(pos: int, result: tuple) -> None:
            nonlocal remaining
            results[pos] = result
            remaining -= 1

        def retire(worker: _Worker, cause: str) -> None:
            # cause: "timeout" or "crash" lose the item the worker was running; after "answered" (the worker timed
            # out an item itself and reported it) nothing is lost. Items queued behind are requeued: even if one had
            # started, it is not to blame.
            stats.restarts += 1
            running = worker.inflight.popleft() if worker.inflight and cause != "answered" else None
            queue.extendleft(reversed(worker.inflight))
            worker.inflight.clear()
            queue.extendleft(reversed(worker.reserved))
            fresh = self._replace(worker)
            if running is None:
                return
            if cause == "timeout":
                stats.timeouts += 1
                finish(running, (0.0, True, "", "[timeout]"))
            elif crashes[running] == 0:
                crashes[running] += 1
                fresh.reserved.append(running)
            else:
                stats.failures += 1
                finish(running, (0.0, False, "", "[worker died]"))

        while remaining:
            now = time.monotonic()
            for worker in self.workers:
                # Only idle workers get work: a worker busy on a stuck item does not read its pipe, and a send
                # larger than the pipe buffer would then block the parent and its deadlines.
                if not worker.ready or worker.inflight or not (queue or worker.reserved):
                    continue
                # Chunks shrink as the queue drains, so no worker is left with a long tail while the others idle.
                size = max(1, min(_MAX_CHUNK, len(queue) // (2 * len(self.workers))))
                batch = worker.reserved or [queue.popleft() for _ in range(size)]
                worker.reserved = []
                worker.started = now
                worker.inflight.extend(batch)
                try:
                    worker.conn.send((soft_limit, want_text, [(pos, *jobs[pos]) for pos in batch]))
                except OSError:
                    pass  # it just died: its sentinel fires below and its items are requeued

            busy = [worker for worker in self.workers if worker.inflight]
            if busy:
                timeout = max(0.0, min(worker.started for worker in busy) + limit - now)
            else:
                # Nothing is running, so the remaining work waits for a worker that is still starting.
                starting = [worker.created + _STARTUP_SECONDS for worker in self.workers if not worker.ready]
                if not starting or now >= min(starting):
                    raise RuntimeError(f"no outcome-verifier worker became ready within {_STARTUP_SECONDS:.0f} s")
                timeout = min(starting) - now
            handles = [worker.conn for worker in self.workers] + [worker.process.sentinel for worker in self.workers]
            signalled = set(wait(handles, timeout))

            for worker in list(self.workers):
                dead = worker.process.sentinel in signalled
                recycle = False
                if worker.conn in signalled or dead:
                    try:
                        while not recycle and worker.conn.poll():
                            message = worker.conn.recv()
                            now = time.monotonic()
                            if message == _READY:
                                worker.ready = True
                                continue
                            pos, *result = message
                            if not worker.inflight or worker.inflight[0] != pos:
                                raise RuntimeError(f"outcome worker answered job {pos} out of order")
                            worker.inflight.popleft()
                            stats.max_item_seconds = max(stats.max_item_seconds, now - worker.started)
                            worker.started = now
                            finish(pos, tuple(result))
                            # The worker interrupted the item itself, at an arbitrary point inside sympy, whose caches
                            # may now hold half-built entries: replace it rather than trust it with the next item.
                            recycle = result[1]
                    except (EOFError, OSError):
                        dead = True
                if recycle:
                    stats.timeouts += 1
                    retire(worker, "answered")
                elif dead:
                    if not worker.ready:
                        # A worker that cannot even start will not start next time either: fail loudly.
                        worker.process.join(timeout=1.0)
                        code = worker.process.exitcode
                        raise RuntimeError(f"an outcome-verifier worker died while starting (exit code {code})")
                    retire(worker, "crash")
                elif worker.inflight and time.monotonic() >= worker.started + limit:
                    stats.max_item_seconds = max(stats.max_item_seconds, time.monotonic() - worker.started)
                    retire(worker, "timeout")
        return results, stats


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


def default_num_workers(environ: dict[str, str] | None = None) -> int:
    """Verification workers per process: the CPUs this process may use, shared among the ranks of this node.

    torchrun and accelerate set ``LOCAL_WORLD_SIZE`` (the processes on this node); each rank has its own reward and
    pool, so without the division an 8-GPU node would start 8 workers per core. At least 1.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.outcome import default_num_workers

    >>> default_num_workers({"LOCAL_WORLD_SIZE": "100000"})
    1

    ```
    """
    environ = os.environ if environ is None else environ
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        ranks = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        ranks = 1
    return max(1, cores // ranks)



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
    worker is replaced (a replacement forks from a preloaded server in milliseconds, then warms up for about a
    second while the other workers go on). A worker that crashes is replaced, and the item it was running is retried
    once (then 0.0). Gold answers may be strings or numbers (see [`gold_text`]); a missing one (`None`, NaN, empty)
    is unparseable. Safe to
    call from any thread, including TRL's event-loop thread for `async def` rewards. Workers come from a forkserver
    (never a plain fork of the trainer) and do not re-import the calling script, so a training script needs no
    `if __name__ == "__main__":` guard.

    Args:
        require_closed_thinking (`bool`, *optional*, defaults to `True`):
            Whether a completion that never closed its thinking scores 0.0 (`True`) or is judged on its thinking.
        timeout_seconds (`float`, *optional*, defaults to `5.0`):
            Wall-clock limit per item (gold parse, answer parse and verify together).
        num_workers (`int`, *optional*):
            Number of worker processes. Defaults to the CPUs this process may run on divided by the ranks on this
            node (`LOCAL_WORLD_SIZE`), at least 1; see [`default_num_workers`].
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
        self._pool: _Pool | None = None
        self._lock = threading.Lock()
        self._warned_prefill = False

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
        jobs: list[tuple[str, str | None]] = []
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
            jobs.append((gold, response))
        if prefill_signature and not self.thinking_prefilled and not self._warned_prefill:
            self._warned_prefill = True
            logger.warning(
                "Completions close a thinking they never opened (`</think>` without `<think>`), as under a chat "
                "template that pre-fills <think> (DeepSeek-R1-Distill): truncated completions of such a policy will "
                "be judged on their text as plain answers unless thinking_prefilled is set "
                "(REASONFLUX_THINKING_PREFILLED=true under trl grpo; `reasonflux-rl train` reads it from the template)."
            )

        limit = self.timeout_seconds + _KILL_GRACE_SECONDS
        soft_limit = self.timeout_seconds if self._interrupt_in_worker else None
        results, stats = [], _Stats()
        with self._lock:
            if jobs:
                pool = self._get_pool()
                try:
                    results, stats = pool.run(jobs, limit, soft_limit, want_text=log_extra is not None)
                except BaseException:
                    # Interrupted mid-batch (e.g. KeyboardInterrupt): stale items sit in the workers' pipes.
                    pool.close()
                    self._pool = None
                    raise

        scores = [result[0] for result in results]
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
            log_extra("gold_parsed", [result[2] for result in results])
            log_extra("answer_parsed", [result[3] for result in results])
        return scores

    def worker_pids(self) -> list[int]:
        """Process ids of the workers once all are ready (starting the pool if needed); for tests and debugging."""
        with self._lock:
            pool = self._get_pool()
            pool.wait_ready()
            return [worker.process.pid for worker in pool.workers]

    def _get_pool(self) -> _Pool:
        if self._pool is not None and self._pool.owner_pid != os.getpid():
            self._pool = None  # inherited through fork: those workers belong to the parent process
        if self._pool is None:
            self._pool = _Pool(self.num_workers)
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
    # Imported here: rewards imports this module (and the PRM stack, which an outcome-only run need not load early).
    from reasonflux_rl.rewards.config import ENV_PREFIX, reward_arguments_from_env

    environ = os.environ if environ is None else environ
    names = {ENV_PREFIX + name.upper() for name in _ENV_FIELDS}
    # prm_beta=0 so that the PRM checks (a PRM path is required when beta > 0) do not apply to the outcome alone.
    args = reward_arguments_from_env({**{k: v for k, v in environ.items() if k in names}, ENV_PREFIX + "PRM_BETA": "0"})
    return OutcomeReward(
        require_closed_thinking=args.outcome_require_closed_thinking,
        timeout_seconds=args.outcome_timeout_seconds,
        num_workers=args.outcome_num_workers,
        gold_column=args.solution_column,
        thinking_prefilled=bool(args.thinking_prefilled),
    )


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
