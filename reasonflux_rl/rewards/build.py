"""Build the mixed reward from [`RewardArguments`], and expose it by dotted path for ``trl grpo``.

``trl grpo --reward_funcs reasonflux_rl.rewards.mixed_reward`` imports [`mixed_reward`]; it has no config of its own
on that command line, so it reads every [`RewardArguments`] field from an environment variable named
``REASONFLUX_<FIELD>`` (e.g. ``REASONFLUX_PRM_NAME_OR_PATH``, ``REASONFLUX_PRM_BETA``), which a TRL YAML config can
set in its ``env:`` section. Group normalisations also need ``REASONFLUX_NUM_GENERATIONS``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import torch

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.checkpoint import CheckpointInfo, inspect_checkpoint
from reasonflux_rl.prm.loader import load_scorer
from reasonflux_rl.prm.placement.remote import inspect_served_checkpoint
from reasonflux_rl.prm.placement.resolve import SERVER, ZERO3, resolve_placement
from reasonflux_rl.rewards.config import ENV_PREFIX, RewardArguments, reward_arguments_from_env
from reasonflux_rl.rewards.formula import Score
from reasonflux_rl.rewards.outcome import OutcomeReward
from reasonflux_rl.rewards.prm import MixedReward


def validate(args: RewardArguments) -> CheckpointInfo | None:
    """Check what can be checked without loading weights: the PRM directory holds a supported PRM (returned); with
    PRM servers, that they answer and serve it. (Whether a ``zero3`` placement has its ZeRO-3 launch is
    [`check_placement`]'s job, which needs the DeepSpeed config.)

    Example:
    ```python
    >>> from reasonflux_rl.rewards.config import RewardArguments
    >>> from reasonflux_rl.rewards.build import validate
    >>> try:
    ...     validate(RewardArguments(prm_name_or_path="/no/such/prm"))
    ... except ValueError as err:
    ...     print(str(err)[:60])
    prm_name_or_path='/no/such/prm' is not a local directory. Do

    ```
    """
    if args.prm_trajectory_name_or_path:
        inspect_checkpoint(args.prm_trajectory_name_or_path, kind="value_head", key="prm_trajectory_name_or_path",
                           kind_key=None)
    if not args.prm_name_or_path:
        return None
    if resolve_placement(args.prm_placement, args.prm_server_urls) == SERVER:
        info = inspect_served_checkpoint(args.prm_name_or_path)
        # Health, served model, context length and a probe of the step tags, so that a wrong server fails the
        # launch now and not the first training step.
        load_scorer(args.prm_name_or_path, args.prm_options(), trajectory_prm=None).close()
        return info
    return inspect_checkpoint(args.prm_name_or_path, kind=args.prm_kind)


def check_placement(args: RewardArguments, zero_stage: int | None) -> str:
    """The PRM placement ``args`` resolve to, checked against the launch's DeepSpeed ZeRO stage (``None``: no
    DeepSpeed): ``zero3`` needs stage 3. Loads nothing.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.config import RewardArguments
    >>> from reasonflux_rl.rewards.build import check_placement
    >>> check_placement(RewardArguments(prm_beta=0, prm_placement="zero3"), zero_stage=3)
    'zero3'
    >>> try:
    ...     check_placement(RewardArguments(prm_beta=0, prm_placement="zero3"), zero_stage=2)
    ... except ValueError as err:
    ...     print(str(err)[:68])
    prm_placement='zero3' shards the PRM with DeepSpeed ZeRO-3 beside th

    ```
    """
    placement = resolve_placement(args.prm_placement, args.prm_server_urls)
    if placement == ZERO3 and zero_stage != 3:
        launched = "without DeepSpeed" if zero_stage is None else f"with DeepSpeed ZeRO stage {zero_stage}"
        raise ConfigError(
            f"prm_placement='zero3' shards the PRM with DeepSpeed ZeRO-3 beside the policy, but the run is launched "
            f"{launched}: use a ZeRO-3 config (deepspeed: deepspeed_configs/zero3.json), or prm_placement 'replica'"
        )
    return placement


def build_reward(
    args: RewardArguments, num_generations: int | None = None, device: str | torch.device | None = None
) -> MixedReward:
    """The mixed reward described by ``args``, with the PRM on ``device`` (default: this process's accelerator).

    The PRM is loaded whenever a path is given, also with ``prm_beta=0``, so an outcome-only run still logs PRM
    scores for comparison.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.rewards.config import RewardArguments
    >>> from reasonflux_rl.rewards.build import build_reward
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> prm = write_tiny_models(tempfile.mkdtemp()).prm
    >>> reward = build_reward(RewardArguments(prm_name_or_path=str(prm), outcome_num_workers=1), num_generations=2)
    >>> reward.beta, reward.prm.normalisation
    (0.75, 'none')
    >>> reward.close()

    ```
    """
    from accelerate import PartialState

    validate(args)
    state = PartialState()
    scorer = None
    if args.prm_name_or_path:
        # validate() has just checked the servers.
        scorer = load_scorer(
            args.prm_name_or_path,
            args.prm_options(state.num_processes),
            device=device or state.device,
            check=False,
        )
    outcome = OutcomeReward.from_args(args)
    return MixedReward(
        outcome,
        scorer,
        beta=args.prm_beta,
        beta_schedule=args.prm_beta_schedule,
        beta_schedule_steps=args.prm_beta_schedule_steps,
        normalisation=args.prm_normalisation,
        aggregation=args.prm_aggregation,
        alpha=args.prm_alpha,
        num_generations=num_generations,
        problem_column=args.problem_column,
        on_failure=args.prm_on_failure,
        credit=args.credit_options(),
        thinking_prefilled=bool(args.thinking_prefilled),
    )


def build_reward_funcs(
    args: RewardArguments, num_generations: int | None = None, device: str | torch.device | None = None
) -> tuple[list[Callable[..., list[Score]]], list[float] | None]:
    """The ``reward_funcs`` (and ``reward_weights``, or ``None``) to give ``GRPOTrainer`` for ``args.reward_mode``.

    ``mixed`` gives one [`MixedReward`]; ``separate`` gives the outcome and the
    [`~reasonflux_rl.rewards.prm.PRMReward`] with weights
    ``[1 - prm_beta, prm_beta]``.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.rewards.config import RewardArguments
    >>> from reasonflux_rl.rewards.build import build_reward_funcs
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> prm = str(write_tiny_models(tempfile.mkdtemp()).prm)
    >>> funcs, weights = build_reward_funcs(
    ...     RewardArguments(prm_name_or_path=prm, reward_mode="separate", outcome_num_workers=1))
    >>> [f.__name__ for f in funcs], weights
    (['outcome', 'prm'], [0.25, 0.75])
    >>> funcs[0].close()

    ```
    """
    reward = build_reward(args, num_generations, device)
    if args.reward_mode == "mixed":
        return [reward], None
    reward.prm.beta = args.prm_beta  # logged as reasonflux/beta; TRL applies it through reward_weights
    return [reward.outcome, reward.prm], [1.0 - args.prm_beta, args.prm_beta]


_default: MixedReward | None = None
_default_lock = threading.Lock()


def mixed_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[Score]:
    """The mixed reward for ``trl grpo --reward_funcs reasonflux_rl.rewards.mixed_reward``, configured from the
    environment (see [`reward_arguments_from_env`]) on first call.

    Example:
    ```python
    >>> import os
    >>> from unittest import mock
    >>> from reasonflux_rl.rewards import build as rewards
    >>> # Both patches are undone on leaving the block: the environment, and the reward built on the first call.
    >>> with mock.patch.dict(os.environ, REASONFLUX_PRM_BETA="0", REASONFLUX_OUTCOME_NUM_WORKERS="1"), \\
    ...         mock.patch.object(rewards, "_default", None):
    ...     print(rewards.mixed_reward(prompts=["1+1?"], completions=["</think>\\n$\\\\boxed{2}$"], solution=["2"]))
    ...     rewards._default.close()
    [1.0]

    ```
    """
    global _default
    with _default_lock:
        if _default is None:
            generations = os.environ.get(ENV_PREFIX + "NUM_GENERATIONS")
            args = reward_arguments_from_env()
            if args.credit_options().dense:
                raise ConfigError(
                    f"REASONFLUX_PRM_CREDIT={args.prm_credit} gives every token its own advantage, which TRL's "
                    "GRPOTrainer (trl grpo) cannot take: it takes one reward per completion. Train with "
                    "`reasonflux-rl train` or, in your own script, reasonflux_rl.DenseCreditGRPOTrainer"
                )
            _default = build_reward(args, int(generations) if generations else None)
    return _default(prompts=prompts, completions=completions, **kwargs)


