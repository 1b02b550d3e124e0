"""Load any supported PRM checkpoint as a scorer: the kind is detected from the checkpoint, or named."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from reasonflux_rl.prm.checkpoint import (
    KINDS,
    STEP_CLASSIFIER,
    STEP_VALUE_HEAD,
    TOKEN_LOGIT,
    VALUE_HEAD,
    PRMCheckpointError,
    inspect_checkpoint,
)
from reasonflux_rl.prm.declaration import LOAD_OPTIONS, TRAJECTORY, PRMOptions, read_by
from reasonflux_rl.prm.engine.base import PRMScorer
from reasonflux_rl.prm.kinds.combined import WithTrajectoryScore
from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.prm.kinds.step_value_head import StepValueHeadScorer
from reasonflux_rl.prm.kinds.token_logit import TokenLogitScorer
from reasonflux_rl.prm.kinds.value_head import ValueHeadScorer
from reasonflux_rl.prm.placement.remote import RemoteStepScorer
from reasonflux_rl.prm.placement.resolve import SERVER, ZERO3, check_served_kind, resolve_placement

SCORERS: dict[str, type[PRMScorer]] = {
    STEP_CLASSIFIER: StepScorer,
    VALUE_HEAD: ValueHeadScorer,
    TOKEN_LOGIT: TokenLogitScorer,
    STEP_VALUE_HEAD: StepValueHeadScorer,
}
# Which kind reads which option, as PRMOptions declares it: each kind ignores the others, so that one configuration
# can name any checkpoint.
KIND_OPTIONS: dict[str, tuple[str, ...]] = {kind: read_by(kind) for kind in KINDS}
# A remote step classifier: what it reads and how it reaches its servers (the model runs there).
REMOTE_OPTIONS: tuple[str, ...] = read_by(SERVER)
# How the trajectory PRM runs: where and how it runs, how it batches.
TRAJECTORY_OPTIONS: tuple[str, ...] = read_by(TRAJECTORY)


def load_scorer(
    path: str | Path, options: PRMOptions | None = None, /, **overrides: Any
) -> PRMScorer | WithTrajectoryScore:
    """Load the PRM in ``path`` as a scorer with ``.score(problems, completions) -> list[StepScores]``.

    The options are a [`~reasonflux_rl.prm.declaration.PRMOptions`] (default: its defaults), with ``overrides`` by
    keyword: any of [`~reasonflux_rl.prm.declaration.LOAD_OPTIONS`] (an unknown keyword is a ``TypeError``). Each kind
    reads the options it declares and ignores the rest, so one configuration can name any checkpoint.

    ``kind`` is ``"auto"`` (step classifier, value head or step value head, told apart by their weights), or one of
    [`~reasonflux_rl.prm.checkpoint.KINDS`]; a token-logit PRM must be named (``kind="token_logit"`` with
    ``step_tag``, ``good_token``, ``bad_token``). Options:

    - every kind: ``device``, ``dtype``, ``attn_implementation``, ``packed``, ``batch_tokens``, ``padding_side``,
      ``parts``, ``max_length``, ``truncation`` (the value head has ``drop_oldest`` only), ``thinking_prefilled``;
    - step kinds (step classifier, token logit, step value head): ``max_steps``, ``window_overlap``, ``step_tag``; the
      step classifier ``system_prompt``; the token-logit PRM ``good_token``, ``bad_token`` and the ``*_id`` overrides.

    ``trajectory_prm`` names a second checkpoint, a value head, whose score becomes each result's
    ``trajectory_score`` (see [`~reasonflux_rl.prm.kinds.combined.WithTrajectoryScore`]); it gets the runtime options.

    ``server_urls`` scores with a step classifier served by vLLM at those URLs instead of loading its weights here
    (see [`~reasonflux_rl.prm.placement.remote.RemoteStepScorer`]; ``path`` then needs only the config and tokenizer), with
    the options ``server_model``, ``max_inflight``, ``request_timeout``, ``retries``, ``deadline`` and ``check``
    (ignored without ``server_urls``); the runtime options then apply to the trajectory PRM only. Another kind is
    refused there: the servers serve step classifiers.

    ``placement`` (see [`~reasonflux_rl.prm.placement.resolve`]): ``"auto"`` is ``"server"`` with ``server_urls`` and
    ``"replica"`` (whole weights in this process) without; ``"zero3"`` partitions the local kinds (and the trajectory
    PRM) with the active DeepSpeed ZeRO-3 config and scores in lockstep across the ranks, so every rank must call
    ``score`` together (see [`~reasonflux_rl.prm.placement.zero3`]).

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm import load_scorer
    >>> from reasonflux_rl.prm.options import PRMOptions
    >>> from reasonflux_rl.tiny import write_tiny_models, write_tiny_value_head
    >>> load_scorer(write_tiny_models(tempfile.mkdtemp()).prm, system_prompt=None).kind
    'step_classifier'
    >>> load_scorer(write_tiny_value_head(tempfile.mkdtemp()), PRMOptions(max_steps=3), system_prompt=None).kind
    'value_head'

    ```
    """
    options = _with_overrides(options or PRMOptions(), overrides)
    placement = resolve_placement(options.placement, options.server_urls)
    if placement == SERVER:
        scorer = _load_served(path, options)
    else:
        scorer = _load_local(path, options, sharded=placement == ZERO3)
    if options.trajectory_prm is None:
        return scorer
    if scorer.kind == VALUE_HEAD:
        raise PRMCheckpointError(f"{path} is a value head already; trajectory_prm adds one to a step kind")
    trajectory = ValueHeadScorer.from_pretrained(
        options.trajectory_prm, sharded=placement == ZERO3, **options.read_by(TRAJECTORY)
    )
    return WithTrajectoryScore(scorer, trajectory)


def _with_overrides(options: PRMOptions, overrides: dict[str, Any]) -> PRMOptions:
    """``options`` with the keyword ``overrides`` of [`load_scorer`], which must be load options."""
    unknown = set(overrides) - set(LOAD_OPTIONS)
    if unknown:
        raise TypeError(f"load_scorer() got unknown options {sorted(unknown)}; known: {sorted(LOAD_OPTIONS)}")
    return dataclasses.replace(options, **overrides)


def _load_served(path: str | Path, options: PRMOptions) -> RemoteStepScorer:
    """The step classifier of ``path`` on the servers of ``options.server_urls``."""
    check_served_kind(options.kind, f"prm_kind={options.kind!r}")
    return RemoteStepScorer.from_pretrained(path, options.server_urls, **options.read_by(SERVER))


def _load_local(path: str | Path, options: PRMOptions, *, sharded: bool) -> PRMScorer:
    """The kind the checkpoint in ``path`` holds (or ``options.kind`` names), loaded in this process."""
    info = inspect_checkpoint(path, kind=options.kind)
    return SCORERS[info.kind].from_pretrained(path, sharded=sharded, **options.read_by(info.kind))
