"""A small server that speaks vLLM's pooling API for a local step-classifier PRM: a reference, not a production server.

It answers what ``vllm serve <step-classifier PRM> --runner pooling`` answers: ``GET /health``, ``GET /v1/models``
and ``POST /pooling`` with ``task: token_classify``, one ``[p_negative, p_positive]`` row per step tag of each input
(softmax of the 2-label head at every position whose token is the step tag). Inputs are token ids or text. It runs one
input at a time on the CPU (or the given device), so it is for tests, benchmarks of the client and dry runs of a
cluster set-up without GPUs: ``reasonflux-rl serve-prm --prm DIR --port 8001``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from reasonflux_rl.prm.checkpoint import STEP_CLASSIFIER, inspect_checkpoint
from reasonflux_rl.prm.engine.format import STEP_TAG
from reasonflux_rl.prm.kinds.step_classifier_model import Qwen2ForProcessRewardModel
from reasonflux_rl.prm.kinds.tagged import single_token_id
from reasonflux_rl.prm.placement.pooling_client import TASK


class PoolingServer:
    """Serve the step-classifier PRM in ``path`` over HTTP on ``host:port`` (port 0 picks a free one).

    ``latency`` adds that many seconds to every ``/pooling`` answer, outside the model lock, to stand for the network
    and queueing of a remote GPU node in benchmarks. ``max_model_len`` (default: the checkpoint's
    ``max_position_embeddings``) is the longest input accepted, as vLLM's ``--max-model-len``. Subclasses may override
    [`answer`] to inject faults.

    Example:
    ```python
    >>> import json, tempfile, urllib.request
    >>> from reasonflux_rl.prm.placement.pooling_server import PoolingServer
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> with PoolingServer(write_tiny_models(tempfile.mkdtemp()).prm, model_name="tiny-prm") as server:
    ...     ids = server.tokenizer.encode("Step one.<extra_0>Step two.<extra_0>")
    ...     request = urllib.request.Request(f"{server.url}/pooling", method="POST", data=json.dumps(
    ...         {"model": "tiny-prm", "input": [ids], "task": "token_classify"}).encode(),
    ...         headers={"Content-Type": "application/json"})
    ...     answer = json.loads(urllib.request.urlopen(request).read())
    >>> rows = answer["data"][0]["data"]
    >>> len(rows), [round(sum(row), 6) for row in rows]
    (2, [1.0, 1.0])

    ```
    """

    def __init__(
        self,
        path: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model_name: str | None = None,
        step_tag: str = STEP_TAG,
        latency: float = 0.0,
        max_model_len: int | None = None,
        device: str = "cpu",
    ) -> None:
        inspect_checkpoint(path, kind=STEP_CLASSIFIER)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = Qwen2ForProcessRewardModel.from_pretrained(path, dtype=torch.float32).to(device).eval()
        self.step_tag_id = single_token_id(self.tokenizer, step_tag, "step tag")
        self.model_name = model_name or str(path)
        self.max_model_len = max_model_len or self.model.config.max_position_embeddings
        self.latency = latency
        self.requests = 0
        self._model_lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        # Closing waits for the requests being answered: a thread killed inside torch at exit aborts the process.
        self._httpd.daemon_threads = False
        self._httpd.block_on_close = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. ``http://127.0.0.1:8001``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> PoolingServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="pooling-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted, then release the port."""
        try:
            self._httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._httpd.server_close()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> PoolingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def models(self) -> dict[str, Any]:
        """The ``/v1/models`` listing."""
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "reasonflux-rl",
                                            "max_model_len": self.max_model_len}]}

    @torch.inference_mode()
    def pool(self, inputs: Sequence[Sequence[int]]) -> list[list[list[float]]]:
        """``[p_negative, p_positive]`` at every step-tag position of each input, as vLLM's STEP pooler gives."""
        out = []
        with self._model_lock:
            for ids in inputs:
                row = torch.tensor([list(ids)], device=self.model.device)
                probabilities = torch.softmax(self.model(row)[0].float(), dim=-1)
                out.append(probabilities[row[0] == self.step_tag_id].tolist())
        return out

    def answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any] | bytes]:
        """The status and body for one ``/pooling`` request (override to inject faults)."""
        if request.get("model") not in (None, self.model_name):
            return _error(HTTPStatus.NOT_FOUND, f"The model `{request.get('model')}` does not exist.")
        if request.get("task", TASK) != TASK:
            return _error(HTTPStatus.BAD_REQUEST, f"Task {request.get('task')} is not supported by this model.")
        raw = request.get("input")
        if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw)):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            return _error(HTTPStatus.BAD_REQUEST, "input must be a string, a list of token ids or a list of either")
        inputs = []
        for item in raw:
            if isinstance(item, str):
                item = self.tokenizer.encode(item, add_special_tokens=request.get("add_special_tokens", True))
            if not isinstance(item, list) or not item or not all(isinstance(x, int) for x in item):
                return _error(HTTPStatus.BAD_REQUEST, "each input must be a non-empty string or list of token ids")
            if len(item) > self.max_model_len:
                return _error(HTTPStatus.BAD_REQUEST, f"This model's maximum context length is {self.max_model_len} "
                              f"tokens. However, you requested {len(item)} tokens in the input.")
            inputs.append(item)
        data = [{"index": i, "object": "pooling", "data": rows} for i, rows in enumerate(self.pool(inputs))]
        tokens = sum(len(x) for x in inputs)
        return HTTPStatus.OK, {"id": f"pool-{self.requests}", "object": "list", "created": int(time.time()),
                               "model": self.model_name, "data": data,
                               "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}}


def _error(status: HTTPStatus, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": status.phrase, "param": None, "code": int(status)}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep test and benchmark output clean
        pass

    def _send(self, status: int, body: dict[str, Any] | bytes) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        owner: PoolingServer = self.server.owner  # type: ignore[attr-defined]
        if self.path == "/health":
            self._send(HTTPStatus.OK, b"")
        elif self.path == "/v1/models":
            self._send(HTTPStatus.OK, owner.models())
        else:
            self._send(*_error(HTTPStatus.NOT_FOUND, f"no route {self.path}"))

    def do_POST(self) -> None:  # noqa: N802
        owner: PoolingServer = self.server.owner  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/pooling":
            self._send(*_error(HTTPStatus.NOT_FOUND, f"no route {self.path}"))
            return
        # vLLM validates the media type before the body, and answers a request validation error (400).
        media_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            self._send(*_error(HTTPStatus.BAD_REQUEST, "Unsupported Media Type: Only 'application/json' is allowed"))
            return
        try:
            request = json.loads(body)
        except ValueError:
            self._send(*_error(HTTPStatus.BAD_REQUEST, "the body is not JSON"))
            return
        owner.requests += 1
        status, answer = owner.answer(request if isinstance(request, dict) else {})
        if owner.latency:
            time.sleep(owner.latency)
        self._send(status, answer)


def main(argv: Sequence[str] | None = None) -> None:
    """``reasonflux-rl serve-prm``: serve a local step-classifier PRM over vLLM's pooling API until interrupted."""
    parser = argparse.ArgumentParser(prog="reasonflux-rl serve-prm", description=__doc__.splitlines()[0])
    parser.add_argument("--prm", required=True, help="local step-classifier PRM directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model-name", help="served model name (default: the path)")
    args = parser.parse_args(argv)
    server = PoolingServer(args.prm, host=args.host, port=args.port, model_name=args.model_name)
    print(f"serving {server.model_name} at {server.url} (POST /pooling, GET /health, GET /v1/models)", flush=True)
    server.serve_forever()
