"""Benchmark the remote PRM client: throughput with one request in flight against the configured bound.

Run: ``python benchmarks/remote_prm.py``; prints one JSON object on stdout.

Two reference pooling servers (``reasonflux_rl.prm.placement.pooling_server``, the tiny step-classifier PRM on the CPU) run in
their own processes on loopback, each adding ``LATENCY`` seconds to every answer to stand for the round trip and
queueing of a PRM on another node (a real vLLM server batches concurrent requests; this one answers them one by one,
so with no added latency the two CPU cores bound what concurrency can gain). The same R1-shaped completions are
scored through [`RemoteStepScorer`] with ``max_inflight`` 1 and ``BOUND``, interleaved for ``ROUNDS`` rounds, each
keeping its fastest; ``speedup_concurrency`` is the ratio of their completions/s, measured side by side. The scores
of both runs must be identical (``max_abs_diff``).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BOUND = 8
LATENCY = 0.1
SERVERS = 2
ROUNDS = 3
REQUEST_TOKENS = 1024
CALLS = 4  # GRPO-sized calls of 8 completions each, as benchmarks/prm_scoring.py builds them

SERVE = """
import sys
from reasonflux_rl.prm.placement.pooling_server import PoolingServer
server = PoolingServer(sys.argv[1], port=int(sys.argv[2]), model_name="tiny-prm", latency=float(sys.argv[3]))
server.serve_forever()
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, seconds: float = 120.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError(f"the benchmark server at {url} did not start")


def measure() -> dict:
    from prm_scoring import make_calls

    from reasonflux_rl.prm import load_scorer
    from reasonflux_rl.tiny import write_tiny_models

    with tempfile.TemporaryDirectory() as directory:
        prm = write_tiny_models(Path(directory) / "models").prm
        calls = make_calls()[:CALLS]
        problems = [call["problem"] for call in calls for _ in call["completions"]]
        completions = [c for call in calls for c in call["completions"]]
        ports = [_free_port() for _ in range(SERVERS)]
        servers = [
            subprocess.Popen([sys.executable, "-c", SERVE, str(prm), str(port), str(LATENCY)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for port in ports
        ]
        try:
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            for url in urls:
                _wait_healthy(url)
            scorers = {
                bound: load_scorer(prm, server_urls=urls, max_inflight=bound, batch_tokens=REQUEST_TOKENS)
                for bound in (1, BOUND)
            }
            seconds = {bound: [] for bound in scorers}
            scores = {}
            requests = {}
            for _ in range(ROUNDS):
                for bound, scorer in scorers.items():
                    scorer.metrics()
                    start = time.perf_counter()
                    results = scorer.score(problems, completions)
                    seconds[bound].append(time.perf_counter() - start)
                    scores[bound] = [s for r in results for s in r.step_scores]
                    requests[bound] = scorer.metrics().get("requests", 0)
            for scorer in scorers.values():
                scorer.close()
        finally:
            for server in servers:
                server.terminate()
                server.wait()
    best = {bound: min(times) for bound, times in seconds.items()}
    rate = {bound: len(completions) / best[bound] for bound in best}
    return {
        "servers": SERVERS,
        "added_latency_s": LATENCY,
        "completions": len(completions),
        "requests_per_call": requests[BOUND],
        "request_tokens": REQUEST_TOKENS,
        "bound": BOUND,
        "rounds": ROUNDS,
        "seconds_inflight_1": [round(t, 3) for t in seconds[1]],
        f"seconds_inflight_{BOUND}": [round(t, 3) for t in seconds[BOUND]],
        "completions_per_s_inflight_1": round(rate[1], 2),
        f"completions_per_s_inflight_{BOUND}": round(rate[BOUND], 2),
        "speedup_concurrency": round(rate[BOUND] / rate[1], 2),
        "max_abs_diff": max(abs(a - b) for a, b in zip(scores[1], scores[BOUND], strict=True)),
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    # Libraries imported from here on may log to stdout; the JSON must be alone there.
    with contextlib.redirect_stdout(sys.stderr):
        report = measure()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
