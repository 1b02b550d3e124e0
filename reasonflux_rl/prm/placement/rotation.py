"""Requests spread over several HTTP servers, robust to slow and failing ones: what the PRM servers' client
([`~reasonflux_rl.prm.placement.pooling_client.PoolingClient`]) and the judge of ``prm label --method reasonflux``
([`~reasonflux_rl.prm_training.chat_judge.ChatJudge`]) share.

- At most ``max_inflight`` requests are in flight from this process; each goes to the server in rotation with the
  fewest requests in flight from here.
- A connection error, a timeout, an HTTP 5xx (or 408/429) or a body that is not JSON is retried on the next server
  after an exponential back-off with full jitter, at most ``retries`` times. Any other 4xx is the request's fault and
  is raised at once, as is an answer that cannot be used.
- A server that fails ``failures_to_cooldown`` times in a row leaves the rotation for ``cooldown`` seconds; after that
  it must answer ``GET /health`` before it gets requests again.
- A call never takes longer than ``deadline`` seconds: what is not answered by then raises the rotation's
  ``unavailable`` error.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

RETRYABLE_4XX = (408, 429)
Answer = TypeVar("Answer")


class ServerError(RuntimeError):
    """A server answered something that cannot be used (a rejected request, an answer of the wrong shape).

    Retrying would not help, so it is never retried and no failure policy turns it into a missing value.
    """


class ServerUnavailableError(ServerError):
    """No server answered in time: every server down, failing or slow past the deadline, retries spent."""


class Retryable(Exception):
    """One attempt failed in a way another attempt (on this or another server) may not."""


@dataclass
class Server:
    url: str
    inflight: int = 0
    failures: int = 0
    down_until: float = 0.0
    probation: bool = False


class ServerRotation:
    """The servers at ``urls``, the requests in flight to them and the rules above; subclasses say what a request
    is. ``what`` names the servers in errors ("PRM server"); ``server_error`` and ``unavailable_error`` are the
    errors raised (subclasses of [`ServerError`] and [`ServerUnavailableError`]).

    Args:
        urls: base URLs of the servers, e.g. ``["http://prm-node-0:8001"]``.
        max_inflight: requests in flight at once from this client.
        timeout: seconds one attempt may take.
        retries: further attempts after a failed one.
        deadline: seconds one call may take in all, retries and back-off included.
        backoff: first back-off bound in seconds; doubles per attempt up to ``max_backoff``.
        failures_to_cooldown: consecutive failures that take a server out of rotation.
        cooldown: seconds a failing server stays out.

    Example:
    ```python
    >>> from reasonflux_rl.prm.placement.rotation import ServerRotation, ServerUnavailableError
    >>> rotation = ServerRotation(["http://127.0.0.1:9"], retries=1, backoff=0.01, deadline=5)
    >>> ask = lambda deadline: rotation.call("/v1/models", None, lambda answer, url: answer, deadline)
    >>> try:
    ...     rotation.call_all([ask])
    ... except ServerUnavailableError as err:
    ...     print(str(err).split(":")[0])
    no server answered a request after 2 attempts
    >>> rotation.close()

    ```
    """

    what = "server"
    server_error: type[ServerError] = ServerError
    unavailable_error: type[ServerUnavailableError] = ServerUnavailableError

    def __init__(
        self,
        urls: Sequence[str],
        *,
        max_inflight: int = 8,
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
            raise ValueError(f"{type(self).__name__} needs at least one server URL")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{self.what} URL {url!r} must start with http:// or https://")
        for name, value in (("max_inflight", max_inflight), ("failures_to_cooldown", failures_to_cooldown)):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        for name, value in (("timeout", timeout), ("deadline", deadline), ("health_timeout", health_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if retries < 0 or backoff < 0 or cooldown < 0:
            raise ValueError("retries, backoff and cooldown must not be negative")
        self.servers = [Server(url.rstrip("/")) for url in urls]
        self.max_inflight = max_inflight
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
        self._executor = ThreadPoolExecutor(max_inflight, thread_name_prefix=type(self).__name__)

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
            raise self.server_error(f"{url}/v1/models did not list the served models: {err}") from None

    # -- requests ---------------------------------------------------------------------------------------------------

    def call_all(self, requests: Sequence[Callable[[float], Answer]]) -> list[Answer]:
        """Each of ``requests`` (a function of the call's deadline, usually [`call`]) run concurrently, their answers
        in order; within ``deadline`` seconds in all, else the ``unavailable`` error."""
        deadline = time.monotonic() + self.deadline
        futures = [self._executor.submit(request, deadline) for request in requests]
        done, pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed or pending:
            for future in pending:
                future.cancel()
            if failed:
                # An unusable answer says more than "unavailable": report it first.
                errors = [f.exception() for f in failed]
                raise next((e for e in errors if not isinstance(e, ServerUnavailableError)), errors[0])
            raise self.unavailable_error(
                f"the {self.what}s did not answer {len(pending)} of {len(futures)} requests within the deadline of "
                f"{self.deadline:g} s ({', '.join(s.url for s in self.servers)})"
            )
        return [future.result() for future in futures]

    def call(self, path: str, body: Any, read: Callable[[Any, str], Answer], deadline: float) -> Answer:
        """``POST path`` with the JSON ``body`` (``None``: ``GET``) on the servers in rotation, retried by the rules;
        ``read(answer, url)`` turns the JSON answer of the server at ``url`` into the result (raising [`Retryable`]
        for an answer worth asking again, ``server_error`` for one that cannot be used)."""
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
                answer = read(self.send(server.url, path, body, deadline), server.url)
            except Retryable as err:
                problems.append(f"{server.url}: {err}")
                self._failed(server)
                continue
            finally:
                with self._lock:
                    server.inflight -= 1
            with self._lock:
                server.failures = 0
                self.stats["requests"] += 1
            return answer
        raise self.unavailable_error(
            f"no {self.what} answered a request after {len(problems)} attempts: {'; '.join(problems[-3:])}"
            if problems else f"the deadline of {self.deadline:g} s passed before a request could be sent"
        )

    def send(self, url: str, path: str, body: Any, deadline: float) -> Any:
        """One attempt on one server: the JSON answer, [`Retryable`] for a failure worth another attempt, or
        ``server_error`` for a rejected request."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{url}{path}", data=data, headers={"Content-Type": "application/json"},
                                         method="GET" if body is None else "POST")
        timeout = max(0.001, min(self.timeout, deadline - time.monotonic()))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:300].decode(errors="replace")
            if err.code >= 500 or err.code in RETRYABLE_4XX:
                raise Retryable(f"HTTP {err.code} {detail}") from None
            raise self.server_error(f"{url}{path} rejected the request: HTTP {err.code} {detail}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            raise Retryable(str(getattr(err, "reason", err)) or type(err).__name__) from None
        try:
            return json.loads(payload)
        except ValueError:
            raise Retryable(f"the answer is not JSON ({payload[:80]!r})") from None

    def _pick(self) -> Server | None:
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

    def _failed(self, server: Server) -> None:
        with self._lock:
            if server.down_until > time.monotonic():
                return  # sent before the server left the rotation: already counted
            server.failures += 1
            if server.failures >= self.failures_to_cooldown:
                server.down_until = time.monotonic() + self.cooldown
                server.probation = True
                server.failures = 0
                self.stats["cooldowns"] += 1
