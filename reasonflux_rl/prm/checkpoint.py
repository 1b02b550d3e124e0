"""Look inside a PRM checkpoint directory without loading its model: config, safetensors headers, small head files.

This runs before any model is loaded, so a wrong path or a checkpoint with the wrong head fails in a second with a
message that says what was found, not after minutes of loading or at the first training step.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonflux_rl.errors import ConfigError

STEP_CLASSIFIER = "step_classifier"
VALUE_HEAD = "value_head"
TOKEN_LOGIT = "token_logit"
STEP_VALUE_HEAD = "step_value_head"
KINDS: tuple[str, ...] = (STEP_CLASSIFIER, VALUE_HEAD, TOKEN_LOGIT, STEP_VALUE_HEAD)
REWARD_HEAD_FILE = "reward_head.pt"
STEP_VALUE_HEAD_WEIGHT = "v_head.summary.weight"
SUPPORTED = (
    "Supported: a step classifier (Qwen2 decoder + `score.0`/`score.2` 2-label step head, as in ReasonFlux-PRM-7B "
    f"and Qwen2.5-Math-PRM), a value head (a causal LM + `{REWARD_HEAD_FILE}` holding Linear(hidden, 1), as in "
    "ReasonFlux-PRM-1.5B), a step value head (a Qwen2 causal LM + `v_head.summary` Linear(hidden, 1) in its weights, "
    "as in Skywork-o1-Open-PRM), or, named explicitly with kind='token_logit', a Math-Shepherd style causal LM."
)


class PRMCheckpointError(ConfigError):
    """A PRM path that does not hold a supported PRM checkpoint."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a PRM checkpoint directory holds.

    Attributes:
        path: the checkpoint directory.
        kind: the PRM kind, one of [`KINDS`]: ``"step_classifier"``, ``"value_head"``, ``"token_logit"`` or
            ``"step_value_head"``.
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
    """Map every tensor name in the ``*.safetensors`` files of ``path`` to its shape, reading headers only; in a
    checkpoint without safetensors, of its ``pytorch_model*.bin`` files (memory-mapped, ``weights_only=True``: the
    shapes are read, not the weights).

    Example:
    ```python
    >>> import tempfile, torch
    >>> from safetensors.torch import save_file
    >>> from reasonflux_rl.prm.checkpoint import read_weight_shapes
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
    if not shapes:
        # Some hub checkpoints ship only pickled weights (Skywork-o1-Open-PRM's main branch).
        for file in sorted(Path(path).glob("pytorch_model*.bin")):
            shapes.update(_pickled_shapes(file))
    return shapes


def _pickled_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    # torch is imported here, not with the module: the option declarations import this module (KINDS), and the reward
    # formula imports them and stays free of torch.
    import torch

    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise PRMCheckpointError(
            f"{file} cannot be read with torch.load(weights_only=True, mmap=True) (a state dict of tensors in "
            f"PyTorch's zip format is needed): {type(err).__name__}: {str(err)[:200]}"
        ) from None
    return {name: tuple(tensor.shape) for name, tensor in state.items() if isinstance(tensor, torch.Tensor)}


def read_reward_head(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Map each tensor of a ``reward_head.pt`` state dict to its shape, loading it with ``weights_only=True`` only.

    Example:
    ```python
    >>> import tempfile, torch
    >>> from reasonflux_rl.prm.checkpoint import read_reward_head
    >>> d = tempfile.mkdtemp()
    >>> torch.save(torch.nn.Linear(8, 1).state_dict(), f"{d}/reward_head.pt")
    >>> read_reward_head(f"{d}/reward_head.pt")
    {'weight': (1, 8), 'bias': (1,)}

    ```
    """
    # torch is imported here, not with the module: the option declarations import this module (KINDS), and the reward
    # formula imports them and stays free of torch.
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise PRMCheckpointError(
            f"{path} cannot be read with torch.load(weights_only=True) (only a plain state dict of tensors is "
            f"accepted): {type(err).__name__}: {str(err)[:200]}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PRMCheckpointError(f"{path} does not hold a state dict of tensors (found {type(state).__name__})")
    return {name: tuple(tensor.shape) for name, tensor in state.items()}


def inspect_checkpoint(
    path: str | Path, kind: str = "auto", *, key: str = "prm_name_or_path", kind_key: str | None = "prm_kind"
) -> CheckpointInfo:
    """Identify the PRM kind of a local checkpoint directory from its config, weight names and shapes.

    ``kind="auto"`` recognises a step classifier (``score.0``/``score.2`` step head), a step value head
    (``v_head.summary`` in the weights, beside an LM head) and a value head (``reward_head.pt`` beside the weights). A
    token-logit PRM is an ordinary causal LM, which no weight tells apart from a policy, so it must be named:
    ``kind="token_logit"`` checks that the weights hold an LM head (or tied embeddings). Raises [`PRMCheckpointError`] naming what was found when the directory is missing, has no config or
    weights, or does not hold the (detected or named) kind. Every message starts with the setting that gave the
    path, ``key=<path>`` (and ``kind_key=<kind>`` when a kind was named), so the user knows which line to fix.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm.checkpoint import inspect_checkpoint
    >>> empty = tempfile.mkdtemp()
    >>> try:
    ...     inspect_checkpoint(empty, kind="step_classifier")
    ... except ValueError as err:
    ...     print(str(err).replace(empty, "DIR"))
    prm_name_or_path='DIR' (prm_kind='step_classifier'): no config.json in the checkpoint directory
    >>> try:
    ...     inspect_checkpoint("/no/such/dir", kind="value_head", key="prm_trajectory_name_or_path", kind_key=None)
    ... except ValueError as err:
    ...     print(str(err).split(".")[0])
    prm_trajectory_name_or_path='/no/such/dir' is not a local directory

    ```
    """
    where = f"{key}={str(path)!r}" + (f" ({kind_key}={kind!r})" if kind_key and kind != "auto" else "")
    _check_kind_name(path, kind, key, kind_key)
    root = _checkpoint_dir(path, key)
    config, shapes = _read_checkpoint(root, where)
    found = _identify(where, root, kind, kind_key, config, shapes)
    architectures = tuple(config.get("architectures") or ())
    return CheckpointInfo(root, found, architectures, config.get("hidden_size"), config.get("max_position_embeddings"))


def _check_kind_name(path: str | Path, kind: str, key: str, kind_key: str | None) -> None:
    if kind != "auto" and kind not in KINDS:
        raise PRMCheckpointError(
            f"{kind_key or 'kind'}={kind!r} is not allowed (for {key}={str(path)!r}): choose one of "
            f"{['auto', *KINDS]}"
        )


def _checkpoint_dir(path: str | Path, key: str) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise PRMCheckpointError(
            f"{key}={str(path)!r} is not a local directory. Download the checkpoint first "
            "(e.g. `hf download Gen-Verse/ReasonFlux-PRM-7B --local-dir ...`) or create tiny test models with "
            "`reasonflux-rl tiny-models --out DIR`."
        )
    return root


def _read_checkpoint(root: Path, where: str) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """The checkpoint's ``config.json`` and the shapes of its weights; both must be there."""
    config_file = root / "config.json"
    if not config_file.is_file():
        raise PRMCheckpointError(f"{where}: no config.json in the checkpoint directory")
    config = json.loads(config_file.read_text())
    shapes = read_weight_shapes(root)
    if not shapes:
        raise PRMCheckpointError(f"{where}: no *.safetensors (nor pytorch_model*.bin) weights in the checkpoint "
                                 "directory")
    return config, shapes


def _identify(
    where: str, root: Path, kind: str, kind_key: str | None, config: dict, shapes: dict[str, tuple[int, ...]]
) -> str:
    """The kind the checkpoint holds: the named ``kind`` when it holds that, the detected one for ``"auto"``."""
    has_step_head = "score.0.weight" in shapes and "score.2.weight" in shapes
    has_step_value_head = STEP_VALUE_HEAD_WEIGHT in shapes
    has_reward_head = (root / REWARD_HEAD_FILE).is_file()
    if kind == STEP_CLASSIFIER or (kind == "auto" and has_step_head):
        if has_step_head:
            _check_step_head(where, shapes, config)
            return STEP_CLASSIFIER
    elif kind == STEP_VALUE_HEAD or (kind == "auto" and has_step_value_head):
        _check_step_value_head(where, has_step_value_head, shapes, config)
        return STEP_VALUE_HEAD
    elif kind == VALUE_HEAD or (kind == "auto" and has_reward_head):
        _check_value_head(where, root, has_reward_head, shapes, config)
        return VALUE_HEAD
    elif kind == TOKEN_LOGIT:
        _check_token_logit(where, has_step_head or has_step_value_head, shapes, config)
        return TOKEN_LOGIT
    raise _unsupported(where, kind, kind_key, shapes, config)


def _check_step_value_head(where: str, has_step_value_head: bool, shapes: dict[str, tuple[int, ...]],
                           config: dict) -> None:
    hidden = config.get("hidden_size")
    if not has_step_value_head:
        raise PRMCheckpointError(
            f"{where}: a step value-head PRM holds {STEP_VALUE_HEAD_WEIGHT} in its weights, and there is none "
            f"({_describe_heads(shapes, config)})."
        )
    head = {name: shape for name, shape in shapes.items() if name.startswith("v_head.")}
    if head.get(STEP_VALUE_HEAD_WEIGHT) != (1, hidden) or head.get("v_head.summary.bias", (1,)) != (1,) or len(
        set(head) - {STEP_VALUE_HEAD_WEIGHT, "v_head.summary.bias"}
    ):
        raise PRMCheckpointError(
            f"{where}: a value head {head}; a step value head is v_head.summary = Linear(hidden, 1): weight "
            f"(1, {hidden}) and bias (1,)."
        )
    if not _is_causal_lm(shapes, config):
        raise PRMCheckpointError(
            f"{where}: {STEP_VALUE_HEAD_WEIGHT} but no LM head (lm_head.weight, or tied embeddings); a step value "
            "head sits beside a causal LM, as in Skywork-o1-Open-PRM."
        )
    if config.get("model_type") != "qwen2":
        raise PRMCheckpointError(
            f"{where}: a step value head but model_type={config.get('model_type')!r}; the native step value head "
            "supports the Qwen2 decoder (model_type 'qwen2')."
        )


def _check_value_head(
    where: str, root: Path, has_reward_head: bool, shapes: dict[str, tuple[int, ...]], config: dict
) -> None:
    if not has_reward_head:
        raise PRMCheckpointError(
            f"{where}: a value-head PRM needs {REWARD_HEAD_FILE} beside its weights, and there is none "
            f"({_describe_heads(shapes, config)})."
        )
    _check_reward_head(where, root, config.get("hidden_size"))


def _check_token_logit(where: str, has_head: bool, shapes: dict[str, tuple[int, ...]], config: dict) -> None:
    if _is_causal_lm(shapes, config) and not has_head:
        return
    raise PRMCheckpointError(
        f"{where}: a token-logit PRM must be a causal LM, read at each step tag, but "
        + _describe_heads(shapes, config) + "."
    )


def _unsupported(
    where: str, kind: str, kind_key: str | None, shapes: dict[str, tuple[int, ...]], config: dict
) -> PRMCheckpointError:
    """The error for a checkpoint that holds no supported kind (or not the named one): what it holds instead."""
    found = _describe_heads(shapes, config)
    hint = ""
    if kind == "auto" and _is_causal_lm(shapes, config):
        hint = (
            f" If it is a Math-Shepherd style PRM (a causal LM read at a step tag), name it with "
            f"{kind_key or 'kind'}='token_logit' and give its step tag and good/bad tokens."
        )
    architectures = list(config.get("architectures") or ())
    return PRMCheckpointError(f"{where}: not a supported PRM (architectures={architectures}): {found}. {SUPPORTED}" + hint)


def _check_step_head(where: str, shapes: dict[str, tuple[int, ...]], config: dict) -> None:
    hidden = config.get("hidden_size")
    head_in, head_out = shapes["score.0.weight"], shapes["score.2.weight"]
    if head_out[0] != 2 or head_in != (hidden, hidden):
        raise PRMCheckpointError(
            f"{where}: a `score` head of shapes score.0.weight={head_in}, score.2.weight={head_out}; a step "
            f"classifier needs ({hidden}, {hidden}) and (2, {hidden})."
        )
    if config.get("model_type") != "qwen2":
        raise PRMCheckpointError(
            f"{where}: a step head but model_type={config.get('model_type')!r}; the native step classifier "
            "supports the Qwen2 decoder (model_type 'qwen2')."
        )


def _check_reward_head(where: str, root: Path, hidden: int | None) -> None:
    try:
        head = read_reward_head(root / REWARD_HEAD_FILE)
    except PRMCheckpointError as err:
        raise PRMCheckpointError(f"{where}: {err}") from None
    if head.get("weight") != (1, hidden) or set(head) - {"weight", "bias"} or head.get("bias", (1,)) != (1,):
        raise PRMCheckpointError(
            f"{where}: {REWARD_HEAD_FILE} holds {head}; a value head is Linear(hidden, 1): "
            f"weight (1, {hidden}) and bias (1,)."
        )


def _is_causal_lm(shapes: dict[str, tuple[int, ...]], config: dict) -> bool:
    embeddings = any(name.endswith("embed_tokens.weight") for name in shapes)
    return "lm_head.weight" in shapes or bool(config.get("tie_word_embeddings") and embeddings)


def _describe_heads(shapes: dict[str, tuple[int, ...]], config: dict) -> str:
    vocab = config.get("vocab_size")
    if "score.0.weight" in shapes and "score.2.weight" in shapes:
        return "its weights hold a 2-label step head (score.0/score.2), so it is a step classifier"
    if STEP_VALUE_HEAD_WEIGHT in shapes:
        return (f"its weights hold a per-token value head ({STEP_VALUE_HEAD_WEIGHT} "
                f"{shapes[STEP_VALUE_HEAD_WEIGHT]}), so it is a step_value_head PRM (Skywork-o1-Open-PRM layout)")
    lm_head = shapes.get("lm_head.weight")
    if lm_head is not None:
        return f"weights hold an LM head of vocabulary size ({lm_head[0]}), not a 2-label step head"
    score = {name: shape for name, shape in shapes.items() if name.startswith("score")}
    if score:
        return f"weights hold a `score` head {score}, not the 2-label step head score.0/score.2"
    if vocab and config.get("tie_word_embeddings"):
        return "weights hold only a decoder with tied input/output embeddings (an LM), no step head"
    return "weights hold no head at all (no score.* or lm_head.* tensors)"
