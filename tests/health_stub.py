"""Loopback stand-ins for vLLM servers: one that answers /health, so the server recipes' reachability check can pass,
and a scripted server for the failure paths of the PRM client (pooling) and of the judge client (chat completions,
routes added to ``defaults`` or ``script``)."""

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@contextmanager
def health_server() -> Iterator[int]:
    """Serve /health on 127.0.0.1; yields the port."""
    server = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


class _Scripted(BaseHTTPRequestHandler):
    def _answer(self, body: bytes) -> None:
        stub: StubServer = self.server.stub  # type: ignore[attr-defined]
        status, answer = stub.next_answer(self.command, self.path, body)
        # json.dumps writes NaN and Infinity, as a buggy server might: the client must refuse them.
        payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self._answer(b"")

    def do_POST(self):
        self._answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def log_message(self, *args):
        pass


def rows_for_each_input(rows: list) -> Callable[[dict], tuple[int, dict]]:
    """A /pooling answer giving every input of the request the same ``rows``."""
    return lambda request: (200, {"data": [{"index": i, "data": rows} for i in range(len(request["input"]))]})


class StubServer:
    """A loopback stand-in for a vLLM pooling server that answers from a script, for the client's failure paths.

    ``script[(method, path)]`` holds the answers to the next requests of that route, in order: ``(status, body)``
    (a JSON value, or raw bytes) or a function of the request's JSON giving one. When a route's script runs out it
    answers as a healthy server of one model, ``"stub"``, that gives each input one ``[0.25, 0.75]`` row.
    ``requests`` lists every ``(method, path, JSON body or None)`` received, in order.
    """

    def __init__(self, models: list[str] | None = None):
        self.script: dict[tuple[str, str], list] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.defaults = {
            ("GET", "/health"): (200, b""),
            ("GET", "/v1/models"): (200, {"data": [{"id": name} for name in models or ["stub"]]}),
            ("POST", "/pooling"): rows_for_each_input([[0.25, 0.75]]),
        }
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
        self._httpd.daemon_threads = True
        self._httpd.stub = self  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def sent(self, method: str, path: str) -> list:
        """The bodies of the requests received on one route."""
        with self._lock:
            return [body for m, p, body in self.requests if (m, p) == (method, path)]

    def next_answer(self, method: str, path: str, raw: bytes) -> tuple[int, Any]:
        request = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append((method, path, request))
            queued = self.script.get((method, path))
            answer = queued.pop(0) if queued else self.defaults.get((method, path), (404, {"error": "no route"}))
        return answer(request) if callable(answer) else answer

    def __enter__(self) -> "StubServer":
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
