"""``reasonflux-rl train`` (also ``python -m reasonflux_rl.train``): parse the recipe (``launch.py``), check the
launch before any weights load (``preflight.py``), load the data (``dataset.py``) and train with TRL's
``GRPOTrainer``. ``reference.py`` generates ``--help`` and ``docs/configuration.md`` from the dataclasses."""
