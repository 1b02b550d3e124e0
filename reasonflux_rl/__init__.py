"""reasonflux-rl: trajectory-aware process reward models (ReasonFlux-PRM and peers) as GRPO rewards in TRL.

The public API, imported lazily (importing the package loads neither TRL nor a model):
[`RewardArguments`], [`build_reward_funcs`], [`load_scorer`], [`token_advantages`] (step scores to per-token
advantages) and [`DenseCreditGRPOTrainer`].
"""

from reasonflux_rl.lazy_exports import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "RewardArguments": "reasonflux_rl.rewards.config",
    "build_reward_funcs": "reasonflux_rl.rewards.build",
    "load_scorer": "reasonflux_rl.prm.loader",
    "token_advantages": "reasonflux_rl.rewards.credit",
    "DenseCreditGRPOTrainer": "reasonflux_rl.rewards.dense_trainer",
}

__getattr__ = lazy_exports(__name__, _LAZY)
__all__ = list(_LAZY)
