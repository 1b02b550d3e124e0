"""Preloaded by the outcome reward's forkserver only: warm math-verify there once, so every worker forked from it
starts with warm parser caches (see ``OutcomeReward._get_pool`` in ``reasonflux_rl.rewards.outcome``, which names
this module in the preload of its ``reasonflux_rl.rewards.verify_pool.Pool``). Importing it anywhere else just warms up.
"""

from reasonflux_rl.rewards.outcome import _warm_up

try:
    _warm_up()
except Exception:  # noqa: BLE001 - an optimisation only; the forkserver must start even if it fails
    pass
