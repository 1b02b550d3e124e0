"""A client for vLLM's pooling API (``POST /pooling``) spread over several servers, robust to slow and failing ones
(the rules of [`~reasonflux_rl.prm.placement.rotation`]: rotation by requests in flight, retries with jittered
back-off, cooldowns, a deadline per call).

Inputs travel as token ids, never as text: the PRM's tokenizer runs in this process, so a server cannot tokenise a
step tag differently and the number of score rows it must answer is known in advance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from reasonflux_rl.prm.engine.batching import length_buckets
from reasonflux_rl.prm.placement.rotation import (
    Retryable,
    ServerError,
    ServerRotation,
    ServerUnavailableError,
)

TASK = "token_classify"


class PRMServerError(ServerError):
    """A PRM server answered something that cannot be used (a rejected request, an answer of the wrong shape).

    Retrying would not help, so it is never retried and no failure policy turns it into a missing score.
    """


class PRMUnavailableError(PRMServerError, ServerUnavailableError):
    """No PRM server answered in time: every server down, failing or slow past the deadline, retries spent."""


class PoolingClient(ServerRotation):
    """Send token-id inputs to the ``/pooling`` endpoint of one or more vLLM servers; answers come back in order.

    Args:
        urls: base URLs of the servers, e.g. ``["http://prm-node-0:8001"]``.
        model: the served model name sent with each request; ``None`` asks the first server that answers
            ``/v1/models`` (it must serve exactly one model).
        request_tokens: token budget of one request (inputs are grouped up to it; a longer input goes alone).
        **rotation: ``max_inflight``, ``timeout``, ``retries``, ``deadline``, ``backoff``, ``max_backoff``,
            ``failures_to_cooldown``, ``cooldown``, ``health_timeout`` of
            [`~reasonflux_rl.prm.placement.rotation.ServerRotation`].

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

    what = "PRM server"
    server_error = PRMServerError
    unavailable_error = PRMUnavailableError

    def __init__(self, urls: Sequence[str], model: str | None = None, *, request_tokens: int = 16384,
                 **rotation: float) -> None:
        if request_tokens < 1:
            raise ValueError(f"request_tokens must be a positive integer, got {request_tokens}")
        super().__init__(urls, **rotation)  # type: ignore[arg-type]
        self.model = model
        self.request_tokens = request_tokens

    def pool_on(self, url: str, inputs: list[list[int]]) -> list[list[list[float]]]:
        """One request to one server, no retry: for start-up checks that must hear from every server."""
        try:
            answer = self.send(url.rstrip("/"), "/pooling", self._body(inputs),
                               time.monotonic() + min(self.timeout, self.deadline))
        except Retryable as err:
            raise PRMUnavailableError(f"{url}/pooling: {err}") from None
        return _rows(answer, len(inputs), url)

    def pool(self, inputs: Sequence[list[int]]) -> list[list[list[float]]]:
        """The server's rows for each input (``[rows][labels]``), in input order; empty inputs get ``[]``.

        Raises [`PRMUnavailableError`] when the servers do not answer within the deadline or the retries, and
        [`PRMServerError`] when an answer cannot be used.
        """
        groups = length_buckets([len(x) for x in inputs], self.request_tokens, packed=True)
        answers = self.call_all([lambda deadline, g=g: self._request([list(inputs[k]) for k in g], deadline)
                                 for g in groups])
        out: list[list[list[float]]] = [[] for _ in inputs]
        for group, rows in zip(groups, answers):
            for k, row in zip(group, rows):
                out[k] = row
        return out

    def _body(self, inputs: list[list[int]]) -> dict:
        return {"model": self.model, "input": inputs, "task": TASK}

    def _request(self, inputs: list[list[int]], deadline: float) -> list[list[list[float]]]:
        return self.call("/pooling", self._body(inputs), lambda answer, url: _rows(answer, len(inputs), url),
                         deadline)


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
