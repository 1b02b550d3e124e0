"""A client for vLLM's pooling API (``POST /pooling``) spread over several servers, robust to slow and failing ones.

Inputs travel as token ids, never as text: the PRM's tokenizer runs in this process, so a server cannot tokenise a
step tag differently and the number of score rows it must answer is known in advance.

- At most ``max_inflight`` requests are in flight from this process; each goes to the server in rotation with the
  fewest requests in flight from here.
- A connection error, a timeout, an HTTP 5xx (or 408/429) or a body that is not JSON is retried on the next server
  after an exponential back-off with full jitter, at most ``retries`` times. Any other 4xx is the request's fault and
  is raised at once, as is an answer of the wrong shape.
- A server that fails ``failures_to_cooldown`` times in a row leaves the rotation for ``cooldown`` seconds; after that
  it must answer ``GET /health`` before it gets requests again.
- A call never takes longer than ``deadline`` seconds: what is not answered by then raises
  [`PRMUnavailableError`].
"""

from __future__ import annotations

import http.client
import json
import math
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

from reasonflux_rl.prm.engine.batching import length_buckets

TASK = "token_classify"
RETRYABLE_4XX = (408, 429)


class PRMServerError(RuntimeError):
    """A PRM server answered something that cannot be used (a rejected request, an answer of the wrong shape).

    Retrying would not help, so it is never retried and no failure policy turns it into a missing score.
    """


class PRMUnavailableError(PRMServerError):
    """No PRM server answered in time: every server down, failing or slow past the deadline, retries spent."""


class _Retryable(Exception):
    """One attempt failed in a way another attempt (on this or another server) may not."""


@dataclass
class _Server:
    url: str
    inflight: int = 0
    failures: int = 0
    down_until: float = 0.0
    probation: bool = False


class PoolingClient:
    """Send token-id inputs to the ``/pooling`` endpoint of one or more vLLM servers; answers come back in order.

    Args:
        urls: base URLs of the servers, e.g. ``["http://prm-node-0:8001"]``.
        model: the served model name sent with each request; ``None`` asks the first server that answers
            ``/v1/models`` (it must serve exactly one model).
        max_inflight: requests in flight at once from this client.
        request_tokens: token budget of one request (inputs are grouped up to it; a longer input goes alone).
        timeout: seconds one attempt may take.
        retries: further attempts after a failed one.
        deadline: seconds one [`pool`] call may take in all, retries and back-off included.
        backoff: first back-off bound in seconds; doubles per attempt up to ``max_backoff``.
        failures_to_cooldown: consecutive failures that take a server out of rotation.
        cooldown: seconds a failing server stays out.

    Example:
    ```python
    >>> from reasonflux_rl.prm.placement.pooling_client import PoolingClient, PRMUnavailableError
    >>> client = PoolingClient(["http://127.0.0.1:9"], model="prm", retries=1, backoff=0.01, deadline=5)
    >>> try:
    ...     client.pool([[1, 2, 3]])
    ... except PRMUnavailableError as err:
    ...     print(str(err).split(":")[0])
    no PRM server answered a request after 2 attempts
    >>> client.close()

    ```
    """

    def __init__(
        self,
        urls: Sequence[str],
        model: str | None = None,
        *,
        max_inflight: int = 8,
        request_tokens: int = 16384,
        timeout: float = 120.0,
        retries: int = 3,
        deadline: float = 600.0,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        failures_to_cooldown: int = 3,
        cooldown: float = 30.0,
        health_timeout: float = 5.0,
    ) -> None:
        if not urls:
            raise ValueError("PoolingClient needs at least one server URL")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"PRM server URL {url!r} must start with http:// or https://")
        for name, value in (("max_inflight", max_inflight), ("request_tokens", request_tokens),
                            ("failures_to_cooldown", failures_to_cooldown)):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        for name, value in (("timeout", timeout), ("deadline", deadline), ("health_timeout", health_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if retries < 0 or backoff < 0 or cooldown < 0:
            raise ValueError("retries, backoff and cooldown must not be negative")
        self.servers = [_Server(url.rstrip("/")) for url in urls]
        self.model = model
        self.max_inflight = max_inflight
        self.request_tokens = request_tokens
        self.timeout = timeout
        self.retries = retries
        self.deadline = deadline
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.failures_to_cooldown = failures_to_cooldown
        self.cooldown = cooldown
        self.health_timeout = health_timeout
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._turn = 0
        self._random = random.Random()
        self._executor = ThreadPoolExecutor(max_inflight, thread_name_prefix="prm-pooling")

    def close(self) -> None:
        """Stop the request threads (requests still running finish in the background)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def pop_stats(self) -> dict[str, int]:
        """Counts since the last call: ``requests``, ``retries``, ``cooldowns`` (servers taken out of rotation)."""
        with self._lock:
            stats, self.stats = dict(self.stats), Counter()
        return stats

    # -- what a server says about itself -------------------------------------------------------------------------

    def health(self, url: str) -> str | None:
        """``None`` when ``GET {url}/health`` answers 200, else what went wrong."""
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=self.health_timeout) as response:
                return None if response.status == 200 else f"HTTP {response.status}"
        except urllib.error.HTTPError as err:
            return f"HTTP {err.code}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            return str(getattr(err, "reason", err)) or type(err).__name__

    def served_models(self, url: str) -> dict[str, int | None]:
        """The models ``GET {url}/v1/models`` lists, each with its ``max_model_len`` (``None`` when not given)."""
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=self.health_timeout) as response:
                listing = json.loads(response.read())
            return {entry["id"]: entry.get("max_model_len") for entry in listing["data"]}
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as err:
            raise PRMServerError(f"{url}/v1/models did not list the served models: {err}") from None

    def pool_on(self, url: str, inputs: list[list[int]]) -> list[list[list[float]]]:
        """One request to one server, no retry: for start-up checks that must hear from every server."""
        server = next((s for s in self.servers if s.url == url), _Server(url.rstrip("/")))
        try:
            return self._post(server, inputs, time.monotonic() + min(self.timeout, self.deadline))
        except _Retryable as err:
            raise PRMUnavailableError(f"{url}/pooling: {err}") from None

    # -- scoring ----------------------------------------------------------------------------------------------------

    def pool(self, inputs: Sequence[list[int]]) -> list[list[list[float]]]:
        """The server's rows for each input (``[rows][labels]``), in input order; empty inputs get ``[]``.

        Raises [`PRMUnavailableError`] when the servers do not answer within the deadline or the retries, and
        [`PRMServerError`] when an answer cannot be used.
        """
        deadline = time.monotonic() + self.deadline
        groups = length_buckets([len(x) for x in inputs], self.request_tokens, packed=True)
        futures = {self._executor.submit(self._request, [list(inputs[k]) for k in g], deadline): g for g in groups}
        out: list[list[list[float]]] = [[] for _ in inputs]
        done, pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed or pending:
            for future in pending:
                future.cancel()
            if failed:
                # An unusable answer says more than "unavailable": report it first.
                errors = [f.exception() for f in failed]
                raise next((e for e in errors if not isinstance(e, PRMUnavailableError)), errors[0])
            raise PRMUnavailableError(
                f"the PRM servers did not answer {len(pending)} of {len(groups)} requests within the deadline of "
                f"{self.deadline:g} s ({', '.join(s.url for s in self.servers)})"
            )
        for future, group in futures.items():
            for k, rows in zip(group, future.result()):
                out[k] = rows
        return out

    def _request(self, inputs: list[list[int]], deadline: float) -> list[list[list[float]]]:
        problems: list[str] = []
        for attempt in range(self.retries + 1):
            if attempt:
                # Full jitter: ranks that failed together do not come back together.
                pause = self._random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
                if time.monotonic() + pause >= deadline:
                    break
                time.sleep(pause)
                with self._lock:
                    self.stats["retries"] += 1
            elif time.monotonic() >= deadline:
                # It waited in the queue behind other requests until its call gave up: sending it would only load a
                # server with work that no one reads.
                break
            server = self._pick()
            if server is None:
                problems.append("every server is out of rotation after repeated failures")
                continue
            try:
                rows = self._post(server, inputs, deadline)
            except _Retryable as err:
                problems.append(f"{server.url}: {err}")
                self._failed(server)
                continue
            finally:
                with self._lock:
                    server.inflight -= 1
            with self._lock:
                server.failures = 0
                self.stats["requests"] += 1
            return rows
        raise PRMUnavailableError(
            f"no PRM server answered a request after {len(problems)} attempts: {'; '.join(problems[-3:])}"
            if problems else f"the deadline of {self.deadline:g} s passed before a request could be sent"
        )

    def _pick(self) -> _Server | None:
        while True:
            now = time.monotonic()
            with self._lock:
                ready = [s for s in self.servers if s.down_until <= now]
                if not ready:
                    return None
                self._turn += 1
                # Fewest requests in flight from here; the turn counter rotates among equals.
                server = min(
                    ready, key=lambda s: (s.inflight, (self.servers.index(s) - self._turn) % len(self.servers))
                )
                server.inflight += 1
                probation = server.probation
            if not probation:
                return server
            problem = self.health(server.url)
            with self._lock:
                if problem is None:
                    server.probation = False
                    server.failures = 0
                    return server
                server.inflight -= 1
                server.down_until = time.monotonic() + self.cooldown
                self.stats["cooldowns"] += 1

    def _failed(self, server: _Server) -> None:
        with self._lock:
            if server.down_until > time.monotonic():
                return  # sent before the server left the rotation: already counted
            server.failures += 1
            if server.failures >= self.failures_to_cooldown:
                server.down_until = time.monotonic() + self.cooldown
                server.probation = True
                server.failures = 0
                self.stats["cooldowns"] += 1

    def _post(self, server: _Server, inputs: list[list[int]], deadline: float) -> list[list[list[float]]]:
        body = json.dumps({"model": self.model, "input": inputs, "task": TASK}).encode()
        request = urllib.request.Request(
            f"{server.url}/pooling", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        timeout = max(0.001, min(self.timeout, deadline - time.monotonic()))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:300].decode(errors="replace")
            if err.code >= 500 or err.code in RETRYABLE_4XX:
                raise _Retryable(f"HTTP {err.code} {detail}") from None
            raise PRMServerError(f"{server.url}/pooling rejected the request: HTTP {err.code} {detail}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            raise _Retryable(str(getattr(err, "reason", err)) or type(err).__name__) from None
        try:
            answer = json.loads(payload)
        except ValueError:
            raise _Retryable(f"the answer is not JSON ({payload[:80]!r})") from None
        return _rows(answer, len(inputs), server.url)


def _number(value: object) -> bool:
    # JSON true/false are no scores, although Python's bool is an int.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _rows(answer: object, expected: int, url: str) -> list[list[list[float]]]:
    """The ``data`` of each item of a pooling answer, by ``index``, checked to be finite ``[rows][labels]`` lists."""
    try:
        items = sorted(answer["data"], key=lambda item: item["index"])  # type: ignore[index]
        out = [item["data"] for item in items]
    except (KeyError, TypeError) as err:
        raise PRMServerError(f"{url}/pooling answered without a data list of indexed items ({err!r})") from None
    indices = [item["index"] for item in items]
    if indices != list(range(expected)):
        raise PRMServerError(
            f"{url}/pooling answered {len(items)} items with indices {indices[:8]} for {expected} inputs "
            f"(indices 0 to {expected - 1}, once each)"
        )
    for rows in out:
        well_formed = isinstance(rows, list) and all(isinstance(r, list) and all(map(_number, r)) for r in rows)
        if not well_formed:
            raise PRMServerError(
                f"{url}/pooling answered data that is not a list of rows of numbers (a token_classify answer of a "
                f"step PRM): {str(rows)[:120]}"
            )
    return out
