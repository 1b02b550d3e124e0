"""Native implementation of the step-classifier PRM layout (ReasonFlux-PRM-7B, Qwen2.5-Math-PRM-7B/72B).

The hub checkpoints ship this class as remote code; we implement the same weight layout here so that loading never
needs ``trust_remote_code``: a Qwen2 decoder (``model.*``) and a step head
``score = Sequential(Linear(hidden, hidden), ReLU, Linear(hidden, 2))`` (``score.0.*``, ``score.2.*``).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model, Qwen2PreTrainedModel

ARCHITECTURE = "Qwen2ForProcessRewardModel"


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    """Qwen2 decoder with a 2-label step head; ``forward`` returns per-token logits ``[batch, seq, 2]``.

    Example:
    ```python
    >>> import torch
    >>> from transformers import Qwen2Config
    >>> from reasonflux_rl.prm.kinds.step_classifier_model import Qwen2ForProcessRewardModel
    >>> config = Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    ...                      num_attention_heads=2, num_key_value_heads=1)
    >>> model = Qwen2ForProcessRewardModel(config)
    >>> model(torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 2])

    ```
    """

    config_class = Qwen2Config

    def __init__(self, config: Qwen2Config) -> None:
        super().__init__(config)
        self.model = Qwen2Model(config)
        hidden = config.hidden_size
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        read_index: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Step-head logits at every token ``[batch, seq, 2]``, or ``[n, 2]`` at ``read_index`` (flat indices into
        the batch's tokens, as the scorer reads them): PRM training runs the head on the step tags only, through
        the wrapped model's forward so that DDP and DeepSpeed see the call."""
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        if read_index is not None:
            hidden = hidden.reshape(-1, hidden.shape[-1])[read_index]
        return self.score(hidden)
