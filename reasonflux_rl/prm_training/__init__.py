"""The PRM-training room: labelled trajectory-response rows in, a step-classifier PRM out.

- ``fields.py``: which fields hold what (OpenThoughts-114K, TRL's stepwise layout, ours) and the checked rows;
- ``labels.py``: the labelling methods (``given``, ``mc``), ``label_command.py``: ``reasonflux-rl prm label``;
- ``encoding.py``: training rows by the scorer's own encoding, batches by a token budget;
- ``objective.py``: the trajectory-aware loss (step term + trajectory term), ``metrics.py``: held-out figures;
- ``trainer.py``: ``PRMTrainer``, transformers' ``Trainer`` with that loss;
- ``start.py``: the step-classifier layout in (from a causal LM or a PRM) and out;
- ``train_command.py``: ``reasonflux-rl prm train``; ``launch.py``: the ``prm`` command.

It imports ``prm`` (the encoding, the layout), ``rewards`` (the outcome reward), ``tools`` (input rows, the store,
the sampler) and ``train``'s launch checks; nothing imports it but the CLI and ``lab/``.
"""
