"""Look inside a PRM checkpoint directory without loading its weights: config and safetensors headers only.

This runs before any model is loaded, so a wrong path or a checkpoint with the wrong head fails in a second with a
message that says what was found, not after minutes of loading or at the first training step.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

STEP_CLASSIFIER = "step_classifier"


class PRMCheckpointError(ConfigError):
    """A PRM path that does not hold a supported PRM checkpoint."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a PRM checkpoint directory holds.

    Attributes:
        path: the checkpoint directory.
        kind: the detected PRM kind (``"step_classifier"``).
        architectures: the ``architectures`` list of its ``config.json``.
        hidden_size: the decoder's hidden size.
        max_position_embeddings: the context length the config declares.
    """

    path: Path
    kind: str
    architectures: tuple[str, ...]
    hidden_size: int
    max_position_embeddings: int | None


def read_weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Map every tensor name in the ``*.safetensors`` files of ``path`` to its shape, reading headers only.

    Example:
    ```python
    >>> import tempfile, torch
    >>> from safetensors.torch import save_file
    >>> from reasonflux_rl.prm.inspect import read_weight_shapes
    >>> d = tempfile.mkdtemp()
    >>> save_file({"score.2.weight": torch.zeros(2, 8)}, f"{d}/model.safetensors")
    >>> read_weight_shapes(d)
    {'score.2.weight': (2, 8)}

    ```
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        with open(file, "rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_len))
        for name, meta in header.items():
            if name != "__metadata__":
                shapes[name] = tuple(meta["shape"])
    return shapes


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Identify the PRM kind of a local checkpoint directory from its config and weight names and shapes.

    Raises [`PRMCheckpointError`] naming what was found when the directory is missing, has no config or weights, or
    its weights hold no step head.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm.inspect import inspect_checkpoint
    >>> try:
    ...     inspect_checkpoint(tempfile.mkdtemp())
    ... except ValueError as err:
    ...     print(str(err).split(":")[0])
    PRM checkpoint has no config.json

    ```
    """
    root = Path(path)
    if not root.is_dir():
        raise PRMCheckpointError(
            f"prm_name_or_path={str(path)!r} is not a local directory. Download the checkpoint first "
            "(e.g. `hf download Gen-Verse/ReasonFlux-PRM-7B --local-dir ...`) or create tiny test models with "
            "`reasonflux-rl tiny-models --out DIR`."
        )
    config_file = root / "config.json"
    if not config_file.is_file():
        raise PRMCheckpointError(f"PRM checkpoint has no config.json: {root}")
    config = json.loads(config_file.read_text())
    architectures = tuple(config.get("architectures") or ())
    hidden = config.get("hidden_size")
    shapes = read_weight_shapes(root)
    if not shapes:
        raise PRMCheckpointError(f"PRM checkpoint has no *.safetensors weights: {root}")

    head_in, head_out = shapes.get("score.0.weight"), shapes.get("score.2.weight")
    if head_in is not None and head_out is not None:
        if head_out[0] != 2 or head_in != (hidden, hidden):
            raise PRMCheckpointError(
                f"PRM checkpoint {root} has a `score` head of shapes score.0.weight={head_in}, "
                f"score.2.weight={head_out}; a step classifier needs ({hidden}, {hidden}) and (2, {hidden})."
            )
        if config.get("model_type") != "qwen2":
            raise PRMCheckpointError(
                f"PRM checkpoint {root} has a step head but model_type={config.get('model_type')!r}; the native "
                "step classifier supports the Qwen2 decoder (model_type 'qwen2')."
            )
        return CheckpointInfo(root, STEP_CLASSIFIER, architectures, hidden, config.get("max_position_embeddings"))

    found = _describe_heads(shapes, config)
    raise PRMCheckpointError(
        f"PRM checkpoint {root} (architectures={list(architectures)}) is not a supported PRM: {found}. "
        "Supported: a step classifier (Qwen2 decoder + `score.0`/`score.2` 2-label step head, as in "
        "ReasonFlux-PRM-7B and Qwen2.5-Math-PRM)."
    )


def _describe_heads(shapes: dict[str, tuple[int, ...]], config: dict) -> str:
    vocab = config.get("vocab_size")
    lm_head = shapes.get("lm_head.weight")
    if lm_head is not None:
        return f"weights hold an LM head of vocabulary size ({lm_head[0]}), not a 2-label step head"
    score = {name: shape for name, shape in shapes.items() if name.startswith("score")}
    if score:
        return f"weights hold a `score` head {score}, not the 2-label step head score.0/score.2"
    if vocab and config.get("tie_word_embeddings"):
        return "weights hold only a decoder with tied input/output embeddings (an LM), no step head"
    return "weights hold no head at all (no score.* or lm_head.* tensors)"
