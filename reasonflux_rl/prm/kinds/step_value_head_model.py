"""Native implementation of the step value-head PRM layout (Skywork-o1-Open-PRM-Qwen-2.5-1.5B/7B).

The hub checkpoints name the architecture ``Qwen2ForPrmModel`` and ship it as remote code; Skywork's inference code
(``SkyworkAI/skywork-o1-prm-inference``, ``model_utils/prm_model.py``) wraps a causal LM with TRL's value head. We
implement the same weight layout so that loading never needs ``trust_remote_code``: a Qwen2 decoder (``model.*``)
and ``v_head.summary = Linear(hidden, 1)`` (``v_head.summary.weight``, ``.bias``), read at every token. The
checkpoint's LM head (``lm_head.weight``) is not loaded: no score reads it.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model, Qwen2PreTrainedModel

ARCHITECTURE = "Qwen2ForPrmModel"


class ValueHead(nn.Module):
    """``summary = Linear(hidden, 1)``: one value per token (the dropout before it in training is inert in eval)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # The states go to the head's dtype: the head stays float32 when the decoder runs in bf16.
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


class Qwen2ForPrmModel(Qwen2PreTrainedModel):
    """Qwen2 decoder with a per-token value head; ``forward`` returns the value logit of every token ``[batch, seq]``
    (the step reward at a step token is its sigmoid).

    Example:
    ```python
    >>> import torch
    >>> from transformers import Qwen2Config
    >>> from reasonflux_rl.prm.kinds.step_value_head_model import Qwen2ForPrmModel
    >>> config = Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    ...                      num_attention_heads=2, num_key_value_heads=1)
    >>> model = Qwen2ForPrmModel(config)
    >>> model(torch.tensor([[1, 2, 3]])).shape, model.v_head.summary.weight.shape
    (torch.Size([1, 3]), torch.Size([1, 16]))

    ```
    """

    config_class = Qwen2Config
    # The causal LM's head is in the checkpoint beside the value head; a step reward never reads it.
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]
    # One row of weights: kept float32 so that a bf16 decoder's states meet a float32 head.
    _keep_in_fp32_modules_strict = ["v_head"]

    def __init__(self, config: Qwen2Config) -> None:
        super().__init__(config)
        self.model = Qwen2Model(config)
        self.v_head = ValueHead(config.hidden_size)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return self.v_head(hidden)
