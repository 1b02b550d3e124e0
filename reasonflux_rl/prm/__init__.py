"""Process reward models: load a checkpoint of any supported kind and score (problem, completion) pairs.

Example:
```python
>>> import tempfile
>>> from reasonflux_rl.prm import load_scorer, trajectory_reward
>>> from reasonflux_rl.tiny import write_tiny_models
>>> scorer = load_scorer(write_tiny_models(tempfile.mkdtemp()).prm)
>>> [result] = scorer.score(["1+1?"], ["<think>\\n1+1=2.\\n</think>\\n\\nSo \\\\boxed{2}."])
>>> len(result.step_scores), 0 < trajectory_reward(result.step_scores, result.trajectory_score) < 1
(2, True)

```
"""

from typing import Any

from .aggregate import AGGREGATIONS, aggregate, trajectory_reward
from .inspect import KINDS, CheckpointInfo, PRMCheckpointError, inspect_checkpoint
from .results import StepScores
from .truncation import TRUNCATIONS


def __getattr__(name: str) -> Any:
    # The loader pulls in every model class; importing it lazily keeps `import reasonflux_rl.prm.aggregate` (which
    # the config does) light.
    if name == "load_scorer":
        from .loader import load_scorer

        return load_scorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "AGGREGATIONS",
    "KINDS",
    "TRUNCATIONS",
    "CheckpointInfo",
    "PRMCheckpointError",
    "StepScores",
    "aggregate",
    "inspect_checkpoint",
    "load_scorer",
    "trajectory_reward",
]
