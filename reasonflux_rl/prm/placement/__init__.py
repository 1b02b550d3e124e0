"""Where the PRM runs during training: ``resolve.py`` (the ``prm_placement`` choices), ``zero3.py`` (partitioned
with DeepSpeed ZeRO-3 beside the policy), ``remote.py`` with ``pooling_client.py`` (on vLLM servers) and
``pooling_server.py`` (a reference server that speaks their protocol, for tests and dry runs)."""
