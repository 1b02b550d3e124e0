"""Where a PRM's training starts and how it is written: the step-classifier layout in and out.

A run starts from a causal LM (Qwen2.5-7B-Instruct, the paper's backbone; a policy) with a fresh 2-label step head,
or from a PRM checkpoint: a step classifier continues with its own head, a value head or a step value head (their
decoders are Qwen2 causal LMs) gets a fresh step head. Either way the decoder must be Qwen2's (``model_type`` qwen2:
Qwen2, Qwen2.5 and the DeepSeek-R1-Distill-Qwen models), the decoder the layout holds. The tokenizer gets the step
tag as a special token when it has none.

The result is written as ReasonFlux-PRM-7B is: ``Qwen2ForProcessRewardModel`` (a Qwen2 decoder and ``score.0`` /
``score.2``), its tokenizer with the step tag; ``load_scorer`` and vLLM's pooling runner read it as they read the
released checkpoint. A LoRA run saves its adapter beside and writes the merged weights in the same layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.checkpoint import STEP_CLASSIFIER, PRMCheckpointError, inspect_checkpoint
from reasonflux_rl.prm.engine.format import STEP_TAG

QWEN2 = "qwen2"
ADAPTER = "adapter"


@dataclass(frozen=True)
class Start:
    """What a run starts from: ``path``, and whether its step head is the checkpoint's own (``continued``) or fresh;
    ``origin`` says it in words.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.start import Start
    >>> Start("ckpt", continued=False, origin="a causal LM: a fresh 2-label step head").continued
    False

    ```
    """

    path: str
    continued: bool
    origin: str


def read_config(path: str, key: str = "model_name_or_path") -> dict[str, Any]:
    """The ``config.json`` of a local checkpoint, or of a hub model (read through transformers, which may download
    it); a clear error when there is none.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm_training.start import read_config
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> read_config(str(write_tiny_models(tempfile.mkdtemp()).policy))["model_type"]
    'qwen2'

    ```
    """
    local = Path(path)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ConfigError(f"{key}={path!r}: no config.json in the directory")
        return json.loads((local / "config.json").read_text())
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path).to_dict()
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}={path!r} is neither a local checkpoint directory nor a loadable hub model: "
                          f"{str(err).splitlines()[0]}") from None


def inspect_start(path: str, key: str = "model_name_or_path") -> Start:
    """What ``path`` starts a PRM from, checked before any weights load: a Qwen2 decoder, and whether it is a step
    classifier already.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm_training.start import inspect_start
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> paths = write_tiny_models(tempfile.mkdtemp())
    >>> inspect_start(str(paths.prm)).continued, inspect_start(str(paths.policy)).origin
    (True, 'a causal LM: a fresh 2-label step head on its decoder')

    ```
    """
    config = read_config(path, key)
    if config.get("model_type") != QWEN2:
        raise ConfigError(
            f"{key}={path!r} is a {config.get('model_type')!r} model; the step-classifier layout (a Qwen2 decoder and "
            "a 2-label step head, as ReasonFlux-PRM-7B) takes a Qwen2 decoder: model_type 'qwen2' (Qwen2, Qwen2.5, "
            "DeepSeek-R1-Distill-Qwen)"
        )
    if not Path(path).is_dir():
        return Start(path, False, "a hub model: a fresh 2-label step head on its decoder")
    try:
        kind = inspect_checkpoint(path, key=key, kind_key=None).kind
    except PRMCheckpointError:
        return Start(path, False, "a causal LM: a fresh 2-label step head on its decoder")
    if kind == STEP_CLASSIFIER:
        return Start(path, True, "a step-classifier PRM: its own step head, trained on")
    return Start(path, False, f"a {kind} PRM: a fresh 2-label step head on its decoder")


def load_start(start: Start, *, step_tag: str | None = None, dtype: str = "float32",
               attn_implementation: str | None = None) -> tuple[Any, Any]:
    """The step classifier (``Qwen2ForProcessRewardModel``) and tokenizer a run starts from: the checkpoint's own
    head, or a fresh one initialised by transformers under the current seed; the step tag (default ``<extra_0>``)
    added to the tokenizer as a special token when it is not one token, the embeddings grown if it needs a new id.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm_training.start import inspect_start, load_start
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> model, tokenizer = load_start(inspect_start(str(write_tiny_models(tempfile.mkdtemp()).policy)))
    >>> type(model).__name__, model.score[2].out_features, model.config.architectures
    ('Qwen2ForProcessRewardModel', 2, ['Qwen2ForProcessRewardModel'])

    ```
    """
    from transformers import AutoConfig, AutoTokenizer

    from reasonflux_rl.prm.kinds.step_classifier_model import ARCHITECTURE, Qwen2ForProcessRewardModel

    tokenizer = AutoTokenizer.from_pretrained(start.path)
    if not tokenizer.chat_template:
        raise ConfigError(f"model_name_or_path={start.path!r}: its tokenizer has no chat template, which the PRM's "
                          "input is written with")
    tag = step_tag or STEP_TAG
    if len(tokenizer.encode(tag, add_special_tokens=False)) != 1:
        tokenizer.add_special_tokens({"additional_special_tokens": [tag]}, replace_extra_special_tokens=False)
    config = AutoConfig.from_pretrained(start.path)
    config.architectures = [ARCHITECTURE]
    model = Qwen2ForProcessRewardModel.from_pretrained(start.path, config=config, dtype=dtype,
                                                       attn_implementation=attn_implementation)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def save_prm(trainer: Any, start: Start, output_dir: str | Path, *, step_tag: str | None = None) -> Path:
    """Write the trained PRM to ``output_dir`` in the step-classifier layout, with its tokenizer. A LoRA run's
    adapter goes to ``output_dir/adapter`` first; the main process then merges it into the start's weights (read
    again from disk, so any ZeRO stage works) and writes the merged model."""
    output = Path(output_dir)
    if not _is_peft(trainer.model):
        trainer.save_model(str(output))
        return output
    trainer.save_model(str(output / ADAPTER))
    if trainer.is_world_process_zero():
        from peft import PeftModel

        base, tokenizer = load_start(start, step_tag=step_tag)
        merged = PeftModel.from_pretrained(base, str(output / ADAPTER)).merge_and_unload()
        merged.save_pretrained(str(output))
        tokenizer.save_pretrained(str(output))
    trainer.accelerator.wait_for_everyone()
    return output


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)

