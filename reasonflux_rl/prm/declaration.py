"""The PRM options, declared once: each field of [`PRMOptions`] is one option, with its type, default and help, its
allowed values and check, which kinds and placements read it, and how each surface shows it (an [`Option`]).

Three surfaces are made from the declaration, so a new option is one field here:

- the training config: the ``prm_*`` keys of ``RewardArguments`` are [`config_fields`] (the YAML keys, the
  ``REASONFLUX_*`` variables), checked by [`check_declared`] and read back by [`PRMOptions.from_config`];
- the flags of ``score``, ``select`` and ``bon`` (``reasonflux_rl.prm.options.add_prm_arguments``), read back by
  [`PRMOptions.from_flags`];
- ``load_scorer``: its keywords are [`LOAD_OPTIONS`], and each kind or placement gets the options it reads
  ([`PRMOptions.read_by`]).

The aggregation of the step scores into one score and ``alpha`` (eq. 11) are options too: they are read after
scoring, by the reward formula and the commands, never by ``load_scorer``.

This module imports no model code (nor torch), and nothing that loads a PRM: ``load_scorer`` builds on it, and the
reward formula imports [`AGGREGATIONS`] from it.

Example:
```python
>>> from reasonflux_rl.prm.declaration import OPTIONS, PRMOptions
>>> PRMOptions().truncation, OPTIONS["max_inflight"].config.name, OPTIONS["max_inflight"].flag.name
('drop_oldest', 'prm_server_max_inflight', '--max-inflight')

```
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.checkpoint import KINDS, STEP_CLASSIFIER, STEP_VALUE_HEAD, TOKEN_LOGIT, VALUE_HEAD
from reasonflux_rl.prm.engine.format import DEFAULT_SYSTEM_PROMPT, PARTS
from reasonflux_rl.prm.engine.truncation import TRUNCATIONS
from reasonflux_rl.prm.placement.resolve import PLACEMENTS, SERVER

AGGREGATIONS: tuple[str, ...] = ("mean", "min", "last", "geometric_mean")

# Who reads an option, besides the kinds and the server placement (SERVER).
LOADER = "loader"  # load_scorer itself: which kind, where, with which trajectory PRM
TRAJECTORY = "trajectory"  # the trajectory PRM of eq. 11 (a value head): how it runs
AGGREGATE = "aggregate"  # the step scores -> one score step, after scoring (never load_scorer)
READERS: tuple[str, ...] = (*KINDS, SERVER, LOADER, TRAJECTORY, AGGREGATE)
_LOCAL = (STEP_CLASSIFIER, VALUE_HEAD, TOKEN_LOGIT, STEP_VALUE_HEAD)
_STEPS = (STEP_CLASSIFIER, TOKEN_LOGIT, STEP_VALUE_HEAD, SERVER)
_EVERY_KIND = (*_LOCAL, SERVER)
_RUNS = (*_LOCAL, TRAJECTORY)

# The two surfaces that name options: the training config (prm_max_steps) and the commands' flags (--max-steps).
CONFIG = "config"
FLAG = "flag"
SURFACES: tuple[str, ...] = (CONFIG, FLAG)
OPTION = "reasonflux_prm_option"
_SAME: Any = object()


@dataclass(frozen=True)
class Check:
    """A rule an option's value keeps when set (``None`` is never checked), and how an error says it was broken: by
    ``wording``, or on the training config by ``config_wording`` where that differs.

    Example:
    ```python
    >>> from reasonflux_rl.prm.declaration import POSITIVE_INTEGER_OR_UNSET
    >>> POSITIVE_INTEGER_OR_UNSET.holds(0), POSITIVE_INTEGER_OR_UNSET.wording_on("config")
    (False, 'must be a positive integer or unset')

    ```
    """

    holds: Callable[[Any], bool]
    wording: str
    config_wording: str | None = None

    def wording_on(self, surface: str) -> str:
        """How an error on ``surface`` ([`SURFACES`]) says the rule was broken.

        Example:
        ```python
        >>> from reasonflux_rl.prm.declaration import POSITIVE_INTEGER_OR_UNSET
        >>> POSITIVE_INTEGER_OR_UNSET.wording_on("flag")
        'must be a positive integer'

        ```
        """
        return self.config_wording if surface == CONFIG and self.config_wording else self.wording


def _positive(value: Any) -> bool:
    return value > 0


def _not_negative(value: Any) -> bool:
    return value >= 0


def _is_dtype_name(value: Any) -> bool:
    # torch is imported only here: the reward formula imports this module (AGGREGATIONS) and stays free of torch.
    import torch

    return value == "auto" or isinstance(getattr(torch, value, None), torch.dtype)


def _none_if_empty(text: str) -> str | None:
    return text or None


POSITIVE_INTEGER = Check(_positive, "must be a positive integer")
POSITIVE_INTEGER_OR_UNSET = Check(_positive, "must be a positive integer", "must be a positive integer or unset")
POSITIVE = Check(_positive, "must be positive")
DTYPE_NAME = Check(_is_dtype_name, "is not allowed: use 'auto' or a torch dtype name")


@dataclass(frozen=True)
class Surface:
    """How one surface shows an option, where it differs from the declaration: its ``name`` there (a config key, or
    a flag), and its ``default``, ``type`` and ``help``; ``convert`` turns a config value into the option's (the
    config's ``thinking_prefilled`` may be unset); ``parse`` reads a flag's text.

    Example:
    ```python
    >>> from reasonflux_rl.prm.declaration import OPTIONS
    >>> OPTIONS["batch_tokens"].config
    Surface(name='prm_batch_tokens', default=16384, type=<class 'int'>, help=None, convert=None, parse=None)

    ```
    """

    name: str
    default: Any = _SAME
    type: Any = _SAME
    help: str | None = None
    convert: Callable[[Any], Any] | None = None
    parse: Callable[[str], Any] | None = None


@dataclass(frozen=True)
class Option:
    """One PRM option, as [`PRMOptions`] declares it: ``help`` (the training config's text), who reads it
    (``readers``, of [`READERS`]), its ``choices`` or ``check``, whether it can change a score (``runtime``: it
    cannot; a score cache leaves it out), and its name on the training ``config`` and as a ``flag`` of the commands
    (``None``: not on that surface).

    Example:
    ```python
    >>> from reasonflux_rl.prm.declaration import OPTIONS
    >>> option = OPTIONS["system_prompt"]
    >>> option.readers, option.config.name, option.flag.name
    (('step_classifier', 'server'), 'prm_system_prompt', '--system-prompt')

    ```
    """

    help: str
    readers: tuple[str, ...]
    choices: tuple[str, ...] | None = None
    check: Check | None = None
    runtime: bool = False
    config: Surface | None = None
    flag: Surface | None = None

    def surface(self, surface: str) -> Surface | None:
        """How ``surface`` ([`SURFACES`]) shows this option, or ``None`` where it is not there.

        Example:
        ```python
        >>> from reasonflux_rl.prm.declaration import OPTIONS
        >>> OPTIONS["trajectory_prm"].surface("config").name, OPTIONS["device"].surface("config")
        ('prm_trajectory_name_or_path', None)

        ```
        """
        return self.config if surface == CONFIG else self.flag


def option(
    default: Any,
    help: str,
    readers: tuple[str, ...],
    *,
    choices: tuple[str, ...] | None = None,
    check: Check | None = None,
    runtime: bool = False,
    config: Surface | None = None,
    flag: Surface | None = None,
) -> Any:
    """A [`PRMOptions`] field: its default and its [`Option`] declaration.

    Example:
    ```python
    >>> from reasonflux_rl.prm.declaration import option
    >>> option(None, "Cap on steps.", ("step_classifier",)).metadata["reasonflux_prm_option"].readers
    ('step_classifier',)

    ```
    """
    unknown = set(readers) - set(READERS)
    if unknown:
        raise ValueError(f"readers {sorted(unknown)} are not allowed: choose from {list(READERS)}")
    declared = Option(help, readers, choices, check, runtime, config, flag)
    return field(default=default, metadata={OPTION: declared})


@dataclass(frozen=True)
class PRMOptions:
    """Every option of a PRM: what is loaded and how it reads, runs and is reached, and how its step scores become
    one score. Each field is declared once, here, for the training config, the commands' flags and ``load_scorer``
    (see the module docstring); the defaults are ``load_scorer``'s.

    Example:
    ```python
    >>> from reasonflux_rl.prm.declaration import PRMOptions
    >>> options = PRMOptions(kind="token_logit", max_steps=3)
    >>> options.kind, options.max_steps, options.read_by("value_head")["truncation"], "max_steps" in options.read_by(
    ...     "value_head")
    ('token_logit', 3, 'drop_oldest', False)

    ```
    """

    # Which checkpoint kind, and the second one of eq. 11.
    kind: str = option(
        "auto",
        f"PRM kind: auto (step classifier, value head or step value head, told by their weights) or one of {KINDS}; "
        "token_logit must be named, with prm_step_tag, prm_good_token and prm_bad_token.",
        (LOADER,),
        choices=("auto", *KINDS),
        config=Surface("prm_kind"),
        flag=Surface("--kind", help="PRM kind (auto: told by the weights); token_logit must be named, with its three "
                     "tokens"),
    )
    trajectory_prm: str | None = option(
        None,
        "A value-head PRM (ReasonFlux-PRM-1.5B) giving the trajectory score for alpha.",
        (LOADER,),
        config=Surface("prm_trajectory_name_or_path"),
        flag=Surface("--trajectory-prm", help="a value-head PRM whose score becomes each row's trajectory_score"),
    )
    step_tag: str | None = option(
        None,
        "Step tag token of a token_logit PRM (a step classifier's default: <extra_0>; a step value head's: a line "
        "break).",
        _STEPS,
        config=Surface("prm_step_tag"),
        flag=Surface("--step-tag", help="step tag token (token_logit; default <extra_0>, or a line break for a step "
                     "value head)"),
    )
    good_token: str | None = option(
        None,
        "'Good step' token of a token_logit PRM.",
        (TOKEN_LOGIT,),
        config=Surface("prm_good_token"),
        flag=Surface("--good-token", help="token_logit: the 'good step' token"),
    )
    bad_token: str | None = option(
        None,
        "'Bad step' token of a token_logit PRM.",
        (TOKEN_LOGIT,),
        config=Surface("prm_bad_token"),
        flag=Surface("--bad-token", help="token_logit: the 'bad step' token"),
    )
    step_tag_id: int | None = option(None, "Token id of the step tag, where a tokenizer spells it differently in "
                                     "context (token_logit).", (TOKEN_LOGIT,))
    good_token_id: int | None = option(None, "Token id of the 'good step' token (token_logit).", (TOKEN_LOGIT,))
    bad_token_id: int | None = option(None, "Token id of the 'bad step' token (token_logit).", (TOKEN_LOGIT,))

    # What the PRM reads.
    parts: str = option(
        "both",
        f"Which part of the completion the PRM scores: one of {PARTS}.",
        _EVERY_KIND,
        choices=PARTS,
        config=Surface("prm_parts"),
        flag=Surface("--parts", help="score the thinking, the response or both"),
    )
    thinking_prefilled: bool = option(
        False,
        "Whether the policy's chat template opens the thinking in the prompt (DeepSeek-R1-Distill ends it with "
        "<think>), so a completion without </think> is cut-off thinking. Default: read from the policy's chat template "
        "by `reasonflux-rl train`; false elsewhere.",
        _EVERY_KIND,
        # The outcome reward reads this key too: it has no prm_ prefix, and is unset until `train` reads the template.
        config=Surface("thinking_prefilled", default=None, type=bool | None, convert=bool),
        flag=Surface("--thinking-prefilled", help="the prompts opened the thinking (DeepSeek-R1-Distill): a "
                     "completion without </think> is cut-off thinking (for the PRM, and for bon's outcome judge)"),
    )
    max_steps: int | None = option(
        None,
        "Cap on steps per completion; steps past it merge into the last one.",
        _STEPS,
        check=POSITIVE_INTEGER_OR_UNSET,
        config=Surface("prm_max_steps"),
        flag=Surface("--max-steps", help="cap on steps; the tail merges into the last"),
    )
    max_length: int | None = option(
        None,
        "PRM context in tokens (default: the checkpoint's max_position_embeddings). Oldest steps that do not fit are "
        "dropped, never scored.",
        _EVERY_KIND,
        check=POSITIVE_INTEGER_OR_UNSET,
        config=Surface("prm_max_length"),
        flag=Surface("--max-length", help="PRM context in tokens (default: the model's)"),
    )
    truncation: str = option(
        "drop_oldest",
        f"What happens to steps past prm_max_length: one of {TRUNCATIONS}.",
        _EVERY_KIND,
        choices=TRUNCATIONS,
        config=Surface("prm_truncation"),
        flag=Surface("--truncation", help="inputs longer than --max-length"),
    )
    window_overlap: int | None = option(
        None,
        "Context tokens a window repeats (truncation: windows); default a quarter.",
        _STEPS,
        check=POSITIVE_INTEGER,
        config=Surface("prm_window_overlap"),
        flag=Surface("--window-overlap", help="context tokens of the windows truncation (default: a quarter of the "
                     "context)"),
    )
    system_prompt: str | None = option(
        DEFAULT_SYSTEM_PROMPT,
        "System message of the PRM input; empty string for none.",
        (STEP_CLASSIFIER, SERVER),
        config=Surface("prm_system_prompt"),
        flag=Surface("--system-prompt", help="system message of the step classifier's input; '' for none",
                     parse=_none_if_empty),
    )

    # How the step scores become one score (eq. 11), after scoring.
    aggregation: str = option(
        "mean",
        f"How step scores become one trajectory score: one of {AGGREGATIONS}.",
        (AGGREGATE,),
        choices=AGGREGATIONS,
        config=Surface("prm_aggregation"),
        flag=Surface("--aggregation", help="how step scores become one score"),
    )
    alpha: float | None = option(
        None,
        "Weight of the trajectory-level score in eq. 11: r = aggregate(steps) + alpha * r_traj.",
        (AGGREGATE,),
        check=Check(_not_negative, "must be >= 0"),
        config=Surface("prm_alpha"),
        flag=Surface("--alpha", help="weight of the trajectory score added to the step aggregate (eq. 11); needs "
                     "--trajectory-prm"),
    )

    # Where and how it runs.
    placement: str = option(
        "auto",
        f"Where the PRM runs: one of {PLACEMENTS}. 'replica': whole on every rank; 'zero3': partitioned with DeepSpeed "
        "ZeRO-3 beside a ZeRO-3 policy (launch with a ZeRO-3 config), ranks scoring in lockstep; 'server': on the vLLM "
        "servers of prm_server_urls; 'auto': 'server' when prm_server_urls is set, else 'replica'.",
        (LOADER,),
        choices=PLACEMENTS,
        runtime=True,
        config=Surface("prm_placement"),
    )
    device: str | None = option(
        None, "Where the PRM runs, e.g. cuda:0 or cpu (default: cuda when available).", _RUNS, runtime=True,
        flag=Surface("--device", help="e.g. cuda:0 or cpu (default: cuda when available)"),
    )
    dtype: str = option(
        "auto",
        "PRM dtype: auto (bf16 on GPU, fp32 on CPU) or a name.",
        _RUNS,
        check=DTYPE_NAME,
        runtime=True,
        config=Surface("prm_dtype"),
        flag=Surface("--dtype", help="auto (bf16 on GPU, fp32 on CPU) or a torch dtype name"),
    )
    attn_implementation: str | None = option(
        "auto", "Attention of the PRM: auto (flash-attention 2 on CUDA when installed, else SDPA) or a transformers "
        "name.", _RUNS, runtime=True,
    )
    packed: bool | None = option(
        None, "Pack rows without padding (default: exactly with flash-attention 2).", _RUNS, runtime=True
    )
    batch_tokens: int | None = option(
        None,
        "Padded tokens per PRM forward pass (length-sorted batches).",
        (*_EVERY_KIND, TRAJECTORY),
        check=POSITIVE_INTEGER,
        runtime=True,
        # Training runs on accelerators: their default, on every device.
        config=Surface("prm_batch_tokens", default=16384, type=int),
        flag=Surface("--batch-tokens", help="padded tokens per forward pass (default: 16384 on GPU, 4096 on CPU)"),
    )
    padding_side: str = option("right", "Which side padded batches pad (a score does not depend on it).", _RUNS,
                               runtime=True)

    # The vLLM servers of the server placement.
    server_urls: list[str] | None = option(  # noqa: RUF009 - option() returns a dataclasses.field
        None,
        "Score with the PRM served by vLLM at these base URLs (e.g. http://prm-node:8001) instead of a replica on every "
        "rank; prm_name_or_path then needs only the PRM's config.json and tokenizer.",
        (LOADER,),
        runtime=True,
        config=Surface("prm_server_urls"),
        flag=Surface("--server-url", help="score with the step classifier served by vLLM at this base URL (repeat for "
                     "several servers); --prm then needs only its config.json and tokenizer"),
    )
    server_model: str | None = option(
        None,
        "Served model name of the PRM servers (default: the one model they serve).",
        (SERVER,),
        config=Surface("prm_server_model"),
        flag=Surface("--server-model", help="served model name (default: the one model the servers serve)"),
    )
    max_inflight: int = option(
        8,
        "Requests in flight to the PRM servers at once.",
        (SERVER,),
        check=POSITIVE_INTEGER_OR_UNSET,
        runtime=True,
        # A training job has many ranks: its key bounds the whole job (RewardArguments.prm_options shares it out).
        config=Surface("prm_server_max_inflight", default=64, help="PRM requests in flight from the whole job; each of N "
                       "ranks keeps at most 1/N of them."),
        flag=Surface("--max-inflight", help="requests in flight to the servers at once"),
    )
    request_timeout: float = option(
        120.0, "Seconds one PRM request may take before it is retried elsewhere.", (SERVER,), check=POSITIVE,
        runtime=True, config=Surface("prm_server_timeout_seconds"),
    )
    retries: int = option(
        3, "Retries of a failed PRM request (connection errors, timeouts, HTTP 5xx).", (SERVER,),
        check=Check(_not_negative, "must be 0 or more"), runtime=True, config=Surface("prm_server_retries"),
    )
    deadline: float = option(
        600.0, "Seconds the PRM scoring of one batch may take in all, retries included.", (SERVER,), check=POSITIVE,
        runtime=True, config=Surface("prm_server_deadline_seconds"),
    )
    check: bool = option(True, "Check every PRM server (health, served model, a probe) when loading.", (SERVER,),
                         runtime=True)

    def read_by(self, reader: str) -> dict[str, Any]:
        """The options ``reader`` (one of [`READERS`]) reads, with their values.

        Example:
        ```python
        >>> from reasonflux_rl.prm.declaration import PRMOptions
        >>> sorted(PRMOptions(dtype="float32").read_by("trajectory"))
        ['attn_implementation', 'batch_tokens', 'device', 'dtype', 'packed', 'padding_side']

        ```
        """
        return {name: getattr(self, name) for name in read_by(reader)}

    @classmethod
    def from_config(cls, config: object) -> PRMOptions:
        """The options a training config (``RewardArguments``) gives, read from its keys as they are: a key whose
        value means something else there (the job-wide ``prm_server_max_inflight``) is the config's to convert.

        Example:
        ```python
        >>> from types import SimpleNamespace
        >>> from reasonflux_rl.prm.declaration import OPTIONS, PRMOptions
        >>> keys = {o.config.name: None for o in OPTIONS.values() if o.config}
        >>> options = PRMOptions.from_config(SimpleNamespace(**{**keys, "prm_max_steps": 4}))
        >>> options.max_steps, options.thinking_prefilled, options.device
        (4, False, None)

        ```
        """
        values = {}
        for name, declared in OPTIONS.items():
            if declared.config is not None:
                value = getattr(config, declared.config.name)
                values[name] = declared.config.convert(value) if declared.config.convert else value
        return cls(**values)

    @classmethod
    def from_flags(cls, args: argparse.Namespace) -> PRMOptions:
        """The options the flags of [`add_prm_arguments`] give (those without a flag keep their defaults).

        Example:
        ```python
        >>> import argparse
        >>> from reasonflux_rl.prm.declaration import PRMOptions
        >>> from reasonflux_rl.prm.options import add_prm_arguments
        >>> parser = argparse.ArgumentParser()
        >>> add_prm_arguments(parser)
        >>> options = PRMOptions.from_flags(parser.parse_args(["--prm", "p", "--server-url", "http://a:1"]))
        >>> options.server_urls, options.max_inflight, options.retries
        (['http://a:1'], 8, 3)

        ```
        """
        return cls(**{name: getattr(args, name) for name, declared in OPTIONS.items() if declared.flag is not None})


OPTIONS: dict[str, Option] = {f.name: f.metadata[OPTION] for f in dataclasses.fields(PRMOptions)}
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(PRMOptions)}
_TYPES: dict[str, Any] = typing.get_type_hints(PRMOptions)


def read_by(reader: str) -> tuple[str, ...]:
    """The names of the options ``reader`` (one of [`READERS`]: a kind, ``server``, ``loader``, ``trajectory`` or
    ``aggregate``) reads, in declaration order.

    Example:
    ```python
    >>> from reasonflux_rl.prm.declaration import read_by
    >>> read_by("aggregate"), "system_prompt" in read_by("token_logit")
    (('aggregation', 'alpha'), False)

    ```
    """
    if reader not in READERS:
        raise ValueError(f"reader={reader!r} is not allowed: choose one of {list(READERS)}")
    return tuple(name for name, declared in OPTIONS.items() if reader in declared.readers)


# The keywords of load_scorer: every option something in it reads (not the aggregation's, read after scoring).
LOAD_OPTIONS: tuple[str, ...] = tuple(name for name, o in OPTIONS.items() if set(o.readers) - {AGGREGATE})
# Where and how fast the PRM runs: these change no score (the device type and the resolved dtype can, and are
# recorded by prm_settings instead).
RUNTIME_OPTIONS: tuple[str, ...] = tuple(name for name, o in OPTIONS.items() if o.runtime)


def on_surface(name: str, surface: str) -> tuple[Surface, Any, Any]:
    """How ``surface`` ([`SURFACES`]) shows the option ``name``: its [`Surface`], and the default and type it has
    there (the declared ones, unless the surface overrides them).

    Example:
    ```python
    >>> from reasonflux_rl.prm.declaration import on_surface
    >>> shown, default, kind = on_surface("batch_tokens", "config")
    >>> shown.name, default, kind, on_surface("batch_tokens", "flag")[1:]
    ('prm_batch_tokens', 16384, <class 'int'>, (None, int | None))

    ```
    """
    shown = OPTIONS[name].surface(surface)
    if shown is None:
        raise ValueError(f"option {name!r} has no {surface} surface")
    default = _DEFAULTS[name] if shown.default is _SAME else shown.default
    return shown, default, _TYPES[name] if shown.type is _SAME else shown.type


def config_fields() -> list[tuple[str, Any, Any]]:
    """The training config's keys of the PRM options, for ``dataclasses.make_dataclass``: ``(key, type, field)``
    with the key's default and its ``help``, in declaration order.

    Example:
    ```python
    >>> from reasonflux_rl.prm.declaration import config_fields
    >>> [(key, kind, f.default) for key, kind, f in config_fields() if key == "prm_server_max_inflight"]
    [('prm_server_max_inflight', <class 'int'>, 64)]

    ```
    """
    keys = []
    for name, declared in OPTIONS.items():
        if declared.config is not None:
            shown, default, kind = on_surface(name, CONFIG)
            keys.append((shown.name, kind, field(default=default, metadata={"help": shown.help or declared.help})))
    return keys


def check_declared(values: Mapping[str, Any], surface: str) -> None:
    """Check options (name -> value, as ``surface`` gives it) against their declared choices and checks; a
    [`~reasonflux_rl.errors.ConfigError`] names the first bad one as ``surface`` names it, and what is allowed.

    Example:
    ```python
    >>> from reasonflux_rl.prm.declaration import check_declared
    >>> check_declared({"max_steps": None, "kind": "auto"}, "config")
    >>> for surface in ("config", "flag"):
    ...     try:
    ...         check_declared({"max_length": 0}, surface)
    ...     except ValueError as err:
    ...         print(err)
    prm_max_length=0 must be a positive integer or unset
    --max-length=0 must be a positive integer

    ```
    """
    for name, value in values.items():
        declared = OPTIONS[name]
        key = declared.surface(surface).name
        if declared.choices is not None and value not in declared.choices:
            raise ConfigError(f"{key}={value!r} is not allowed: choose one of {list(declared.choices)}")
        if declared.check is not None and value is not None and not declared.check.holds(value):
            raise ConfigError(f"{key}={value!r} {declared.check.wording_on(surface)}")
