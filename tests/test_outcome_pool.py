"""Outcome reward pool (``verify_pool``): hard per-item deadlines, worker replacement, warm workers, threads and TRL's
daemon event loop."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import threading
import time
import traceback
import types

import pytest

from reasonflux_rl.rewards import verify_pool
from reasonflux_rl.rewards.outcome import OutcomeReward
from reasonflux_rl.rewards.verify_pool import Lost, Pool, Stats

# The per-item limit of the tests that time an item out. Only lower bounds are asserted on time, since a loaded
# machine makes things later, never earlier; when the parent acts is checked on a simulated clock instead.
LIMIT = 2.0
# The per-item limit where nothing should time out: no item here takes a minute, however loaded the machine.
SLOW_OK = 60.0
# Hangs math-verify: without a timeout, verify() was still running after 15 s when this was written.
HANG = "</think>\n\\boxed{9^{9^{9^{9^{9}}}}}"
EASY = [
    ("</think>\n\\boxed{\\frac{1}{2}}", "$0.5$", 1.0),
    ("</think>\n\\boxed{3}", "$4$", 0.0),
    ("\\boxed{7}", "7", 1.0),
]


@pytest.fixture(scope="module")
def reward():
    with OutcomeReward(num_workers=2, timeout_seconds=SLOW_OK) as reward:
        yield reward


@pytest.fixture(scope="module")
def limited():
    with OutcomeReward(num_workers=2, timeout_seconds=LIMIT) as reward:
        yield reward


def _batch(repeats: int = 1) -> tuple[list[str], list[str], list[float]]:
    rows = [(f"</think>\n\\boxed{{{i}}}", str(i if i % 3 else i + 1), float(i % 3 != 0)) for i in range(repeats)]
    rows += EASY
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _score_with_hang(reward: OutcomeReward) -> dict:
    """Score a batch whose first item hangs; its metrics. That item opens a chunk, so the parent starts its clock
    before the worker starts the item: its measured time is at least what the worker spent on it."""
    completions, golds, expected = _batch(6)
    metrics: dict = {}
    scores = reward.score([HANG, *completions], ["5", *golds], metrics.__setitem__)
    assert scores == [0.0, *expected]
    return metrics


def _on_dispatch(pool: Pool, monkeypatch, act) -> None:
    """Call ``act(worker)`` for every worker with work in flight right after the pool hands out work: a test acts on
    a busy worker at a known point of the batch, instead of polling for one from another thread."""
    dispatch = pool._dispatch

    def dispatch_then_act(batch, now):
        dispatch(batch, now)
        for worker in list(pool.workers):
            if worker.inflight:
                act(worker)

    monkeypatch.setattr(pool, "_dispatch", dispatch_then_act)


class SimulatedTime:
    """The pool's clock and its waits on the workers, in simulated seconds: a wait that nothing answers within
    ``poll`` real seconds returns as if ``step`` seconds (at most its whole timeout) had passed."""

    def __init__(self, poll: float, step: float = float("inf")):
        self.start = self.now = 1000.0
        self.poll, self.step = poll, step
        self.waits: list[float] = []
        self._wait = verify_pool.wait

    def monotonic(self) -> float:
        return self.now

    def wait(self, handles, timeout=None):
        self.waits.append(timeout)
        ready = self._wait(handles, self.poll)
        if not ready:
            self.now += min(timeout, self.step)
        return ready

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(verify_pool, "time", types.SimpleNamespace(monotonic=self.monotonic))
        monkeypatch.setattr(verify_pool, "wait", self.wait)


def test_pool_is_started_once_and_reused(reward):
    pids = reward.worker_pids()
    assert len(pids) == 2 and os.getpid() not in pids
    completions, golds, expected = _batch(20)
    assert reward.score(completions, golds) == expected
    assert reward.worker_pids() == pids


def test_pathological_item_times_out_and_the_next_call_works(limited):
    pids = set(limited.worker_pids())
    metrics = _score_with_hang(limited)
    assert metrics["outcome/timeouts"] == 1
    assert metrics["outcome/max_item_seconds"] >= LIMIT  # it had its whole limit
    # The worker interrupted the item itself, inside sympy: it is replaced all the same, not trusted further.
    assert metrics["outcome/worker_restarts"] == 1
    assert len(pids & set(limited.worker_pids())) == 1
    completions, golds, expected = _batch(10)
    assert limited.score(completions, golds) == expected


def test_worker_that_cannot_interrupt_itself_is_killed_and_replaced(limited):
    # Simulates an item stuck in C code where the worker's own alarm cannot fire: only the parent's kill helps.
    pids = set(limited.worker_pids())
    limited._interrupt_in_worker = False
    try:
        metrics = _score_with_hang(limited)
    finally:
        limited._interrupt_in_worker = True
    assert metrics["outcome/max_item_seconds"] >= LIMIT + verify_pool._KILL_GRACE_SECONDS  # killed only after both
    assert metrics["outcome/timeouts"] == 1 and metrics["outcome/worker_restarts"] == 1
    assert len(pids & set(limited.worker_pids())) == 1
    completions, golds, expected = _batch(10)
    assert limited.score(completions, golds) == expected


def test_parent_kills_a_stuck_item_exactly_at_its_limit_plus_the_grace(monkeypatch):
    # A simulated clock that moves one second per wait: no kill at +1 s or +2 s, the kill at +2.5 s, and no wait
    # of the parent's runs past that deadline.
    with Pool(time.sleep, num_workers=1) as pool:
        pool.wait_ready()
        pid = pool.workers[0].process.pid
        clock = SimulatedTime(poll=0.0, step=1.0)
        clock.install(monkeypatch)
        results, stats = pool.run([(3600,)], limit=LIMIT, interrupt=False)
        monkeypatch.undo()
        assert pool.workers[0].process.pid != pid
    hard_limit = LIMIT + verify_pool._KILL_GRACE_SECONDS
    assert clock.waits == [hard_limit, hard_limit - 1, hard_limit - 2]
    assert clock.now - clock.start == hard_limit
    assert results == [Lost.TIMEOUT]
    assert stats == Stats(timeouts=1, restarts=1, failures=0, max_item_seconds=hard_limit)


def test_worker_interrupts_its_item_itself_before_the_parent_would_kill_it(monkeypatch):
    # The simulated clock stands still while the parent waits for an answer (the worker's own alarm, in real
    # seconds, fires well within the minute of polling): the parent's kill deadline never came.
    with Pool(time.sleep, num_workers=1) as pool:
        pool.wait_ready()
        clock = SimulatedTime(poll=SLOW_OK)
        clock.install(monkeypatch)
        results, stats = pool.run([(3600,)], limit=LIMIT)
        monkeypatch.undo()
    assert results == [Lost.TIMEOUT]
    assert (stats.timeouts, stats.restarts) == (1, 1)
    assert clock.now == clock.start


def test_timeout_from_a_plain_thread(limited):
    out = {}
    thread = threading.Thread(target=lambda: out.update(metrics=_score_with_hang(limited)))
    thread.start()
    thread.join(timeout=300)
    assert out["metrics"]["outcome/timeouts"] == 1


def test_timeout_from_an_async_reward_on_a_daemon_event_loop(limited):
    # What GRPOTrainer does for `async def` reward functions (trl.trainer.utils.start_event_loop_in_daemon).
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def async_reward(completions, **kwargs):
        return limited(completions, **kwargs)

    completions, golds, expected = _batch(6)
    metrics: dict = {}
    future = asyncio.run_coroutine_threadsafe(
        async_reward(
            [[{"role": "assistant", "content": c}] for c in [HANG, *completions]],
            solution=["5", *golds],
            log_metric=metrics.__setitem__,
        ),
        loop,
    )
    try:
        scores = future.result(timeout=300)
    finally:
        loop.call_soon_threadsafe(loop.stop)
    assert scores == [0.0, *expected] and metrics["outcome/timeouts"] == 1


def test_two_threads_at_once_do_not_mix_results(reward):
    a, b = _batch(60), _batch(45)
    out = {}
    threads = [
        threading.Thread(target=lambda key=key, batch=batch: out.update({key: reward.score(batch[0], batch[1])}))
        for key, batch in (("a", a), ("b", b))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert out == {"a": a[2], "b": b[2]}


def test_worker_killed_mid_batch(reward, monkeypatch):
    reward.worker_pids()  # start the pool before the batch, so that its dispatch can be watched
    killed: list[int] = []

    def kill_the_first_busy_worker(worker):
        # SIGKILL, as the OOM killer would, while the worker holds a chunk of items: the one it was running is
        # retried on its replacement, the ones queued behind it go back to the queue.
        if not killed:
            killed.append(worker.process.pid)
            os.kill(worker.process.pid, signal.SIGKILL)

    _on_dispatch(reward._pool, monkeypatch, kill_the_first_busy_worker)
    completions, golds, expected = _batch(300)
    metrics: dict = {}
    assert reward.score(completions, golds, metrics.__setitem__) == expected
    monkeypatch.undo()
    assert len(killed) == 1
    assert metrics["outcome/worker_restarts"] == 1 and metrics["outcome/worker_failures"] == 0
    assert metrics["outcome/timeouts"] == 0
    assert killed[0] not in reward.worker_pids()


def test_item_whose_worker_dies_twice_scores_zero(monkeypatch):
    # The hanging item is retried once on a fresh worker after a crash; when that one dies too, it scores 0.0.
    with OutcomeReward(num_workers=1, timeout_seconds=SLOW_OK) as reward:
        reward._interrupt_in_worker = False
        reward.worker_pids()  # start the pool
        killed: list[int] = []

        def kill_whoever_runs_the_hanging_item(worker):
            if worker.inflight[0] == 0:
                killed.append(worker.process.pid)
                os.kill(worker.process.pid, signal.SIGKILL)

        _on_dispatch(reward._pool, monkeypatch, kill_whoever_runs_the_hanging_item)
        completions, golds, expected = _batch(3)
        metrics: dict = {}
        scores = reward.score([HANG, *completions], ["5", *golds], metrics.__setitem__)
        assert len(killed) == 2 and killed[0] != killed[1]
        assert scores == [0.0, *expected]
        assert metrics["outcome/worker_restarts"] == 2 and metrics["outcome/worker_failures"] == 1
        assert metrics["outcome/timeouts"] == 0


def test_an_interrupted_batch_closes_the_pool(monkeypatch):
    # Ctrl-C (KeyboardInterrupt) while items are in the workers: their answers would sit in the pipes and be taken
    # for the next batch's, so the pool is closed and the next call starts a fresh one.
    with OutcomeReward(num_workers=1, timeout_seconds=SLOW_OK) as reward:
        old = set(reward.worker_pids())
        processes = [worker.process for worker in reward._pool.workers]
        in_flight: list[int] = []

        def interrupted_wait(handles, timeout=None):
            in_flight.extend(len(worker.inflight) for worker in reward._pool.workers)
            raise KeyboardInterrupt

        monkeypatch.setattr(verify_pool, "wait", interrupted_wait)
        completions, golds, expected = _batch(40)
        with pytest.raises(KeyboardInterrupt):
            reward.score(completions, golds)
        monkeypatch.undo()
        assert in_flight and all(in_flight)  # the interrupt came while the worker held items
        assert reward._pool is None
        assert not any(process.is_alive() for process in processes)
        metrics: dict = {}
        assert reward.score(completions, golds, metrics.__setitem__) == expected
        assert metrics["outcome/worker_restarts"] == 0
        assert not old & set(reward.worker_pids())


@pytest.mark.timeout(300)
def test_a_pool_inherited_through_fork_is_left_to_the_parent():
    # A forked child (a data-loader worker, say) that scores must start workers of its own: sending items to its
    # parent's would take the parent's answers, and dropping the inherited pool must not stop the parent's workers.
    with OutcomeReward(num_workers=1, timeout_seconds=SLOW_OK) as reward:
        parent_workers = reward.worker_pids()
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the child must never return into pytest
            code, report = 1, {}
            try:
                os.close(read)
                report["scores"] = reward.score(["\\boxed{1}", "\\boxed{3}"], ["1", "2"])
                report["workers"] = reward.worker_pids()
                reward.close()
                code = 0
            except BaseException:
                report["error"] = traceback.format_exc()
            finally:
                with os.fdopen(write, "w") as out:
                    json.dump(report, out)
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as answer:
            report = json.loads(answer.read() or "{}")
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, report.get("error", report)
        assert report["scores"] == [1.0, 0.0]
        assert not set(report["workers"]) & set(parent_workers)
        # The parent's workers lived through the child's use and close, and still answer, without a restart.
        assert all(worker.process.is_alive() for worker in reward._pool.workers)
        metrics: dict = {}
        assert reward.score(["\\boxed{2}"], ["2"], metrics.__setitem__) == [1.0]
        assert reward.worker_pids() == parent_workers and metrics["outcome/worker_restarts"] == 0


@pytest.mark.timeout(120)
def test_a_worker_that_dies_while_starting_fails_the_batch():
    # A worker that cannot even start (a broken import, say) will not start next time either: the batch fails
    # loudly, with the exit code, instead of replacing it for ever.
    with Pool(abs, num_workers=2, setup=functools.partial(os._exit, 3), name="doomed") as pool:
        pids = [worker.process.pid for worker in pool.workers]
        with pytest.raises(RuntimeError, match=r"a doomed worker died while starting \(exit code 3\)"):
            pool.run([(1,), (-2,)], limit=SLOW_OK)
        assert [worker.process.pid for worker in pool.workers] == pids  # none was replaced
    with Pool(abs, num_workers=1, setup=functools.partial(os._exit, 3), name="doomed") as pool:
        with pytest.raises(RuntimeError, match=r"a doomed worker did not become ready \(exit code 3\)"):
            pool.wait_ready()


def test_a_worker_that_never_gets_ready_fails_the_batch(monkeypatch):
    monkeypatch.setattr(verify_pool, "_STARTUP_SECONDS", 1.0)
    with Pool(abs, num_workers=1, setup=functools.partial(time.sleep, 3600), name="stuck") as pool:
        with pytest.raises(RuntimeError, match="no stuck worker became ready within 1 s"):
            pool.run([(1,)], limit=SLOW_OK)
        with pytest.raises(RuntimeError, match="a stuck worker did not become ready"):
            pool.wait_ready()


def test_close_stops_workers_and_a_later_call_restarts():
    reward = OutcomeReward(num_workers=1)
    pool_processes = None
    with reward:
        assert reward.score(["\\boxed{1}"], ["1"]) == [1.0]
        pool_processes = [w.process for w in reward._pool.workers]
    assert all(not p.is_alive() for p in pool_processes)
    assert reward.score(["\\boxed{1}"], ["2"]) == [0.0]
    reward.close()


def test_responses_larger_than_the_pipe_buffer(reward):
    filler = "We keep checking the computation carefully. " * 5000  # ~220 kB of final response per row
    completions = [f"</think>\n{filler}\\boxed{{{i}}}" for i in range(6)]
    assert reward.score(completions, ["0", "1", "2", "0", "0", "5"]) == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]


def test_unguarded_script_is_not_re_run_by_workers(tmp_path):
    """A training script without `if __name__ == "__main__":` must not run again inside each verifier."""
    import subprocess
    import sys

    script = tmp_path / "train_unguarded.py"
    script.write_text(
        "from reasonflux_rl.rewards.outcome import OutcomeReward\n"
        f"reward = OutcomeReward(num_workers=1, timeout_seconds={SLOW_OK})\n"
        "print('RESULT', reward.score(['$\\\\boxed{2}$'], ['2']), flush=True)\n"
        "reward.close()\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("RESULT") == 1
    assert "RESULT [1.0]" in proc.stdout


def test_workers_and_their_replacements_fork_from_a_warm_server(reward):
    # The outcome reward's pool started this process's forkserver with math-verify imported and warmed up by
    # _verify_warmup. eval is a job any worker can unpickle; the second item runs on the replacement of the first's.
    reward.worker_pids()
    warm = "'reasonflux_rl.rewards._verify_warmup' in __import__('sys').modules"
    with Pool(eval, num_workers=1) as pool:
        results, stats = pool.run([(warm,), ("__import__('time').sleep(60)",), (warm,)], limit=LIMIT)
    assert results == [True, Lost.TIMEOUT, True]
    assert (stats.timeouts, stats.restarts) == (1, 1)


def test_pool_item_whose_job_kills_its_worker_twice_is_lost():
    with Pool(os._exit, num_workers=1) as pool:
        results, stats = pool.run([(3,)], limit=30.0)
    assert results == [Lost.WORKER_DIED]
    assert (stats.restarts, stats.failures, stats.timeouts) == (2, 1, 0)


def test_pool_knows_nothing_of_the_outcome_rules():
    """No import cycle: the pool is given its job and imports nothing of this package, not even inside a function."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(verify_pool.__file__).read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    modules = [alias.name for node in imports if isinstance(node, ast.Import) for alias in node.names]
    modules += [node.module or "" for node in imports if isinstance(node, ast.ImportFrom) and not node.level]
    assert not [node for node in imports if getattr(node, "level", 0)]  # no relative import
    assert not [name for name in modules if name.startswith("reasonflux_rl")]
