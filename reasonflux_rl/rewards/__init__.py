"""The rewards room: everything TRL's ``GRPOTrainer`` calls, and how it is configured.

Data flows one way: completions -> the outcome reward (``outcome.py``, judged by workers of ``verify_pool.py``) and
the PRM's step scores -> the formula (``formula.py``: aggregate, eq. 11, normalise, mix as eq. 12) -> one reward per
completion for TRL (``prm.py``: the reward callables and their metrics). ``config.py`` holds [`RewardArguments`]
(and reads them from the environment for ``trl grpo``), ``schedule.py`` the beta schedules, ``build.py`` builds the
reward functions from the config. Step-level credit puts the PRM's step scores on the tokens instead:
``step_tokens.py`` finds each step's tokens, ``credit.py`` computes per-token advantages, ``dense_trainer.py`` hands
them to TRL (``DenseCreditGRPOTrainer``).

For ``trl grpo --reward_funcs``, the dotted paths are ``reasonflux_rl.rewards.mixed_reward``,
``reasonflux_rl.rewards.outcome_reward`` and ``reasonflux_rl.rewards.format_reward``.
"""

from reasonflux_rl.lazy_exports import lazy_exports

# Lazy, so that importing one module of the room (the config, the formula) does not load models and TRL.
_LAZY = {
    "mixed_reward": "reasonflux_rl.rewards.build",
    "build_reward_funcs": "reasonflux_rl.rewards.build",
    "outcome_reward": "reasonflux_rl.rewards.outcome",
    "format_reward": "reasonflux_rl.rewards.outcome",
    "RewardArguments": "reasonflux_rl.rewards.config",
}

__getattr__ = lazy_exports(__name__, _LAZY)
__all__ = list(_LAZY)
