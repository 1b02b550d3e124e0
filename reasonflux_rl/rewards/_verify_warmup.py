"""Preloaded by the outcome reward's forkserver only: warm math-verify there once, so every worker forked from it
starts with warm parser caches (see ``reasonflux_rl.rewards.outcome._mp_context``). Importing it anywhere else just warms up.
"""

from reasonflux_rl.rewards.outcome import _warm_up

try:
    _warm_up()
except Exception:  # noqa: BLE001 - an optimisation only; the forkserver must start even if it fails
    pass
