"""The offline uses of the scorer: the ``score``, ``select`` and ``bon`` commands (``score.py``, ``selection.py``,
``bon.py``) and what only they use: reading input rows (``rows.py``), the resumable score store (``store.py``), the
scoring loop they share (``pipeline.py``), atomic outputs (``outputs.py``), figures (``plots.py``) and the overlap of
score distributions (``overlap.py``)."""
