"""Checks a training launch can pass before any weights load: batch arithmetic, DeepSpeed file, vLLM server, paths.

``reasonflux-rl train --dry-run`` runs them and prints the effective settings; a real run runs them first too, so
a recipe that cannot work fails in seconds with the key to change, not after the model has loaded.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def read_accelerate_config(path: str | Path) -> dict[str, Any]:
    """``num_processes`` and the DeepSpeed file of an accelerate config YAML (``accelerate launch --config_file``).

    Example:
    ```python
    >>> import tempfile, pathlib
    >>> from reasonflux_rl.preflight import read_accelerate_config
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "acc.yaml"
    >>> _ = p.write_text("num_processes: 8\\ndeepspeed_config:\\n  deepspeed_config_file: ds.json\\n")
    >>> read_accelerate_config(p)
    {'num_processes': 8, 'deepspeed': 'ds.json'}

    ```
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"accelerate config {str(path)!r} does not exist")
    config = yaml.safe_load(file.read_text()) or {}
    deepspeed = (config.get("deepspeed_config") or {}).get("deepspeed_config_file")
    return {"num_processes": int(config.get("num_processes", 1)), "deepspeed": deepspeed}


def check_batch(training_args: Any, num_processes: int) -> dict[str, int]:
    """TRL's GRPO batch rules for ``num_processes`` ranks; returns the resulting sizes or raises naming the keys.

    Example:
    ```python
    >>> from types import SimpleNamespace
    >>> from reasonflux_rl.preflight import check_batch
    >>> args = SimpleNamespace(per_device_train_batch_size=4, gradient_accumulation_steps=6, num_generations=6,
    ...                        generation_batch_size=192, steps_per_generation=None)
    >>> check_batch(args, 8)["prompts_per_generation_batch"]
    32
    >>> try:
    ...     check_batch(args, 5)
    ... except ValueError as err:
    ...     print(err)
    generation_batch_size=192 is not divisible by per_device_train_batch_size x processes = 4 x 5 = 20

    ```
    """
    per_device = training_args.per_device_train_batch_size
    generations = training_args.num_generations
    per_step = per_device * num_processes
    if training_args.generation_batch_size is not None:
        generation_batch = training_args.generation_batch_size
        if generation_batch % per_step:
            raise ConfigError(
                f"generation_batch_size={generation_batch} is not divisible by per_device_train_batch_size x "
                f"processes = {per_device} x {num_processes} = {per_step}"
            )
    else:
        steps = training_args.steps_per_generation or training_args.gradient_accumulation_steps
        generation_batch = per_step * steps
    if generations < 2:
        raise ConfigError(f"num_generations={generations}: GRPO needs at least 2 completions per prompt")
    if generation_batch % generations:
        raise ConfigError(
            f"the generation batch of {generation_batch} completions ({per_device} per device x {num_processes} "
            f"processes x steps) is not divisible by num_generations={generations}: change "
            "per_device_train_batch_size, gradient_accumulation_steps or generation_batch_size"
        )
    if getattr(training_args, "eval_strategy", "no") != "no":
        eval_generations = getattr(training_args, "num_generations_eval", None) or generations
        eval_batch = training_args.per_device_eval_batch_size * num_processes
        if eval_batch % eval_generations:
            raise ConfigError(
                f"the eval batch of {eval_batch} completions (per_device_eval_batch_size="
                f"{training_args.per_device_eval_batch_size} x {num_processes} processes) is not divisible by "
                f"num_generations={eval_generations}"
            )
    return {
        "num_processes": num_processes,
        "completions_per_generation_batch": generation_batch,
        "prompts_per_generation_batch": generation_batch // generations,
        "completions_per_device_micro_batch": per_device,
    }


def _fill_auto(value: Any, fills: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: fills.get(k, v) if v == "auto" else _fill_auto(v, fills) for k, v in value.items()}
    return value


def check_deepspeed(path: str | Path) -> dict[str, Any]:
    """The DeepSpeed JSON exists and DeepSpeed's own parser accepts it once "auto" values are filled.

    Example:
    ```python
    >>> from reasonflux_rl.preflight import check_deepspeed
    >>> check_deepspeed("deepspeed_configs/zero2.json")["zero_stage"]
    2

    ```
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"deepspeed={str(path)!r}: the DeepSpeed config file does not exist")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"deepspeed={str(path)!r} is not valid JSON: {err}") from None
    from deepspeed.runtime.config import DeepSpeedConfig

    # The trainer fills "auto" from its arguments; any consistent values let DeepSpeed check everything else.
    fills = {"train_batch_size": 1, "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
             "gradient_clipping": 1.0, "enabled": False}
    filled = _fill_auto(raw, fills)
    zero = filled.get("zero_optimization", {})
    for key in ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"):
        if zero.get(key) == "auto":
            zero[key] = 1_000_000
    try:
        config = DeepSpeedConfig(filled)
    except Exception as err:  # DeepSpeed raises assorted types for a bad file; all mean the same to the user
        raise ConfigError(f"deepspeed={str(path)!r} is rejected by DeepSpeed: {err}") from None
    return {"path": str(file), "zero_stage": config.zero_optimization_stage,
            "offload_optimizer": bool(zero.get("offload_optimizer")), "offload_param": bool(zero.get("offload_param"))}


def check_vllm_server(training_args: Any, timeout: float = 5.0) -> str:
    """With ``use_vllm`` in server mode, the server must answer ``/health``; returns its base URL.

    Example:
    ```python
    >>> from types import SimpleNamespace
    >>> from reasonflux_rl.preflight import check_vllm_server
    >>> args = SimpleNamespace(use_vllm=True, vllm_mode="server", vllm_server_base_url="http://127.0.0.1:9")
    >>> try:
    ...     check_vllm_server(args, timeout=1)
    ... except ValueError as err:
    ...     print(str(err).split(" (")[0])
    use_vllm with vllm_mode='server': no vLLM server answers at http://127.0.0.1:9/health

    ```
    """
    url = training_args.vllm_server_base_url or (
        f"http://{training_args.vllm_server_host}:{training_args.vllm_server_port}"
    )
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return url
            problem = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as err:
        problem = str(getattr(err, "reason", err))
    raise ConfigError(
        f"use_vllm with vllm_mode='server': no vLLM server answers at {url}/health ({problem}). Start it with "
        "`trl vllm-serve --model ...` or fix vllm_server_base_url / vllm_server_host / vllm_server_port"
    )


def _policy_location(name: str) -> str:
    path = Path(name)
    if path.exists():
        return "local"
    if name.startswith(("/", ".", "~")) or name.count("/") != 1:
        raise ConfigError(f"model_name_or_path={name!r} is neither a local directory nor a hub id (owner/name)")
    return "hub"


def preflight(
    training_args: Any,
    model_args: Any,
    reward_args: Any,
    *,
    num_processes: int,
    deepspeed: str | None = None,
) -> dict[str, Any]:
    """Run every check that needs no weights; return the effective settings. Raises ConfigError on the first
    problem."""
    from .rewards import validate

    report: dict[str, Any] = {}
    prm = validate(reward_args)
    report["prm"] = None if prm is None else {"path": str(prm.path), "kind": prm.kind}
    if model_args.model_name_or_path is None:
        raise ConfigError("model_name_or_path is required (the policy checkpoint)")
    report["policy"] = {"path": model_args.model_name_or_path, "where": _policy_location(model_args.model_name_or_path),
                        "use_peft": model_args.use_peft}
    if reward_args.reward_mode == "separate":
        weights = [1.0 - reward_args.prm_beta, reward_args.prm_beta]
        if training_args.reward_weights is not None and list(training_args.reward_weights) != weights:
            raise ConfigError(
                f"reward_weights={training_args.reward_weights} contradicts reward_mode='separate' with "
                f"prm_beta={reward_args.prm_beta}, which sets them to {weights}; leave reward_weights unset"
            )
    report["batch"] = check_batch(training_args, num_processes)
    deepspeed = deepspeed or training_args.deepspeed or os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if isinstance(deepspeed, str):
        report["deepspeed"] = check_deepspeed(deepspeed)
    if training_args.use_vllm:
        report["vllm"] = {"mode": training_args.vllm_mode}
        if training_args.vllm_mode == "server":
            report["vllm"]["server"] = check_vllm_server(training_args)
    report["reward"] = {k: v for k, v in vars(reward_args).items()}
    report["optimisation"] = {
        "learning_rate": training_args.learning_rate, "kl_beta": training_args.beta,
        "max_steps": training_args.max_steps, "num_train_epochs": training_args.num_train_epochs,
        "max_completion_length": training_args.max_completion_length, "bf16": training_args.bf16,
        "report_to": training_args.report_to, "output_dir": training_args.output_dir,
    }
    return report
