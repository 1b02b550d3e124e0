"""Score steps with a step-classifier PRM served by vLLM on other GPUs, through its pooling API.

The input is built here exactly as for a local PRM (same steps, chat template, step tags and truncation policy, see
[`~reasonflux_rl.prm.kinds.tagged.StepTagScorer`]) with the checkpoint's own tokenizer, and sent as token ids; each server
answers one ``[p_negative, p_positive]`` row per step tag (vLLM's STEP pooler), and the step score is ``p_positive``.
So a remote score equals the local score of the same checkpoint up to the servers' numerics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.checkpoint import (
    STEP_CLASSIFIER,
    STEP_VALUE_HEAD,
    CheckpointInfo,
    PRMCheckpointError,
    inspect_checkpoint,
    read_weight_shapes,
)
from reasonflux_rl.prm.engine.base import DEFAULT_BATCH_TOKENS
from reasonflux_rl.prm.engine.format import DEFAULT_SYSTEM_PROMPT, STEP_TAG, Parts, format_steps
from reasonflux_rl.prm.kinds.step_classifier_model import ARCHITECTURE
from reasonflux_rl.prm.kinds.step_value_head_model import ARCHITECTURE as STEP_VALUE_HEAD_ARCHITECTURE
from reasonflux_rl.prm.kinds.tagged import StepTagScorer, single_token_id
from reasonflux_rl.prm.placement.pooling_client import PoolingClient, PRMServerError, PRMUnavailableError
from reasonflux_rl.prm.placement.resolve import check_served_kind

PROBE_PROBLEM = "What is 1 + 1?"
PROBE_STEPS = ["One plus one is two.", "Check: 2 - 1 = 1, so it holds.", "The answer is $\\boxed{2}$."]


class RemoteStepScorer(StepTagScorer):
    """A step-classifier PRM on vLLM servers, with the interface of the local [`~reasonflux_rl.prm.kinds.step_classifier.StepScorer`].

    Formatted rows go to ``client`` ([`~reasonflux_rl.prm.placement.pooling_client.PoolingClient`]); an answer with another
    number of rows than the row has step tags raises [`~reasonflux_rl.prm.placement.pooling_client.PRMServerError`] (never a
    misaligned score), and servers that do not answer in time raise
    [`~reasonflux_rl.prm.placement.pooling_client.PRMUnavailableError`].

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm.placement.pooling_server import PoolingServer
    >>> from reasonflux_rl.prm.placement.remote import RemoteStepScorer
    >>> from reasonflux_rl.prm.kinds.step_classifier import StepScorer
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> prm = write_tiny_models(tempfile.mkdtemp()).prm
    >>> pair = (["1+1?"], ["<think>\\n1+1=2.\\n</think>\\n\\nSo \\\\boxed{2}."])
    >>> with PoolingServer(prm) as server:
    ...     remote = RemoteStepScorer.from_pretrained(prm, [server.url])
    ...     [r] = remote.score(*pair)
    ...     remote.close()
    >>> [local] = StepScorer.from_pretrained(prm, device="cpu").score(*pair)
    >>> len(r.step_scores), max(abs(a - b) for a, b in zip(r.step_scores, local.step_scores)) < 1e-5
    (2, True)

    ```
    """

    kind = STEP_CLASSIFIER

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        client: PoolingClient,
        *,
        max_length: int,
        parts: Parts = "both",
        max_steps: int | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        step_tag: str | None = None,
        **options,
    ) -> None:
        step_tag = step_tag or STEP_TAG
        super().__init__(
            None,
            tokenizer,
            step_tag=step_tag,
            tag_id=single_token_id(tokenizer, step_tag, "step tag"),
            max_length=max_length,
            parts=parts,
            max_steps=max_steps,
            batch_tokens=client.request_tokens,
            **options,
        )
        self.client = client
        self.system_prompt = system_prompt

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        server_urls: Sequence[str],
        *,
        server_model: str | None = None,
        max_inflight: int = 8,
        request_timeout: float = 120.0,
        retries: int = 3,
        deadline: float = 600.0,
        batch_tokens: int | None = None,
        max_length: int | None = None,
        check: bool = True,
        **kwargs,
    ) -> RemoteStepScorer:
        """A remote scorer for the checkpoint in ``path`` served at ``server_urls``; by default checks every server.

        ``path`` is a local directory with the checkpoint's ``config.json`` and tokenizer (the weights may be left
        out: they live on the servers). ``batch_tokens`` is the token budget of one request (default 16384);
        ``max_length`` defaults to the checkpoint's ``max_position_embeddings``. See
        [`~reasonflux_rl.prm.placement.pooling_client.PoolingClient`] for the transport options; other keyword arguments go to
        [`RemoteStepScorer`].
        """
        info = inspect_served_checkpoint(path)
        client = PoolingClient(
            server_urls,
            server_model,
            max_inflight=max_inflight,
            request_tokens=batch_tokens or DEFAULT_BATCH_TOKENS,
            timeout=request_timeout,
            retries=retries,
            deadline=deadline,
        )
        scorer = cls(
            AutoTokenizer.from_pretrained(info.path),
            client,
            max_length=max_length or info.max_position_embeddings,
            **kwargs,
        )
        if check:
            try:
                scorer.check()
            except BaseException:
                scorer.close()
                raise
        return scorer

    def close(self) -> None:
        """Stop the client's request threads."""
        self.client.close()

    def metrics(self) -> dict[str, int]:
        """Transport counts since the last call (requests, retries, servers taken out of rotation)."""
        return self.client.pop_stats()

    def format(self, problem: str, steps: list[str]) -> str:
        """The chat-template input of the model card, as the local step classifier builds it."""
        return format_steps(self.tokenizer, problem, steps, self.system_prompt, self.step_tag)

    def run_rows(self, rows: list[list[int]], reads: list[list[int]]) -> list[list[float]]:
        """``p_positive`` at each step tag of each row (``reads``: the tags' positions), from the servers."""
        answers = self.client.pool(rows)
        out = []
        for tag_positions, answer in zip(reads, answers):
            tags = len(tag_positions)
            if len(answer) != tags or any(len(pair) != 2 for pair in answer):
                raise PRMServerError(
                    f"a PRM server answered {len(answer)} rows of {sorted({len(p) for p in answer})} labels for an "
                    f"input with {tags} step tags; each tag needs one [p_negative, p_positive] row (is the server "
                    f"started with step_tag_id {self.tag_id}?)"
                )
            out.append([float(pair[1]) for pair in answer])
        return out

    def check(self) -> dict[str, dict]:
        """Check every server before any scoring: healthy, serving the model, and answering a probe with one
        probability row per step tag. Raises a ConfigError naming the server and what it answered.

        Returns per server its served model and ``max_model_len``.
        """
        probe = self.tokenizer.encode(self.format(PROBE_PROBLEM, PROBE_STEPS))
        expected = len(PROBE_STEPS)
        report = {}
        for server in self.client.servers:
            url = server.url
            problem = self.client.health(url)
            if problem is not None:
                raise ConfigError(f"prm_server_urls: no PRM server answers at {url}/health ({problem})")
            try:
                served = self.client.served_models(url)
            except PRMServerError as err:
                raise ConfigError(f"prm_server_urls: {err}") from None
            if self.client.model is None:
                if len(served) != 1:
                    raise ConfigError(f"prm_server_model is unset but {url} serves {sorted(served)}: name one")
                self.client.model = next(iter(served))
            if self.client.model not in served:
                raise ConfigError(
                    f"prm_server_model={self.client.model!r} is not served at {url}, which serves {sorted(served)}"
                )
            limit = served[self.client.model]
            if limit is not None and limit < self.max_length:
                raise ConfigError(
                    f"prm_max_length={self.max_length} exceeds the max_model_len={limit} of {url}: set prm_max_length "
                    f"to at most {limit} or restart the server with --max-model-len {self.max_length}"
                )
            try:
                [rows] = self.client.pool_on(url, [probe])
            except PRMServerError as err:
                raise ConfigError(f"prm_server_urls: the probe request failed: {err}") from None
            if len(rows) != expected or not all(_is_distribution(row) for row in rows):
                raise ConfigError(
                    f"prm_server_urls: {url} answered {json.dumps(rows)[:160]} for a probe with {expected} step tags "
                    f"{self.step_tag!r} (token id {self.tag_id}); a step classifier answers one [p_negative, "
                    f"p_positive] row per tag. Serve the checkpoint with `vllm serve PATH --runner pooling "
                    f"--pooler-config '{{\"pooling_type\": \"STEP\", \"step_tag_id\": {self.tag_id}}}'`."
                )
            report[url] = {"model": self.client.model, "max_model_len": limit}
        return report


def _is_distribution(row: list[float]) -> bool:
    return len(row) == 2 and all(0.0 <= p <= 1.0 for p in row) and math.isclose(sum(row), 1.0, abs_tol=1e-3)


def inspect_served_checkpoint(path: str | Path) -> CheckpointInfo:
    """Check a local directory for a step classifier whose weights may live only on its servers.

    It needs the ``config.json`` and the tokenizer; when weights are there too, they are checked as for a local load.
    Another kind (told by its weights, or a step value head by its architecture name) is refused with the reason.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm.placement.remote import inspect_served_checkpoint
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> inspect_served_checkpoint(write_tiny_models(tempfile.mkdtemp()).prm).kind
    'step_classifier'

    ```
    """
    root = Path(path)
    if not root.is_dir() or not (root / "config.json").is_file():
        raise PRMCheckpointError(
            f"prm_name_or_path={str(path)!r} must be a local directory with the PRM's config.json and tokenizer, also "
            "when it is served remotely (copy them without the weights, e.g. `hf download Gen-Verse/ReasonFlux-PRM-7B "
            "--exclude '*.safetensors' --local-dir ...`)"
        )
    where = f"prm_name_or_path={str(path)!r}"
    if read_weight_shapes(root):
        info = inspect_checkpoint(root)
        check_served_kind(info.kind, where)
        return info
    config = json.loads((root / "config.json").read_text())
    architectures = tuple(config.get("architectures") or ())
    if STEP_VALUE_HEAD_ARCHITECTURE in architectures:
        check_served_kind(STEP_VALUE_HEAD, where)
    if ARCHITECTURE not in architectures:
        raise PRMCheckpointError(
            f"prm_name_or_path={str(path)!r}: config.json names architectures {list(architectures)}; remote scoring "
            f"supports the step classifier ({ARCHITECTURE})"
        )
    return CheckpointInfo(
        root, STEP_CLASSIFIER, architectures, config.get("hidden_size"), config.get("max_position_embeddings")
    )


__all__ = ["PRMServerError", "PRMUnavailableError", "RemoteStepScorer"]
