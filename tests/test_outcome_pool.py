"""Outcome reward pool (``verify_pool``): hard per-item deadlines, worker replacement, warm workers, threads and TRL's
daemon event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from reasonflux_rl.rewards import verify_pool
from reasonflux_rl.rewards.outcome import OutcomeReward
from reasonflux_rl.rewards.verify_pool import Lost, Pool

LIMIT = 1.0
# Time allowed on top of the limit: the kill grace (0.5 s) plus scheduling slack on a loaded 2-core machine.
MARGIN = 1.5
# Hangs math-verify: without a timeout, verify() was still running after 15 s when this was written.
HANG = "</think>\n\\boxed{9^{9^{9^{9^{9}}}}}"
EASY = [
    ("</think>\n\\boxed{\\frac{1}{2}}", "$0.5$", 1.0),
    ("</think>\n\\boxed{3}", "$4$", 0.0),
    ("\\boxed{7}", "7", 1.0),
]


@pytest.fixture(scope="module")
def reward():
    with OutcomeReward(num_workers=2, timeout_seconds=LIMIT) as reward:
        yield reward


def _batch(repeats: int = 1) -> tuple[list[str], list[str], list[float]]:
    rows = [(f"</think>\n\\boxed{{{i}}}", str(i if i % 3 else i + 1), float(i % 3 != 0)) for i in range(repeats)]
    rows += EASY
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _score_with_hang(reward: OutcomeReward) -> tuple[list, dict, float]:
    completions, golds, expected = _batch(6)
    metrics: dict = {}
    start = time.monotonic()
    scores = reward.score([HANG, *completions], ["5", *golds], metrics.__setitem__)
    elapsed = time.monotonic() - start
    assert scores == [0.0, *expected]
    return scores, metrics, elapsed


def test_pool_is_started_once_and_reused(reward):
    pids = reward.worker_pids()
    assert len(pids) == 2 and os.getpid() not in pids
    completions, golds, expected = _batch(20)
    assert reward.score(completions, golds) == expected
    assert reward.worker_pids() == pids


def test_pathological_item_times_out_and_the_next_call_works(reward):
    pids = set(reward.worker_pids())
    _, metrics, elapsed = _score_with_hang(reward)
    assert elapsed < LIMIT + MARGIN
    assert metrics["outcome/timeouts"] == 1
    assert LIMIT <= metrics["outcome/max_item_seconds"] < LIMIT + MARGIN
    # The worker interrupted the item itself, inside sympy: it is replaced all the same, not trusted further.
    assert metrics["outcome/worker_restarts"] == 1
    assert len(pids & set(reward.worker_pids())) == 1
    completions, golds, expected = _batch(10)
    assert reward.score(completions, golds) == expected


def test_worker_that_cannot_interrupt_itself_is_killed_and_replaced(reward):
    # Simulates an item stuck in C code where the worker's own alarm cannot fire: only the parent's kill helps.
    pids = set(reward.worker_pids())
    reward._interrupt_in_worker = False
    try:
        _, metrics, elapsed = _score_with_hang(reward)
    finally:
        reward._interrupt_in_worker = True
    assert LIMIT < elapsed < LIMIT + MARGIN
    assert metrics["outcome/timeouts"] == 1 and metrics["outcome/worker_restarts"] == 1
    assert len(pids & set(reward.worker_pids())) == 1
    completions, golds, expected = _batch(10)
    assert reward.score(completions, golds) == expected


def test_timeout_from_a_plain_thread(reward):
    out = {}
    thread = threading.Thread(target=lambda: out.update(result=_score_with_hang(reward)))
    thread.start()
    thread.join(timeout=30)
    _, metrics, elapsed = out["result"]
    assert elapsed < LIMIT + MARGIN and metrics["outcome/timeouts"] == 1


def test_timeout_from_an_async_reward_on_a_daemon_event_loop(reward):
    # What GRPOTrainer does for `async def` reward functions (trl.trainer.utils.start_event_loop_in_daemon).
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def async_reward(completions, **kwargs):
        return reward(completions, **kwargs)

    completions, golds, expected = _batch(6)
    metrics: dict = {}
    start = time.monotonic()
    future = asyncio.run_coroutine_threadsafe(
        async_reward(
            [[{"role": "assistant", "content": c}] for c in [HANG, *completions]],
            solution=["5", *golds],
            log_metric=metrics.__setitem__,
        ),
        loop,
    )
    try:
        scores = future.result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
    assert time.monotonic() - start < LIMIT + MARGIN
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
        thread.join(timeout=60)
    assert out == {"a": a[2], "b": b[2]}


def test_worker_killed_mid_batch(reward):
    reward.worker_pids()  # start the pool before the batch, so the loop below can watch it
    completions, golds, expected = _batch(1500)
    out: dict = {}
    metrics: dict = {}
    thread = threading.Thread(target=lambda: out.update(scores=reward.score(completions, golds, metrics.__setitem__)))
    thread.start()
    victim = None
    deadline = time.monotonic() + 20
    while victim is None and time.monotonic() < deadline:
        # Read the live pool without its lock (held by the running call) to catch a worker with work in flight.
        busy = [w for w in reward._pool.workers if w.ready and w.inflight]
        victim = busy[0].process.pid if busy else None
    assert victim is not None, "no worker picked up work"
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=60)
    assert out["scores"] == expected
    assert metrics["outcome/worker_restarts"] == 1 and metrics["outcome/worker_failures"] == 0
    assert victim not in reward.worker_pids()


def test_item_whose_worker_dies_twice_scores_zero():
    # The hanging item is retried once on a fresh worker after a crash; when that one dies too, it scores 0.0.
    with OutcomeReward(num_workers=1, timeout_seconds=60) as reward:
        reward._interrupt_in_worker = False
        reward.worker_pids()  # start the pool
        completions, golds, expected = _batch(3)
        out: dict = {}
        metrics: dict = {}

        def run():
            out["scores"] = reward.score([HANG, *completions], ["5", *golds], metrics.__setitem__)

        thread = threading.Thread(target=run)
        thread.start()
        killed: list[int] = []
        deadline = time.monotonic() + 30
        while len(killed) < 2 and time.monotonic() < deadline:
            worker = reward._pool.workers[0]
            if worker.ready and worker.inflight and worker.process.pid not in killed:
                time.sleep(0.2)  # let it start on the hanging item
                killed.append(worker.process.pid)
                os.kill(worker.process.pid, signal.SIGKILL)
            time.sleep(0.01)
        thread.join(timeout=30)
        assert len(killed) == 2
        assert out["scores"] == [0.0, *expected]
        assert metrics["outcome/worker_restarts"] == 2 and metrics["outcome/worker_failures"] == 1
        assert metrics["outcome/timeouts"] == 0


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
        "reward = OutcomeReward(num_workers=1, timeout_seconds=2.0)\n"
        "print('RESULT', reward.score(['$\\\\boxed{2}$'], ['2']), flush=True)\n"
        "reward.close()\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
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
