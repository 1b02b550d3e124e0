"""Worker processes that run a job function on many items, each under a hard wall-clock limit.

The outcome reward's judging rules live in ``outcome.py``; this module holds only the processes that run them, and
knows nothing of math-verify: it runs the top-level function it is given (pickled by reference, so each worker
imports the job's module itself) and reports, per item, its return value or why there is none ([`Lost`]).

A worker interrupts an item itself at the limit (``SIGALRM``, which only works in a process's main thread: the
reason for workers at all, since TRL may call a reward from an event-loop thread); the parent kills a worker that
cannot, half a second later. Either way the item is lost to a timeout and the worker is replaced, because a job
interrupted at an arbitrary point (sympy, for the outcome reward) may leave its caches half-built. A worker that
crashes is replaced too, and the item it was running is retried once on the replacement.

Workers fork from a forkserver (never from the caller, which may hold torch/CUDA threads) that imports the modules
named in ``preload`` first, so a replacement is ready in milliseconds with those imports and whatever they warmed up.
"""

from __future__ import annotations

import enum
import multiprocessing
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
from multiprocessing.connection import Connection, wait
from typing import Any, Self

# A worker that ignores its own in-process interrupt (stuck in C code) is killed this long after the limit.
_KILL_GRACE_SECONDS = 0.5
# Most items per message to a worker: amortises IPC; each item still gets its own deadline.
_MAX_CHUNK = 16
# A pool whose workers cannot even import their job in this long is broken; fail loudly instead of hanging.
_STARTUP_SECONDS = 120.0
_READY = "ready"
_MAIN_SWAP_LOCK = threading.Lock()


class Lost(enum.Enum):
    """Why an item of [`Pool.run`] has no result: it ran out of time, or its worker died on it twice.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.verify_pool import Lost

    >>> [lost.value for lost in Lost]
    ['timeout', 'worker died']

    ```
    """

    TIMEOUT = "timeout"
    WORKER_DIED = "worker died"


@dataclass
class Stats:
    """What one [`Pool.run`] call went through: items lost to timeouts, workers replaced, items lost to crashes
    (their worker died twice) and the longest any item took, in seconds.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.verify_pool import Stats

    >>> Stats()
    Stats(timeouts=0, restarts=0, failures=0, max_item_seconds=0.0)

    ```
    """

    timeouts: int = 0
    restarts: int = 0
    failures: int = 0
    max_item_seconds: float = 0.0


def default_num_workers(environ: dict[str, str] | None = None) -> int:
    """Verification workers per process: the CPUs this process may use, shared among the ranks of this node.

    torchrun and accelerate set ``LOCAL_WORLD_SIZE`` (the processes on this node); each rank has its own reward and
    pool, so without the division an 8-GPU node would start 8 workers per core. At least 1.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.verify_pool import default_num_workers

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


# ----------------------------------------------------------------------------------------------- worker process


class _ItemTimeout(BaseException):
    """Raised by SIGALRM inside a worker; a BaseException so a job's own ``except Exception`` cannot swallow it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _ItemTimeout


def _run_within(limit: float | None, job: Callable[..., Any], args: tuple) -> Any:
    # Interrupting here is the cheap path (no process restart); the parent's kill is only the backstop.
    try:
        if limit is not None:
            signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            return job(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _ItemTimeout:
        return Lost.TIMEOUT


def _worker_main(
    conn: Connection,
    job: Callable[..., Any],
    setup: Callable[[], None] | None,
    warm_up: Callable[[], None] | None,
) -> None:
    # Ctrl-C reaches the whole process group; the parent owns shutdown, so a worker must not die mid-item.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_alarm)
    if setup is not None:
        setup()
    # Warm up before reporting ready: the parent starts each item's clock only once a worker is ready. A forkserver
    # that preloaded the warm-up has done it already, so this is quick; it matters where the forkserver was started
    # by someone else, without that preload. A replacement gets no warm-up: it should take work at once, warm or not.
    if warm_up is not None:
        warm_up()
    conn.send(_READY)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        limit, items = message
        for pos, args in items:
            conn.send((pos, _run_within(limit, job, args)))


# ----------------------------------------------------------------------------------------------- parent side


def _mp_context(preload: Sequence[str]) -> multiprocessing.context.BaseContext:
    # Never fork the caller: a trainer holds torch/CUDA threads. The forkserver forks workers from a clean process
    # that has imported (and so warmed up) the preloaded modules, so a replacement for a killed or timed-out worker
    # is ready in milliseconds. The preload only counts if this process has not started its forkserver yet.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, *preload])
    return ctx


def _forget_inherited_forkserver() -> None:
    # A process forked from one that started a forkserver inherits multiprocessing's record of that server, but it
    # is not the server's parent: multiprocessing's liveness check (os.waitpid) then fails and no worker could start.
    # Forget it, so that this process starts its own forkserver on first use; the parent keeps using its own.
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is None:
        return
    alive_fd = server._forkserver_alive_fd
    server._forkserver_pid = server._forkserver_address = server._forkserver_alive_fd = None
    server._lock = threading.Lock()  # another thread of the parent may have held it at the fork
    if alive_fd is not None:
        try:
            os.close(alive_fd)  # only this process's copy: the parent's forkserver lives on
        except OSError:
            pass


if "forkserver" in multiprocessing.get_all_start_methods() and hasattr(os, "register_at_fork"):
    import multiprocessing.forkserver

    os.register_at_fork(after_in_child=_forget_inherited_forkserver)


@dataclass
class _Worker:
    process: Any
    conn: Connection
    created: float = field(default_factory=time.monotonic)
    ready: bool = False
    inflight: deque = field(default_factory=deque)  # item positions, in the order the worker runs them
    started: float = 0.0  # when inflight[0] began running
    reserved: list = field(default_factory=list)  # a crashed worker's item, retried first on its replacement


@dataclass
class _Batch:
    """One [`Pool.run`] call's bookkeeping: the items still to hand out and what has come back."""

    items: Sequence[tuple]
    hard_limit: float  # when the parent kills a worker, counted from the start of its current item
    soft_limit: float | None  # when a worker interrupts its item itself; None: never
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self.results: list[Any] = [None] * len(self.items)
        self.queue: deque[int] = deque(range(len(self.items)))
        self.crashes = [0] * len(self.items)
        self.remaining = len(self.items)

    def finish(self, pos: int, result: Any) -> None:
        self.results[pos] = result
        self.remaining -= 1


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


class Pool:
    r"""
    Worker processes that run ``job(*item)`` for each item of a batch, plus the dispatch loop that enforces the
    per-item deadline. Not thread-safe by itself: one ``run`` at a time.

    Args:
        job (`Callable`):
            A top-level (picklable) function; its return values must be picklable too.
        num_workers (`int`):
            Number of worker processes, started at once.
        setup (`Callable[[], None]`, *optional*):
            A top-level function every worker runs first, replacements included.
        warm_up (`Callable[[], None]`, *optional*):
            A top-level function the first workers run before they report ready (replacements skip it).
        preload (`Sequence[str]`, *optional*):
            Modules the forkserver imports before it forks any worker, if this process has not started it yet.
        name (`str`, *optional*, defaults to `"verifier"`):
            Name of the worker processes, also used in error messages.

    Example:
    ```python
    >>> from operator import add
    >>> from reasonflux_rl.rewards.verify_pool import Pool

    >>> with Pool(add, num_workers=1) as pool:
    ...     results, stats = pool.run([(1, 2), ("a", "b")], limit=5.0)
    >>> results, stats.timeouts
    ([3, 'ab'], 0)

    ```
    """

    def __init__(
        self,
        job: Callable[..., Any],
        num_workers: int,
        *,
        setup: Callable[[], None] | None = None,
        warm_up: Callable[[], None] | None = None,
        preload: Sequence[str] = (),
        name: str = "verifier",
    ) -> None:
        self.owner_pid = os.getpid()
        self.name = name
        self._job, self._setup, self._warm_up = job, setup, warm_up
        self._ctx = _mp_context(preload)
        self.workers = [self._start_worker() for _ in range(num_workers)]
        self._finalizer = weakref.finalize(self, _stop_workers, self.workers, self.owner_pid)

    def _start_worker(self, warm_up: bool = True) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, self._job, self._setup, self._warm_up if warm_up else None),
            name=self.name,
            daemon=True,
        )
        # A spawned or forkserver child re-imports the parent's main script unless told otherwise; a training script
        # without an `if __name__ == "__main__":` guard would then train again inside every worker. The worker
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
        """Stop the worker processes (also done when the pool is garbage-collected)."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def wait_ready(self) -> None:
        """Block until every worker has warmed up; only while no batch is running (a READY is then all it sends)."""
        deadline = time.monotonic() + _STARTUP_SECONDS
        for worker in self.workers:
            try:
                if not worker.ready and worker.conn.poll(max(0.0, deadline - time.monotonic())):
                    worker.ready = worker.conn.recv() == _READY
            except (EOFError, OSError):
                # Its pipe closed: it died. Its exit code comes a moment later (from the forkserver); wait for it,
                # or the error would report a dead worker's exit code as None, as if it were still running.
                worker.process.join(timeout=5.0)
            if not worker.ready:
                code = worker.process.exitcode
                raise RuntimeError(f"a {self.name} worker did not become ready (exit code {code})")

    def run(self, items: Sequence[tuple], limit: float, *, interrupt: bool = True) -> tuple[list[Any], Stats]:
        r"""
        Run the job on every item (a tuple of its arguments), at most ``limit`` seconds each; returns the results
        in item order, a [`Lost`] where an item timed out or its worker died on it twice, and the [`Stats`].

        With ``interrupt=False`` workers do not interrupt items themselves, as if every item were stuck in C code:
        only the parent's kill, half a second after the limit, stops them (for tests).

        Example:
        ```python
        >>> from time import sleep
        >>> from reasonflux_rl.rewards.verify_pool import Pool

        >>> with Pool(sleep, num_workers=1) as pool:
        ...     results, stats = pool.run([(0,), (60,), (0,)], limit=0.5)
        >>> results, stats.timeouts, stats.restarts
        ([None, <Lost.TIMEOUT: 'timeout'>, None], 1, 1)

        ```
        """
        batch = _Batch(items, hard_limit=limit + _KILL_GRACE_SECONDS, soft_limit=limit if interrupt else None)
        while batch.remaining:
            now = time.monotonic()
            self._dispatch(batch, now)
            handles = [worker.conn for worker in self.workers] + [worker.process.sentinel for worker in self.workers]
            signalled = set(wait(handles, self._wait_seconds(batch, now)))
            for worker in list(self.workers):
                self._settle(worker, signalled, batch)
        return batch.results, batch.stats

    def _dispatch(self, batch: _Batch, now: float) -> None:
        """Hand a chunk of items to every idle worker."""
        for worker in self.workers:
            # Only idle workers get work: a worker busy on a stuck item does not read its pipe, and a send larger
            # than the pipe buffer would then block the parent and its deadlines.
            if not worker.ready or worker.inflight or not (batch.queue or worker.reserved):
                continue
            # Chunks shrink as the queue drains, so no worker is left with a long tail while the others idle.
            size = max(1, min(_MAX_CHUNK, len(batch.queue) // (2 * len(self.workers))))
            chunk = worker.reserved or [batch.queue.popleft() for _ in range(size)]
            worker.reserved = []
            worker.started = now
            worker.inflight.extend(chunk)
            try:
                worker.conn.send((batch.soft_limit, [(pos, batch.items[pos]) for pos in chunk]))
            except OSError:
                pass  # it just died: its sentinel fires and its items are requeued in _settle

    def _wait_seconds(self, batch: _Batch, now: float) -> float:
        """How long to wait for the workers before the next deadline (the earliest item's, or a worker's start)."""
        busy = [worker for worker in self.workers if worker.inflight]
        if busy:
            return max(0.0, min(worker.started for worker in busy) + batch.hard_limit - now)
        # Nothing is running, so the remaining work waits for a worker that is still starting.
        starting = [worker.created + _STARTUP_SECONDS for worker in self.workers if not worker.ready]
        if not starting or now >= min(starting):
            raise RuntimeError(f"no {self.name} worker became ready within {_STARTUP_SECONDS:.0f} s")
        return min(starting) - now

    def _settle(self, worker: _Worker, signalled: set, batch: _Batch) -> None:
        """Take in what ``worker`` sent, then replace it if it interrupted an item, died or overran its deadline."""
        dead = worker.process.sentinel in signalled
        interrupted = False
        if worker.conn in signalled or dead:
            interrupted, broken = self._receive(worker, batch)
            dead = dead or broken
        if interrupted:
            # The worker interrupted the item itself, at an arbitrary point inside the job, whose caches may now
            # hold half-built entries: replace it rather than trust it with the next item.
            batch.stats.timeouts += 1
            self._retire(worker, batch, lost_item=False)
        elif dead:
            if not worker.ready:
                # A worker that cannot even start will not start next time either: fail loudly.
                worker.process.join(timeout=1.0)
                code = worker.process.exitcode
                raise RuntimeError(f"a {self.name} worker died while starting (exit code {code})")
            running, fresh = self._retire(worker, batch, lost_item=True)
            if running is not None:
                self._retry_or_fail(running, fresh, batch)
        elif worker.inflight and time.monotonic() >= worker.started + batch.hard_limit:
            batch.stats.max_item_seconds = max(batch.stats.max_item_seconds, time.monotonic() - worker.started)
            running, _ = self._retire(worker, batch, lost_item=True)
            batch.stats.timeouts += 1
            batch.finish(running, Lost.TIMEOUT)

    def _receive(self, worker: _Worker, batch: _Batch) -> tuple[bool, bool]:
        """Read ``worker``'s messages; (it interrupted an item, its pipe broke). Stops after an interrupted item."""
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                now = time.monotonic()
                if message == _READY:
                    worker.ready = True
                    continue
                pos, result = message
                if not worker.inflight or worker.inflight[0] != pos:
                    raise RuntimeError(f"a {self.name} worker answered item {pos} out of order")
                worker.inflight.popleft()
                batch.stats.max_item_seconds = max(batch.stats.max_item_seconds, now - worker.started)
                worker.started = now
                batch.finish(pos, result)
                if result is Lost.TIMEOUT:
                    return True, False
        except (EOFError, OSError):
            return False, True
        return False, False

    def _retire(self, worker: _Worker, batch: _Batch, lost_item: bool) -> tuple[int | None, _Worker]:
        """Requeue ``worker``'s items and replace it; returns the item it was running if ``lost_item`` (it was killed
        or crashed on that one), and the replacement. Items queued behind are not to blame, even if one had started."""
        batch.stats.restarts += 1
        running = worker.inflight.popleft() if worker.inflight and lost_item else None
        batch.queue.extendleft(reversed(worker.inflight))
        worker.inflight.clear()
        batch.queue.extendleft(reversed(worker.reserved))
        return running, self._replace(worker)

    def _retry_or_fail(self, pos: int, replacement: _Worker, batch: _Batch) -> None:
        """An item whose worker crashed is retried first on the replacement; if that one dies on it too, it is lost."""
        if batch.crashes[pos] == 0:
            batch.crashes[pos] += 1
            replacement.reserved.append(pos)
        else:
            batch.stats.failures += 1
            batch.finish(pos, Lost.WORKER_DIED)

    def _replace(self, worker: _Worker) -> _Worker:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5.0)
        worker.conn.close()
        fresh = self._start_worker(warm_up=False)
        self.workers[self.workers.index(worker)] = fresh
        return fresh
