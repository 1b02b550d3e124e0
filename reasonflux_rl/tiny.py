"""Tiny, locally built stand-ins for the real checkpoints: a tokenizer, a Qwen2 policy and a step-classifier PRM.

Every directory is written with ``save_pretrained`` in the hub layout, so the loading code that opens
DeepSeek-R1-Distill-Qwen-7B or ReasonFlux-PRM-7B opens these unchanged. Use them to dry-run a cluster set-up without
downloading 7B weights; the tests use them too. Nothing here touches the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AddedToken, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from reasonflux_rl.data import load_smoke_math
from reasonflux_rl.prm.engine.format import STEP_TAG
from reasonflux_rl.prm.kinds.step_classifier_model import ARCHITECTURE, Qwen2ForProcessRewardModel
from reasonflux_rl.prm.kinds.step_value_head_model import ARCHITECTURE as STEP_VALUE_HEAD_ARCHITECTURE

# A Qwen/R1-distill style template: the generation prompt pre-fills "<think>\n" as DeepSeek-R1-Distill's does, so
# completions carry a closing "</think>" but no opening tag.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", STEP_TAG]
# Not special, as in the R1-distill tokenizer: TRL decodes completions with skip_special_tokens=True and the
# reward must still see them.
THINK_TOKENS = ["<think>", "</think>"]


@dataclass(frozen=True)
class TinyModelPaths:
    """Where [`write_tiny_models`] put each checkpoint."""

    policy: Path
    prm: Path


def _corpus() -> list[str]:
    texts = []
    for row in load_smoke_math():
        answer = row["solution"].strip("$")
        texts.append(row["problem"])
        texts.append(f"<think>\nLet me work it out.\n\nSo the answer is {answer}.\n</think>\n\n"
                     f"The answer is $\\boxed{{{answer}}}$.")
    texts += ["Please reason step by step, and put your final answer within \\boxed{}.", "0123456789+-*/=()^.,"]
    return texts


def build_tokenizer(
    vocab_size: int = 512, texts: Iterable[str] | None = None, split_digits: bool = False
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` (default: the shipped math data), with the think tags, step tag
    and chat template; ``split_digits`` makes every digit a token of its own, as Qwen2's tokenizer does.

    Example:
    ```python
    >>> from reasonflux_rl.tiny import build_tokenizer
    >>> tok = build_tokenizer()
    >>> [len(tok.encode(t, add_special_tokens=False)) for t in ("<think>", "</think>", "<extra_0>")]
    [1, 1, 1]

    ```
    """
    backend = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # Digits one by one: a number's tokens then do not depend on its neighbours.
    backend.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]) if split_digits
        else byte_level
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus() if texts is None else texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[STEP_TAG],
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _decoder_config(tokenizer: PreTrainedTokenizerFast, **overrides) -> Qwen2Config:
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    settings.update(overrides)
    return Qwen2Config(**settings)


def write_tiny_models(out: str | Path, seed: int = 0, **prm_overrides) -> TinyModelPaths:
    """Write ``out/policy`` (Qwen2ForCausalLM) and ``out/prm`` (Qwen2ForProcessRewardModel layout) with tokenizers.

    ``prm_overrides`` change the PRM's Qwen2 config (e.g. ``num_hidden_layers=4, hidden_size=256``).

    Example:
    ```python
    >>> import json, tempfile
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> paths = write_tiny_models(tempfile.mkdtemp())
    >>> json.loads((paths.prm / "config.json").read_text())["architectures"]
    ['Qwen2ForProcessRewardModel']

    ```
    """
    root = Path(out)
    paths = TinyModelPaths(policy=root / "policy", prm=root / "prm")
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    policy = Qwen2ForCausalLM(_decoder_config(tokenizer))
    policy.generation_config.eos_token_id = tokenizer.eos_token_id
    policy.generation_config.pad_token_id = tokenizer.pad_token_id
    policy.save_pretrained(paths.policy)
    tokenizer.save_pretrained(paths.policy)

    prm_config = _decoder_config(tokenizer, **prm_overrides)
    prm_config.architectures = [ARCHITECTURE]
    prm = Qwen2ForProcessRewardModel(prm_config)
    # The default init (std 0.02) puts every step at P=0.5; a wider head gives scores that differ between steps,
    # so mixing and normalisation are exercised on real spread.
    with torch.no_grad():
        for layer in (prm.score[0], prm.score[2]):
            layer.weight.normal_(0.0, 2.0 / layer.in_features**0.5)
    prm.save_pretrained(paths.prm)
    tokenizer.save_pretrained(paths.prm)
    (root / "README.md").write_text(
        "Tiny random checkpoints written by `reasonflux-rl tiny-models` for dry runs and tests.\n"
        + json.dumps({"policy": str(paths.policy), "prm": str(paths.prm), "seed": seed}, indent=2)
        + "\n"
    )
    return paths


# Math-Shepherd's step tag and good/bad tokens, as the tiny token-logit PRM's tokenizer spells them.
TINY_TOKEN_LOGIT_TOKENS = {"step_tag": "ки", "good_token": "+", "bad_token": "-"}


def _wide_(linear: torch.nn.Linear) -> None:
    # The default init (std 0.02) puts every score near 0.5; a wider head makes scores differ between inputs, so
    # parity tests compare real spread.
    with torch.no_grad():
        linear.weight.normal_(0.0, 2.0 / linear.in_features**0.5)
        if linear.bias is not None:
            linear.bias.zero_()


def write_tiny_value_head(out: str | Path, seed: int = 0, **overrides) -> Path:
    """Write a tiny value-head PRM in the ReasonFlux-PRM-1.5B layout into ``out``: a Qwen2 causal LM saved with
    ``save_pretrained`` (tied embeddings, as Qwen2.5-1.5B), its tokenizer and ``reward_head.pt``
    (``Linear(hidden, 1)`` state dict). ``overrides`` change the Qwen2 config. Returns ``out``.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.tiny import write_tiny_value_head
    >>> from reasonflux_rl.prm.checkpoint import inspect_checkpoint
    >>> inspect_checkpoint(write_tiny_value_head(tempfile.mkdtemp())).kind
    'value_head'

    ```
    """
    root = Path(out)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    backbone = Qwen2ForCausalLM(_decoder_config(tokenizer, **overrides))
    backbone.save_pretrained(root)
    tokenizer.save_pretrained(root)
    head = torch.nn.Linear(backbone.config.hidden_size, 1)
    _wide_(head)
    with torch.no_grad():
        head.bias.fill_(0.1)
    torch.save(head.state_dict(), root / "reward_head.pt")
    return root


def write_tiny_token_logit(out: str | Path, seed: int = 0, **overrides) -> Path:
    """Write a tiny Math-Shepherd style token-logit PRM into ``out``: a Qwen2 causal LM with an untied LM head and a
    tokenizer in which the step tag ``ки`` is one token (see [`TINY_TOKEN_LOGIT_TOKENS`]). Returns ``out``.

    Example:
    ```python
    >>> import tempfile
    >>> from transformers import AutoTokenizer
    >>> from reasonflux_rl.tiny import write_tiny_token_logit
    >>> tok = AutoTokenizer.from_pretrained(write_tiny_token_logit(tempfile.mkdtemp()))
    >>> [len(tok.encode(t, add_special_tokens=False)) for t in ("ки", "+", "-")]
    [1, 1, 1]

    ```
    """
    root = Path(out)
    tokenizer = build_tokenizer()
    tokenizer.add_tokens([AddedToken(TINY_TOKEN_LOGIT_TOKENS["step_tag"], special=False, normalized=False)])
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(_decoder_config(tokenizer, tie_word_embeddings=False, **overrides))
    _wide_(model.lm_head)
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def write_tiny_step_value_head(
    out: str | Path, seed: int = 0, *, device: str = "cpu", dtype: torch.dtype = torch.float32, **overrides
) -> Path:
    """Write a tiny step value-head PRM in the Skywork-o1-Open-PRM layout into ``out``: a Qwen2 causal LM (untied LM
    head, architecture name ``Qwen2ForPrmModel``) whose ``model.safetensors`` also holds ``v_head.summary.weight``
    and ``.bias`` (a ``Linear(hidden, 1)``), and its tokenizer, whose BOS token is ``<|im_start|>`` (as in the
    released checkpoints' ``special_tokens_map.json``). ``overrides`` change the Qwen2 config (a large shape builds
    faster on a GPU: ``device``, in ``dtype``). Returns ``out``.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.tiny import write_tiny_step_value_head
    >>> from reasonflux_rl.prm.checkpoint import inspect_checkpoint, read_weight_shapes
    >>> path = write_tiny_step_value_head(tempfile.mkdtemp())
    >>> inspect_checkpoint(path).kind, read_weight_shapes(path)["v_head.summary.weight"]
    ('step_value_head', (1, 64))

    ```
    """
    from safetensors.torch import load_file, save_file

    root = Path(out)
    tokenizer = build_tokenizer()
    tokenizer.bos_token = "<|im_start|>"
    torch.manual_seed(seed)
    config = _decoder_config(tokenizer, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, **overrides)
    with torch.device(device):
        model = Qwen2ForCausalLM._from_config(config, dtype=dtype)
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    saved = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**saved, "architectures": [STEP_VALUE_HEAD_ARCHITECTURE]}, indent=2))
    head = torch.nn.Linear(config.hidden_size, 1)
    _wide_(head)
    with torch.no_grad():
        head.bias.fill_(-0.1)
    # As Skywork's (and TRL's) value-head wrapper saves it: the causal LM's tensors and the head's, under v_head.
    weights = load_file(root / "model.safetensors")
    weights.update({f"v_head.summary.{name}": tensor.to(dtype) for name, tensor in head.state_dict().items()})
    save_file(weights, root / "model.safetensors", metadata={"format": "pt"})
    return root
