"""The PRM sharded with DeepSpeed ZeRO-3 beside a ZeRO-3 policy (``prm_placement: zero3``).

Each rank keeps 1/N of every PRM weight, and a forward pass all-gathers each module's weights from every rank as it
runs it. So every rank must run the same forward passes at the same time; TRL hands each rank its own slice of the
generation batch, whose length buckets differ from rank to rank. Before scoring, the ranks agree on the number of
passes (the largest, [`agree_passes`]) and a rank with fewer runs a one-token dummy pass for each one it lacks (see
[`~reasonflux_rl.prm.engine.base.PRMScorer.run_rows`]).

The model is loaded partitioned by transformers (``deepspeed.zero.Init``, [`load_partitioned`]) and wrapped with
``deepspeed.initialize`` without an optimizer, the way TRL's ``prepare_deepspeed`` wraps its reference model
([`shard`], [`inference_config`]).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from reasonflux_rl.errors import ConfigError

ZERO3_REQUIRED = (
    "prm_placement='zero3' shards the PRM with DeepSpeed ZeRO-3 beside the policy, but no ZeRO-3 DeepSpeed config is "
    "active: launch with one (deepspeed: deepspeed_configs/zero3.json, or an accelerate config naming it), or use "
    "prm_placement 'replica' or 'server'"
)
# Batch keys of the trainer's config mean nothing to a model that only runs forward passes; any consistent values do.
_BATCH = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1}


def zero3_enabled() -> bool:
    """Whether a DeepSpeed ZeRO-3 config is active (transformers then loads every model partitioned).

    Example:
    ```python
    >>> from transformers.integrations import HfDeepSpeedConfig
    >>> from reasonflux_rl.prm.placement.zero3 import zero3_enabled
    >>> zero3_enabled()
    False
    >>> ds = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    >>> zero3_enabled()
    True
    >>> del ds

    ```
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def init_deepspeed_comm() -> None:
    """Make DeepSpeed's communication layer use the process group the launcher started, if it does not yet.

    On GPUs accelerate starts the group through ``deepspeed.init_distributed``. With ``use_cpu`` it starts a gloo
    group with ``torch.distributed`` alone; ``deepspeed.zero.Init`` then reads a world size of 1 from DeepSpeed's
    uninitialised layer and fails the batch-size check (``train_batch_size != micro * accumulation * 1``) at the
    first model load. ``deepspeed.init_distributed`` adopts the existing group; without one (no torchrun or
    accelerate launch) DeepSpeed would look for MPI, so that is a ConfigError instead.

    Example:
    ```python
    >>> from reasonflux_rl.prm.placement.zero3 import init_deepspeed_comm
    >>> try:
    ...     init_deepspeed_comm()  # a plain python process: no process group
    ... except ValueError as err:
    ...     print(str(err)[:62])
    DeepSpeed ZeRO-3 needs a distributed launch (torchrun or accel

    ```
    """
    import deepspeed
    from deepspeed import comm

    if comm.is_initialized():
        return
    if not torch.distributed.is_initialized():
        raise ConfigError(
            "DeepSpeed ZeRO-3 needs a distributed launch (torchrun or accelerate launch, also for one process): no "
            "torch.distributed process group is initialised"
        )
    deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())


def _drop_auto(config: dict[str, Any]) -> dict[str, Any]:
    return {k: _drop_auto(v) if isinstance(v, dict) else v for k, v in config.items() if v != "auto"}


def inference_config(hidden_size: int | None, dtype: torch.dtype) -> dict[str, Any]:
    """The active ZeRO-3 config made into one for a model that only runs forward passes in ``dtype``.

    As TRL's ``prepare_deepspeed`` does for its reference model: no optimizer, scheduler or optimizer offload (the
    parameter offload stays); the bucket sizes left ``"auto"`` get the values transformers gives the policy for
    ``hidden_size``; precision follows ``dtype`` (the PRM's, not the policy's); other ``"auto"`` values that the
    trainer has not filled take DeepSpeed's defaults.

    Example:
    ```python
    >>> import torch
    >>> from transformers.integrations import HfDeepSpeedConfig
    >>> from reasonflux_rl.prm.placement.zero3 import inference_config
    >>> ds = HfDeepSpeedConfig({"zero_optimization": {"stage": 3, "reduce_bucket_size": "auto",
    ...                         "offload_optimizer": {"device": "cpu"}}, "optimizer": {"type": "AdamW"},
    ...                         "bf16": {"enabled": "auto"}, "train_batch_size": "auto"})
    >>> config = inference_config(64, torch.float32)
    >>> config["zero_optimization"]["reduce_bucket_size"], "optimizer" in config, config["bf16"]
    (4096, False, {'enabled': False})
    >>> del ds

    ```
    """
    from transformers.integrations.deepspeed import deepspeed_config

    if not zero3_enabled():
        raise ConfigError(ZERO3_REQUIRED)
    config = copy.deepcopy(deepspeed_config())
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    config.pop("train_batch_size", None)
    config.update(_BATCH)
    zero = config["zero_optimization"]
    zero.pop("offload_optimizer", None)
    if hidden_size:
        for key, value in (
            ("reduce_bucket_size", hidden_size * hidden_size),
            ("stage3_prefetch_bucket_size", int(0.9 * hidden_size * hidden_size)),
            ("stage3_param_persistence_threshold", 10 * hidden_size),
        ):
            if zero.get(key, "auto") == "auto":
                zero[key] = value
    config["bf16"] = {"enabled": dtype == torch.bfloat16}
    config["fp16"] = {"enabled": dtype == torch.float16}
    return _drop_auto(config)


@contextmanager
def active_config(config: dict[str, Any]) -> Iterator[None]:
    """Make ``config`` the DeepSpeed config transformers loads models with, then restore the trainer's.

    ``deepspeed.zero.Init`` creates the weights in the config's precision; loading under the PRM's own
    [`inference_config`] keeps the PRM in its ``dtype`` whatever the policy trains in.

    Example:
    ```python
    >>> from reasonflux_rl.prm.placement.zero3 import active_config, zero3_enabled
    >>> with active_config({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1}):
    ...     zero3_enabled()
    True
    >>> zero3_enabled()
    False

    ```
    """
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations import deepspeed as hf_deepspeed

    reference = hf_deepspeed._hf_deepspeed_config_weak_ref
    previous = None if reference is None else reference()
    loading = HfDeepSpeedConfig(config)  # registers itself (weakly) as the active config
    try:
        yield
    finally:
        del loading
        if previous is None:
            hf_deepspeed.unset_hf_deepspeed_config()
        else:
            hf_deepspeed.set_hf_deepspeed_config(previous)


def load_partitioned(
    model_class: type[PreTrainedModel], path: str | Path, dtype: torch.dtype, attn_implementation: str | None
) -> PreTrainedModel:
    """``model_class.from_pretrained(path)`` with every weight partitioned across the ranks (ZeRO-3), in ``dtype``.

    Raises ConfigError when no ZeRO-3 config is active or the process was not launched distributed.

    Example:
    ```python
    >>> import torch
    >>> from reasonflux_rl.prm.kinds.step_classifier_model import Qwen2ForProcessRewardModel
    >>> from reasonflux_rl.prm.placement.zero3 import load_partitioned
    >>> try:
    ...     load_partitioned(Qwen2ForProcessRewardModel, "/checkpoints/prm", torch.float32, None)  # no ZeRO-3 launch
    ... except ValueError as err:
    ...     print(str(err)[:69])
    prm_placement='zero3' shards the PRM with DeepSpeed ZeRO-3 beside the

    ```
    """
    if not zero3_enabled():
        raise ConfigError(ZERO3_REQUIRED)
    init_deepspeed_comm()
    hidden_size = getattr(AutoConfig.from_pretrained(path), "hidden_size", None)
    with active_config(inference_config(hidden_size, dtype)):
        return model_class.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)


def is_partitioned(parameter: torch.Tensor) -> bool:
    """Whether ``parameter`` is a ZeRO-3 partitioned parameter (this rank holds only a shard of it).

    Example:
    ```python
    >>> import torch
    >>> from reasonflux_rl.prm.placement.zero3 import is_partitioned
    >>> is_partitioned(torch.nn.Parameter(torch.zeros(2)))
    False

    ```
    """
    return hasattr(parameter, "ds_id")


def gathered(parameters: Iterable[torch.Tensor | None]) -> Any:
    """A context in which the partitioned ones of ``parameters`` are whole (collective: every rank must enter it);
    a no-op for ordinary tensors.

    Example:
    ```python
    >>> import torch
    >>> from reasonflux_rl.prm.placement.zero3 import gathered
    >>> weight = torch.nn.Parameter(torch.ones(2, 3))
    >>> with gathered([weight, None]):
    ...     weight.shape
    torch.Size([2, 3])

    ```
    """
    partitioned = [p for p in parameters if p is not None and is_partitioned(p)]
    if not partitioned:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned)


class ReadForward(nn.Module):
    """The root module DeepSpeed wraps: holds the PRM's modules and runs ``read`` (backbone, then head at the read
    positions) as one forward, so each pass starts and ends at the engine, as ZeRO-3's parameter fetching expects.

    Example:
    ```python
    >>> import torch
    >>> from reasonflux_rl.prm.placement.zero3 import ReadForward
    >>> linear = torch.nn.Linear(2, 1)
    >>> ReadForward([linear], lambda x: linear(x).squeeze(-1))(torch.zeros(3, 2)).shape
    torch.Size([3])

    ```
    """

    def __init__(self, modules: Sequence[nn.Module], read: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.held = nn.ModuleList(modules)
        self.read = read

    def forward(self, *tensors: torch.Tensor | None) -> torch.Tensor:
        return self.read(*tensors)


def shard(modules: Sequence[nn.Module], read: Callable[..., torch.Tensor], dtype: torch.dtype) -> nn.Module:
    """A DeepSpeed ZeRO-3 inference engine whose forward runs ``read`` over ``modules`` (loaded partitioned).

    Parameters of ``modules`` that are not partitioned yet are partitioned by DeepSpeed here. Every rank must call
    it (tests/test_zero3.py runs it on two processes); without an active ZeRO-3 config it is a ConfigError.

    Example:
    ```python
    >>> import torch
    >>> from reasonflux_rl.prm.placement.zero3 import shard
    >>> linear = torch.nn.Linear(2, 1)
    >>> try:
    ...     shard([linear], linear, torch.float32)
    ... except ValueError as err:
    ...     print(str(err)[:69])
    prm_placement='zero3' shards the PRM with DeepSpeed ZeRO-3 beside the

    ```
    """
    import deepspeed

    hidden_size = next((getattr(getattr(m, "config", None), "hidden_size", None) for m in modules), None)
    engine, *_ = deepspeed.initialize(model=ReadForward(modules, read), config=inference_config(hidden_size, dtype))
    engine.eval()
    return engine


def agree_passes(count: int, device: torch.device) -> int:
    """The largest ``count`` over all ranks: the forward passes every rank runs (collective).

    Example:
    ```python
    >>> import torch
    >>> from reasonflux_rl.prm.placement.zero3 import agree_passes
    >>> agree_passes(3, torch.device("cpu"))  # one process
    3

    ```
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return count
    total = torch.tensor([count], dtype=torch.long, device=device)
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.MAX)
    return int(total.item())
