"""The PRM options of ``score``, ``select`` and ``bon``: a flag for each option [`PRMOptions`] declares with one,
added to a parser by [`add_prm_arguments`], loaded by [`scorer_from_args`], and described for a score cache by
[`prm_settings`].

The options themselves, and the names every other surface reads them by, are declared once in
[`~reasonflux_rl.prm.declaration`] (re-exported here: [`PRMOptions`], [`AGGREGATIONS`], ...); a new option is a field
there, and its flag comes with it. The declaration lives in a module of its own because ``load_scorer`` reads it,
while [`scorer_from_args`] here calls ``load_scorer``.

Example:
```python
>>> from reasonflux_rl.prm.options import OPTIONS, PRMOptions
>>> PRMOptions().aggregation, OPTIONS["trajectory_prm"].flag.name
('mean', '--trajectory-prm')

```
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from types import NoneType, UnionType
from typing import Any

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.declaration import (
    AGGREGATE,
    AGGREGATIONS,
    CONFIG,
    FLAG,
    LOAD_OPTIONS,
    LOADER,
    OPTIONS,
    READERS,
    RUNTIME_OPTIONS,
    SURFACES,
    TRAJECTORY,
    Check,
    Option,
    PRMOptions,
    Surface,
    check_declared,
    config_fields,
    on_surface,
    read_by,
)
from reasonflux_rl.prm.placement.resolve import check_served_kind

__all__ = [
    "AGGREGATE", "AGGREGATIONS", "CONFIG", "FLAG", "LOADER", "LOAD_OPTIONS", "OPTIONS", "READERS", "RUNTIME_OPTIONS",
    "SURFACES", "TRAJECTORY", "Check", "Option", "PRMOptions", "Surface", "add_prm_arguments", "check_declared",
    "config_fields", "on_surface", "prm_settings", "read_by", "scorer_from_args",
]
# What a score cache records of the flags: what the commands load with and can change a score.
_SCORE_SETTINGS = tuple(name for name in LOAD_OPTIONS if OPTIONS[name].flag is not None and name not in RUNTIME_OPTIONS)


def add_prm_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the PRM group: ``--prm``, a flag for every declared option that has one (every [`load_scorer`] option the
    commands set, ``--aggregation``/``--alpha``: how step scores become one score), ``--chunk-size`` and
    ``--no-progress``.

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
    group.add_argument("--prm", required=True, help="local PRM checkpoint directory (e.g. ReasonFlux-PRM-7B)")
    for name, declared in OPTIONS.items():
        if declared.flag is not None:
            group.add_argument(declared.flag.name, dest=name, **_flag_arguments(name, declared))
    group.add_argument("--chunk-size", type=int, default=256, help="rows per scorer call; stored to disk after each")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def _flag_arguments(name: str, declared: Option) -> dict[str, Any]:
    """``add_argument`` keywords of an option's flag, from its type: a switch, a repeatable flag or one value."""
    flag, default, annotation = on_surface(name, FLAG)
    arguments: dict[str, Any] = {"default": default, "help": flag.help or declared.help}
    value_type = _value_type(annotation)
    if value_type is bool:
        return {**arguments, "action": "store_true"}
    if value_type is list:
        return {**arguments, "action": "append"}
    if declared.choices is not None:
        arguments["choices"] = list(declared.choices)
    if flag.parse is not None or value_type is not str:
        arguments["type"] = flag.parse or value_type
    return arguments


def _value_type(annotation: Any) -> Any:
    """``int`` for ``int | None``, ``list`` for ``list[str] | None``: the type a flag's value has."""
    if isinstance(annotation, UnionType):
        (annotation,) = (arg for arg in annotation.__args__ if arg is not NoneType)
    return typing.get_origin(annotation) or annotation


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

    return load_scorer(args.prm, PRMOptions.from_flags(args))


def prm_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Check the PRM options and return those that can change a score, for a score cache: every option the commands
    load with but the runtime ones, checkpoint paths resolved, plus the device type and the dtype ``auto`` resolves
    to there.

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
    if args.chunk_size is not None and args.chunk_size < 1:
        raise ConfigError(f"--chunk-size={args.chunk_size} must be a positive integer")
    check_declared({name: getattr(args, name) for name, o in OPTIONS.items() if o.flag is not None}, FLAG)
    options = PRMOptions.from_flags(args)
    if options.server_urls:
        check_served_kind(options.kind, f"--kind={options.kind!r}")
    scoring = {name: getattr(options, name) for name in _SCORE_SETTINGS}
    paths = {"prm": _resolved(args.prm), "trajectory_prm": _resolved(options.trajectory_prm)}
    return {**scoring, **paths, **_numerics(options)}


def _numerics(options: PRMOptions) -> dict[str, str]:
    """Where the scores are computed, as far as it can change them: the device type and the resolved dtype."""
    if options.server_urls:
        # The servers run the model: their numerics, not this machine's, make the scores.
        return {"dtype": "served", "device_type": "server"}
    import torch

    from reasonflux_rl.prm.engine.base import resolve_dtype

    try:
        device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = resolve_dtype(options.dtype, device)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"--device={options.device!r} --dtype={options.dtype!r}: {err}") from err
    return {"dtype": str(dtype).removeprefix("torch."), "device_type": device.type}


def _resolved(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path is not None and Path(path).exists() else path
