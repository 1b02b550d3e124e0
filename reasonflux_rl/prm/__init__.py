"""The PRM room: a process reward model checkpoint in, step scores out.

- ``checkpoint.py``: what a checkpoint directory holds (its kind, read from the weights);
- ``loader.py``: [`load_scorer`], the one way to get a scorer for any kind and placement;
- ``declaration.py``: the PRM options, declared once ([`~reasonflux_rl.prm.declaration.PRMOptions`]), from which
  the training config's ``prm_*`` keys, the commands' flags and ``load_scorer``'s keywords are made;
- ``options.py``: the commands' PRM flags (and the declaration, re-exported);
- ``engine/``: the batched path every kind shares (input format, truncation, length buckets, results);
- ``kinds/``: step classifier, value head, token logit, step value head, and the steps + trajectory score combination
  (eq. 11);
- ``placement/``: where the model runs: a replica, ZeRO-3 shards beside the policy, or vLLM servers.

Example:
```python
>>> import tempfile
>>> from reasonflux_rl.prm import load_scorer
>>> from reasonflux_rl.tiny import write_tiny_models
>>> scorer = load_scorer(write_tiny_models(tempfile.mkdtemp()).prm)
>>> [result] = scorer.score(["1+1?"], ["<think>\\n1+1=2.\\n</think>\\n\\nSo \\\\boxed{2}."])
>>> len(result.step_scores), all(0 < s < 1 for s in result.step_scores)
(2, True)

```
"""

from reasonflux_rl.lazy_exports import lazy_exports
from reasonflux_rl.prm.checkpoint import KINDS, CheckpointInfo, PRMCheckpointError, inspect_checkpoint
from reasonflux_rl.prm.declaration import PRMOptions
from reasonflux_rl.prm.engine.results import StepScores
from reasonflux_rl.prm.engine.truncation import TRUNCATIONS

# The loader pulls in every model class; importing it lazily keeps the checkpoint inspection that configs run light.
__getattr__ = lazy_exports(__name__, {"load_scorer": "reasonflux_rl.prm.loader"})

__all__ = ["KINDS", "TRUNCATIONS", "CheckpointInfo", "PRMCheckpointError", "PRMOptions", "StepScores",
           "inspect_checkpoint", "load_scorer"]
