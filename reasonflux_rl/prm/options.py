"""The PRM options of ``score``, ``select`` and ``bon``: every kind and option [`load_scorer`] takes, added to a parser
by [`add_prm_arguments`], loaded by [`scorer_from_args`], and described for a score cache by [`prm_settings`].

Each option's ``dest`` is the ``load_scorer`` keyword it sets, so a new ``load_scorer`` option is one
``add_argument`` line here and its name in [`LOAD_OPTIONS`] (and in [`RUNTIME_OPTIONS`] when it cannot change a
score).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.checkpoint import KINDS
from reasonflux_rl.prm.engine.format import DEFAULT_SYSTEM_PROMPT, PARTS
from reasonflux_rl.prm.engine.truncation import TRUNCATIONS
from reasonflux_rl.rewards.formula import AGGREGATIONS

LOAD_OPTIONS = (
    "kind", "trajectory_prm", "device", "dtype", "batch_tokens", "parts", "max_length", "max_steps", "truncation",
    "window_overlap", "system_prompt", "step_tag", "good_token", "bad_token", "thinking_prefilled", "server_urls",
    "server_model", "max_inflight",
)
# Where and how fast the PRM runs: these change no score (the device type and the resolved dtype can, and are
# recorded by prm_settings instead).
RUNTIME_OPTIONS = ("device", "dtype", "batch_tokens", "server_urls", "max_inflight")
_POSITIVE = ("chunk_size", "batch_tokens", "max_length", "max_steps", "max_inflight")


def _none_if_empty(text: str) -> str | None:
    return text or None


def add_prm_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the PRM group: ``--prm``, every [`load_scorer`] option, ``--aggregation``/``--alpha`` (how step scores
    become one score), ``--chunk-size`` and ``--no-progress``.

    Example:
    ```python
    >>> import argparse
    >>> from reasonflux_rl.prm.options import add_prm_arguments
    >>> parser = argparse.ArgumentParser()
    >>> add_prm_arguments(parser)
    >>> args = parser.parse_args(["--prm", "ckpt", "--kind", "token_logit", "--system-prompt", ""])
    >>> args.kind, args.truncation, args.batch_tokens, args.system_prompt, args.aggregation
    ('token_logit', 'drop_oldest', None, None, 'mean')

    ```
    """
    group = parser.add_argument_group("PRM")
    add = group.add_argument
    add("--prm", required=True, help="local PRM checkpoint directory (e.g. ReasonFlux-PRM-7B)")
    add("--kind", default="auto", choices=["auto", *KINDS],
        help="PRM kind (auto: step classifier or value head); token_logit must be named, with its three tokens")
    add("--step-tag", default=None, help="step tag token (token_logit; default <extra_0> otherwise)")
    add("--good-token", default=None, help="token_logit: the 'good step' token")
    add("--bad-token", default=None, help="token_logit: the 'bad step' token")
    add("--trajectory-prm", default=None, help="a value-head PRM whose score becomes each row's trajectory_score")
    add("--parts", default="both", choices=PARTS, help="score the thinking, the response or both")
    add("--thinking-prefilled", action="store_true",
        help="the prompts opened the thinking (DeepSeek-R1-Distill): a completion without </think> is cut-off "
             "thinking (for the PRM, and for bon's outcome judge)")
    add("--max-length", type=int, default=None, help="PRM context in tokens (default: the model's)")
    add("--max-steps", type=int, default=None, help="cap on steps; the tail merges into the last")
    add("--truncation", default="drop_oldest", choices=TRUNCATIONS, help="inputs longer than --max-length")
    add("--window-overlap", type=int, default=None,
        help="context tokens of the windows truncation (default: a quarter of the context)")
    add("--system-prompt", default=DEFAULT_SYSTEM_PROMPT, type=_none_if_empty,
        help="system message of the step classifier's input; '' for none")
    add("--batch-tokens", type=int, default=None,
        help="padded tokens per forward pass (default: 16384 on GPU, 4096 on CPU)")
    add("--device", default=None, help="e.g. cuda:0 or cpu (default: cuda when available)")
    add("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU) or a torch dtype name")
    add("--server-url", dest="server_urls", action="append", default=None,
        help="score with the step classifier served by vLLM at this base URL (repeat for several servers); --prm "
             "then needs only its config.json and tokenizer")
    add("--server-model", default=None, help="served model name (default: the one model the servers serve)")
    add("--max-inflight", type=int, default=8, help="requests in flight to the servers at once")
    add("--aggregation", default="mean", choices=AGGREGATIONS, help="how step scores become one score")
    add("--alpha", type=float, default=None,
        help="weight of the trajectory score added to the step aggregate (eq. 11); needs --trajectory-prm")
    add("--chunk-size", type=int, default=256, help="rows per scorer call; stored to disk after each")
    add("--no-progress", action="store_true", help="no progress bar")


def scorer_from_args(args: argparse.Namespace) -> Any:
    """Load the PRM named by [`add_prm_arguments`]'s options with ``load_scorer``.

    Example:
    ```python
    >>> import argparse, tempfile
    >>> from reasonflux_rl.prm.options import add_prm_arguments, scorer_from_args
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> parser = argparse.ArgumentParser()
    >>> add_prm_arguments(parser)
    >>> prm = write_tiny_models(tempfile.mkdtemp()).prm
    >>> scorer = scorer_from_args(parser.parse_args(["--prm", str(prm), "--max-steps", "3", "--batch-tokens", "512"]))
    >>> scorer.kind, scorer.max_steps, scorer.batch_tokens
    ('step_classifier', 3, 512)

    ```
    """
    from reasonflux_rl.prm.loader import load_scorer

    return load_scorer(args.prm, **{name: getattr(args, name) for name in LOAD_OPTIONS})


def prm_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Check the PRM options and return those that can change a score, for a score cache: every option but the
    runtime ones, checkpoint paths resolved, plus the device type and the dtype ``auto`` resolves to there.

    Example:
    ```python
    >>> import argparse
    >>> from reasonflux_rl.prm.options import add_prm_arguments, prm_settings
    >>> parser = argparse.ArgumentParser()
    >>> add_prm_arguments(parser)
    >>> settings = prm_settings(parser.parse_args(["--prm", "ckpt", "--device", "cpu"]))
    >>> settings["dtype"], settings["device_type"], settings["truncation"], "batch_tokens" in settings
    ('float32', 'cpu', 'drop_oldest', False)
    >>> prm_settings(parser.parse_args(["--prm", "ckpt", "--max-length", "0"]))
    Traceback (most recent call last):
    ...
    reasonflux_rl.errors.ConfigError: --max-length=0 must be a positive integer

    ```
    """
    for name in _POSITIVE:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}={value} must be a positive integer")
    if args.alpha is not None and args.alpha < 0:
        raise ConfigError(f"--alpha={args.alpha} must be >= 0")
    from reasonflux_rl.prm.engine.base import resolve_dtype

    if args.server_urls:
        # The servers run the model: their numerics, not this machine's, make the scores.
        served = {"dtype": "served", "device_type": "server"}
        return {**{name: getattr(args, name) for name in LOAD_OPTIONS if name not in RUNTIME_OPTIONS}, **served,
                "prm": _resolved(args.prm), "trajectory_prm": _resolved(args.trajectory_prm)}
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = resolve_dtype(args.dtype, device)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"--device={args.device!r} --dtype={args.dtype!r}: {err}") from err
    settings = {name: getattr(args, name) for name in LOAD_OPTIONS if name not in RUNTIME_OPTIONS}
    return {**settings, "prm": _resolved(args.prm), "trajectory_prm": _resolved(args.trajectory_prm),
            "dtype": str(dtype).removeprefix("torch."), "device_type": device.type}


def _resolved(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path is not None and Path(path).exists() else path
