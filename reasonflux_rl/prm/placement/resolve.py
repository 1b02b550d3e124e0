"""Where the PRM runs during training (``prm_placement``).

- ``replica``: the whole PRM on every rank (bf16 7.6B: 15.2 GB per GPU), each rank scoring its own slice alone.
- ``zero3``: the PRM partitioned with DeepSpeed ZeRO-3 beside a ZeRO-3 policy, 1/N of it per rank; the ranks score in
  lockstep (see [`~reasonflux_rl.prm.placement.zero3`]).
- ``server``: on vLLM servers (``prm_server_urls``); nothing of it on the training GPUs.
- ``auto``: ``server`` when server URLs are given, else ``replica``.
"""

from __future__ import annotations

from collections.abc import Sequence

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.checkpoint import STEP_CLASSIFIER, STEP_VALUE_HEAD

AUTO, REPLICA, ZERO3, SERVER = "auto", "replica", "zero3", "server"
PLACEMENTS: tuple[str, ...] = (AUTO, REPLICA, ZERO3, SERVER)


def resolve_placement(placement: str, server_urls: Sequence[str] | None) -> str:
    """The placement ``placement`` means with ``server_urls``; a ConfigError for a combination that cannot work.

    Example:
    ```python
    >>> from reasonflux_rl.prm.placement.resolve import resolve_placement
    >>> resolve_placement("auto", None), resolve_placement("auto", ["http://prm:8001"]), resolve_placement("zero3", [])
    ('replica', 'server', 'zero3')
    >>> try:
    ...     resolve_placement("zero3", ["http://prm:8001"])
    ... except ValueError as err:
    ...     print(str(err)[:72])
    prm_placement='zero3' loads the PRM in the training processes, but prm_s

    ```
    """
    if placement not in PLACEMENTS:
        raise ConfigError(f"prm_placement={placement!r} is not allowed: choose one of {list(PLACEMENTS)}")
    if placement == AUTO:
        return SERVER if server_urls else REPLICA
    if placement == SERVER and not server_urls:
        raise ConfigError(
            "prm_placement='server' needs prm_server_urls: the base URLs of the vLLM servers that serve the PRM"
        )
    if placement != SERVER and server_urls:
        raise ConfigError(
            f"prm_placement={placement!r} loads the PRM in the training processes, but prm_server_urls is set: use "
            "prm_placement 'server' (or 'auto') to score on those servers, or drop prm_server_urls"
        )
    return placement


def check_served_kind(kind: str, where: str) -> None:
    """A ConfigError, starting with ``where`` (the setting that named the kind or the checkpoint), for a PRM kind that
    PRM servers cannot score: they serve step classifiers (``"auto"`` is checked once the checkpoint is read).

    Example:
    ```python
    >>> from reasonflux_rl.prm.placement.resolve import check_served_kind
    >>> check_served_kind("step_classifier", "prm_kind='step_classifier'")
    >>> try:
    ...     check_served_kind("step_value_head", "prm_kind='step_value_head'")
    ... except ValueError as err:
    ...     print(str(err)[:99])
    prm_kind='step_value_head': a step value-head PRM cannot be scored on PRM servers (prm_server_urls)

    ```
    """
    if kind in (AUTO, STEP_CLASSIFIER):
        return
    if kind == STEP_VALUE_HEAD:
        raise ConfigError(
            f"{where}: a step value-head PRM cannot be scored on PRM servers (prm_server_urls): vLLM serves the "
            "Skywork-o1-Open-PRM layout (v_head.summary) only through a model plugin, and the servers' STEP pooler "
            "reads 2-label step classifiers. Score it in the training processes: drop prm_server_urls "
            "(prm_placement 'replica' or 'zero3')."
        )
    raise ConfigError(f"{where}: a {kind} PRM cannot be scored on PRM servers (prm_server_urls), which serve step "
                      "classifiers")
