"""reasonflux-rl: trajectory-aware process reward models (ReasonFlux-PRM and peers) as GRPO rewards in TRL."""

__version__ = "0.1.0"
