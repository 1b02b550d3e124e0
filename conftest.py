"""Test set-up shared by tests/ and the docstring examples in reasonflux_rl/: offline, quiet, tiny checkpoints."""

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
if not torch.cuda.is_available():
    # Otherwise DeepSpeed prints an accelerator warning on stdout at first import, inside whichever doctest runs first.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
# transformers prints "[INFO] Running in WANDB offline mode" when this module is first imported; do it here, not
# inside a doctest whose expected output it would break.
import transformers.integrations.integration_utils  # noqa: E402,F401
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """The tiny policy and PRM written by the same code as `reasonflux-rl tiny-models`."""
    from reasonflux_rl.tiny import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("tiny"))
