"""Load any supported PRM checkpoint as a scorer: the kind is detected from the checkpoint, or named."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasonflux_rl.prm.checkpoint import (
    STEP_CLASSIFIER,
    TOKEN_LOGIT,
    VALUE_HEAD,
    PRMCheckpointError,
    inspect_checkpoint,
)
from reasonflux_rl.prm.engine.base import PRMScorer
from reasonflux_rl.prm.kinds.combined import WithTrajectoryScore
from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.prm.kinds.token_logit import TokenLogitScorer
from reasonflux_rl.prm.kinds.value_head import ValueHeadScorer
from reasonflux_rl.prm.placement.remote import RemoteStepScorer
from reasonflux_rl.prm.placement.resolve import AUTO, SERVER, ZERO3, resolve_placement

SCORERS: dict[str, type[PRMScorer]] = {
    STEP_CLASSIFIER: StepScorer,
    VALUE_HEAD: ValueHeadScorer,
    TOKEN_LOGIT: TokenLogitScorer,
}
# Options every kind takes: where and how it runs, what it reads, how it batches.
RUNTIME_OPTIONS = ("device", "dtype", "attn_implementation", "packed", "batch_tokens", "padding_side")
COMMON_OPTIONS = (*RUNTIME_OPTIONS, "parts", "max_length", "truncation", "thinking_prefilled")
STEP_OPTIONS = ("max_steps", "window_overlap", "step_tag")
KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    STEP_CLASSIFIER: (*COMMON_OPTIONS, *STEP_OPTIONS, "system_prompt"),
    TOKEN_LOGIT: (*COMMON_OPTIONS, *STEP_OPTIONS, "good_token", "bad_token", "step_tag_id", "good_token_id",
                  "bad_token_id"),
    VALUE_HEAD: COMMON_OPTIONS,
}
ALL_OPTIONS = frozenset(name for names in KIND_OPTIONS.values() for name in names)
# A remote step classifier: what it reads and how it reaches its servers (the model runs there).
REMOTE_OPTIONS = (
    "parts", "max_length", "truncation", "thinking_prefilled", "batch_tokens", *STEP_OPTIONS, "system_prompt",
    "server_model", "max_inflight", "request_timeout", "retries", "deadline", "check",
)


def load_scorer(
    path: str | Path,
    *,
    kind: str = "auto",
    trajectory_prm: str | Path | None = None,
    server_urls: Sequence[str] | None = None,
    placement: str = AUTO,
    **options: Any,
) -> PRMScorer | WithTrajectoryScore:
    """Load the PRM in ``path`` as a scorer with ``.score(problems, completions) -> list[StepScores]``.

    ``kind`` is ``"auto"`` (step classifier or value head, told apart by their weights), or one of
    [`~reasonflux_rl.prm.checkpoint.KINDS`]; a token-logit PRM must be named (``kind="token_logit"`` with
    ``step_tag``, ``good_token``, ``bad_token``). Options (each kind ignores those that do not apply to it, so one
    configuration can name any checkpoint):

    - every kind: ``device``, ``dtype``, ``attn_implementation``, ``packed``, ``batch_tokens``, ``padding_side``,
      ``parts``, ``max_length``, ``truncation`` (the value head has ``drop_oldest`` only);
    - step kinds: ``max_steps``, ``window_overlap``, ``step_tag``; the step classifier ``system_prompt``; the
      token-logit PRM ``good_token``, ``bad_token`` and the ``*_id`` overrides.

    ``trajectory_prm`` names a second checkpoint, a value head, whose score becomes each result's
    ``trajectory_score`` (see [`~reasonflux_rl.prm.kinds.combined.WithTrajectoryScore`]); it gets the runtime options.

    ``server_urls`` scores with a step classifier served by vLLM at those URLs instead of loading its weights here
    (see [`~reasonflux_rl.prm.placement.remote.RemoteStepScorer`]; ``path`` then needs only the config and tokenizer), with
    the options ``server_model``, ``max_inflight``, ``request_timeout``, ``retries``, ``deadline`` and ``check``
    (ignored without ``server_urls``); the runtime options then apply to the trajectory PRM only.

    ``placement`` (see [`~reasonflux_rl.prm.placement.resolve`]): ``"auto"`` is ``"server"`` with ``server_urls`` and
    ``"replica"`` (whole weights in this process) without; ``"zero3"`` partitions the local kinds (and the trajectory
    PRM) with the active DeepSpeed ZeRO-3 config and scores in lockstep across the ranks, so every rank must call
    ``score`` together (see [`~reasonflux_rl.prm.placement.zero3`]).

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm import load_scorer
    >>> from reasonflux_rl.tiny import write_tiny_models, write_tiny_value_head
    >>> load_scorer(write_tiny_models(tempfile.mkdtemp()).prm, system_prompt=None).kind
    'step_classifier'
    >>> load_scorer(write_tiny_value_head(tempfile.mkdtemp()), system_prompt=None, max_steps=3).kind
    'value_head'

    ```
    """
    known = ALL_OPTIONS | set(REMOTE_OPTIONS)
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"load_scorer() got unknown options {sorted(unknown)}; known: {sorted(known)}")
    placement = resolve_placement(placement, server_urls)
    sharded = placement == ZERO3
    if placement == SERVER:
        if kind not in ("auto", STEP_CLASSIFIER):
            raise PRMCheckpointError(
                f"prm_kind={kind!r} cannot be served remotely: PRM servers (prm_server_urls) score step classifiers"
            )
        remote = {name: value for name, value in options.items() if name in REMOTE_OPTIONS}
        scorer = RemoteStepScorer.from_pretrained(path, server_urls, **remote)
        is_value_head = False
    else:
        info = inspect_checkpoint(path, kind=kind)
        applicable = {name: value for name, value in options.items() if name in KIND_OPTIONS[info.kind]}
        scorer = SCORERS[info.kind].from_pretrained(path, sharded=sharded, **applicable)
        is_value_head = info.kind == VALUE_HEAD
    if trajectory_prm is None:
        return scorer
    if is_value_head:
        raise PRMCheckpointError(f"{path} is a value head already; trajectory_prm adds one to a step kind")
    runtime = {name: value for name, value in options.items() if name in RUNTIME_OPTIONS}
    return WithTrajectoryScore(scorer, ValueHeadScorer.from_pretrained(trajectory_prm, sharded=sharded, **runtime))
