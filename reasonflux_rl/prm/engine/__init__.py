"""The scoring path every PRM kind shares: the model card's input format (``format.py``), what happens to inputs
longer than the context (``truncation.py``), length-sorted token-budget batches (``batching.py``), the base class
with the scoring loop and the runtime settings (``base.py``) and the results (``results.py``)."""
