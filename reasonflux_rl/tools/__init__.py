"""The offline uses of the scorer: the ``score``, ``select`` and ``bon`` commands (``score.py``, ``selection.py``,
``bon.py``, with ``bon``'s candidate generation in ``bon_generate.py``) and what they share, with PRM training too:
the opening (``pipeline.py``: read and check the input rows, then score them into the store), reading input rows
(``rows.py``), the resumable score store (``store.py``), sampling a policy (``sampling.py``), atomic outputs
(``outputs.py``), figures (``plots.py``) and the overlap of score distributions (``overlap.py``)."""
