"""Checks a training launch can pass before any weights load: batch arithmetic, accelerate and DeepSpeed files, vLLM
server, optional packages, paths.

``reasonflux-rl train --dry-run`` runs them and prints the effective settings; a real run runs them first too, so
a recipe that cannot work fails in seconds with the key to change, not after the model has loaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import urllib.error
import urllib.request
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from reasonflux_rl.errors import ConfigError

# accelerate (``DeepSpeedPlugin._deepspeed_config_checks``, 1.15) refuses to start when a config that names a
# ``deepspeed_config_file`` also sets any of these: the DeepSpeed file must hold them. ``launch`` counts the keys of
# the ``deepspeed_config`` section and a top-level ``mixed_precision`` (also the legacy ``fp16: true``).
DEEPSPEED_FILE_OWNS = (
    "gradient_accumulation_steps", "gradient_clipping", "zero_stage", "offload_optimizer_device",
    "offload_param_device", "offload_param_nvme_path", "offload_optimizer_nvme_path", "zero3_save_16bit_model",
    "mixed_precision",
)


def read_accelerate_config(path: str | Path) -> dict[str, Any]:
    """``num_processes`` and the DeepSpeed file of an accelerate config YAML (``accelerate launch --config_file``).

    Raises ConfigError for a config that accelerate would refuse at start: one that names a
    ``deepspeed_config_file`` and also sets a key that file owns (``mixed_precision``, ``zero_stage``, ...; mixed
    precision then comes from the file's ``"auto"`` and the recipe's ``bf16: true``).

    Example:
    ```python
    >>> import tempfile, pathlib
    >>> from reasonflux_rl.train.preflight import read_accelerate_config
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "acc.yaml"
    >>> _ = p.write_text("num_processes: 8\\ndeepspeed_config:\\n  deepspeed_config_file: ds.json\\n")
    >>> read_accelerate_config(p)
    {'num_processes': 8, 'deepspeed': 'ds.json'}
    >>> _ = p.write_text("mixed_precision: bf16\\ndeepspeed_config:\\n  deepspeed_config_file: ds.json\\n")
    >>> try:
    ...     read_accelerate_config(p)
    ... except ValueError as err:
    ...     print(str(err).split("': ")[1].split(" is set")[0])
    mixed_precision

    ```
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"accelerate config {str(path)!r} does not exist")
    config = yaml.safe_load(file.read_text()) or {}
    section = config.get("deepspeed_config") or {}
    deepspeed = section.get("deepspeed_config_file")
    if deepspeed:
        refused = [f"deepspeed_config.{key}" for key in section if key in DEEPSPEED_FILE_OWNS]
        if "mixed_precision" in config or config.get("fp16"):
            refused.append("mixed_precision" if "mixed_precision" in config else "fp16")
        if refused:
            raise ConfigError(
                f"accelerate config {str(path)!r}: {', '.join(refused)} "
                f"{'is' if len(refused) == 1 else 'are'} set beside deepspeed_config.deepspeed_config_file, which "
                f"accelerate refuses at start; remove {'it' if len(refused) == 1 else 'them'} and set the value in "
                f"the DeepSpeed file ({deepspeed}) or, for bf16, in the recipe (bf16: true with \"auto\" in the file)"
            )
    return {"num_processes": int(config.get("num_processes", 1)), "deepspeed": deepspeed}


@contextmanager
def gpu_checks_at_launch(num_processes: int) -> Iterator[list[str]]:
    """Parse a recipe on a machine without a GPU (a login node) as the GPU nodes will: what only the GPU can tell
    is listed in the yielded list, to be checked at launch, instead of failing the parse.

    transformers refuses ``bf16: true`` while parsing when it finds no GPU; inside this context it takes the GPU
    nodes' word for it. A real start never runs inside it, so it still refuses bf16 without a GPU. On a machine with
    a GPU nothing is deferred.

    Example:
    ```python
    >>> from transformers import TrainingArguments
    >>> from reasonflux_rl.train.preflight import gpu_checks_at_launch
    >>> with gpu_checks_at_launch(num_processes=8) as deferred:
    ...     args = TrainingArguments(output_dir="out", bf16=True, report_to="none")
    >>> args.bf16, deferred  # on a machine without a GPU
    (True, ['bf16 on GPU (this machine has no GPU)', '8 processes, one GPU each (this machine has none)'])

    ```
    """
    import torch
    from transformers import training_args

    deferred: list[str] = []
    if torch.cuda.is_available():
        yield deferred
        return
    probe = training_args.is_torch_bf16_gpu_available

    def bf16_on_the_gpu_nodes() -> bool:
        if "bf16 on GPU (this machine has no GPU)" not in deferred:
            deferred.insert(0, "bf16 on GPU (this machine has no GPU)")
        return True

    training_args.is_torch_bf16_gpu_available = bf16_on_the_gpu_nodes
    deferred.append(f"{num_processes} process{'es' if num_processes != 1 else ''}, one GPU each "
                    "(this machine has none)")
    try:
        yield deferred
    finally:
        training_args.is_torch_bf16_gpu_available = probe


def split_launch_options(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Split off the launch options of ``train`` and ``prm train``, which are not keys of their dataclasses:
    ``--dry-run``, ``--num_processes N`` and ``--accelerate_config FILE``.

    Example:
    ```python
    >>> from reasonflux_rl.train.preflight import split_launch_options
    >>> split_launch_options(["--config", "r.yaml", "--dry-run", "--num_processes", "8"])
    (['--config', 'r.yaml'], {'dry_run': True, 'num_processes': 8, 'accelerate_config': None})

    ```
    """
    options: dict[str, Any] = {"dry_run": False, "num_processes": None, "accelerate_config": None}
    rest: list[str] = []
    items = iter(argv)
    for arg in items:
        if arg == "--dry-run":
            options["dry_run"] = True
        elif arg in ("--num_processes", "--accelerate_config"):
            value = next(items, None)
            if value is None:
                raise ConfigError(f"{arg} needs a value")
            options[arg[2:]] = int(value) if arg == "--num_processes" else value
        else:
            rest.append(arg)
    return rest, options


def recipe_of(argv: list[str]) -> dict[str, Any]:
    """The mapping of the ``--config`` YAML (empty without one); TrlParser reads the same file again.

    Example:
    ```python
    >>> from reasonflux_rl.train.preflight import recipe_of
    >>> recipe_of(["--config", "recipes/lab/cpu.yaml"])["dataset_name"], recipe_of(["--seed", "1"])
    ('builtin:lab', {})

    ```
    """
    if "--config" not in argv[:-1]:
        return {}
    config_path = Path(argv[argv.index("--config") + 1])
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    return config if isinstance(config, dict) else {}


def deepspeed_argument(argv: list[str]) -> str | None:
    """The ``deepspeed`` file named on the command line or in the ``--config`` YAML, if it is a path (not inline
    JSON).

    Example:
    ```python
    >>> from reasonflux_rl.train.preflight import deepspeed_argument
    >>> deepspeed_argument(["--deepspeed", "deepspeed_configs/zero3.json"]), deepspeed_argument(["--deepspeed={}"])
    ('deepspeed_configs/zero3.json', None)

    ```
    """
    value = recipe_of(argv).get("deepspeed")
    for i, arg in enumerate(argv):
        if arg == "--deepspeed" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--deepspeed="):
            value = arg.split("=", 1)[1]
    return value if isinstance(value, str) and not value.lstrip().startswith("{") else None


def launch_size(options: dict[str, Any]) -> tuple[int | None, str | None]:
    """``(num_processes, DeepSpeed file)`` of the launch the options of [`split_launch_options`] describe (None
    where they do not say).

    Example:
    ```python
    >>> from reasonflux_rl.train.preflight import launch_size
    >>> launch_size({"num_processes": None, "accelerate_config": "recipes/accelerate/zero3_1node_8gpu.yaml"})
    (8, 'deepspeed_configs/zero3.json')

    ```
    """
    if not options["accelerate_config"]:
        return options["num_processes"], None
    accelerate = read_accelerate_config(options["accelerate_config"])
    return options["num_processes"] or accelerate["num_processes"], accelerate["deepspeed"]


def _per_step(completions: int, generations: int) -> int | float:
    # A prompt group may straddle two optimizer steps (TRL allows it); show the fraction rather than hide it.
    return completions // generations if completions % generations == 0 else round(completions / generations, 3)


def check_batch(training_args: Any, num_processes: int, user_set: Collection[str] | None = None) -> dict[str, Any]:
    """TRL's GRPO batch rules for ``num_processes`` ranks; returns the resulting sizes or raises naming the keys.

    ``GRPOConfig`` fills whichever of ``generation_batch_size`` / ``steps_per_generation`` is unset when it is
    parsed, for the world size it was parsed with, which need not be ``num_processes`` (one process told the size
    of a launch, a config parsed elsewhere). ``user_set`` names the keys the recipe or command line really set
    (None: every key that is not None, ``generation_batch_size`` first); the others are derived again for
    ``num_processes``, the way ``GRPOConfig.__post_init__`` (TRL 1.16) derives them on the real launch. The
    generation batch need not equal the optimizer step's batch (TRL generates every ``steps_per_generation``
    micro-steps); both are reported.

    Example:
    ```python
    >>> from types import SimpleNamespace
    >>> from reasonflux_rl.train.preflight import check_batch
    >>> args = SimpleNamespace(per_device_train_batch_size=1, gradient_accumulation_steps=24, num_generations=6,
    ...                        generation_batch_size=192, steps_per_generation=None)
    >>> sizes = check_batch(args, 8)
    >>> sizes["completions_per_optimizer_step"], sizes["prompts_per_optimizer_step"], sizes["steps_per_generation"]
    (192, 32, 24)
    >>> check_batch(args, 16)["completions_per_optimizer_step"]  # 16 ranks x 24 accumulation steps: twice the batch
    384
    >>> try:
    ...     check_batch(args, 5)
    ... except ValueError as err:
    ...     print(err)
    generation_batch_size=192 is not divisible by per_device_train_batch_size x processes = 1 x 5 = 5

    ```
    """
    per_device, generations = training_args.per_device_train_batch_size, training_args.num_generations
    generation_batch, steps = _generation_batch(training_args, num_processes, user_set)
    _check_eval_batch(training_args, num_processes, generations)
    _check_groups(generation_batch, generations, per_device, num_processes, steps)
    return _batch_sizes(training_args, num_processes, generation_batch, steps)


def _generation_batch(training_args: Any, num_processes: int, user_set: Collection[str] | None) -> tuple[int, int]:
    """``(generation_batch_size, steps_per_generation)`` as ``GRPOConfig`` derives them on ``num_processes`` ranks."""
    per_step = training_args.per_device_train_batch_size * num_processes

    def given(key: str) -> Any:
        value = getattr(training_args, key, None)
        return value if user_set is None or key in user_set else None

    generation_batch, steps = given("generation_batch_size"), given("steps_per_generation")
    # GRPOConfig.__post_init__'s cases, with num_processes in place of the parsing process's world size. It rejects
    # both keys set by the user, so both present means a parsed config: generation_batch_size is then the given one.
    if generation_batch is None:
        steps = steps or training_args.gradient_accumulation_steps
        return per_step * steps, steps
    if generation_batch % per_step:
        raise ConfigError(
            f"generation_batch_size={generation_batch} is not divisible by per_device_train_batch_size x "
            f"processes = {training_args.per_device_train_batch_size} x {num_processes} = {per_step}"
        )
    return generation_batch, generation_batch // per_step


def _check_eval_batch(training_args: Any, num_processes: int, generations: int) -> None:
    """With evaluation on, the eval batch holds whole groups."""
    if getattr(training_args, "eval_strategy", "no") == "no":
        return
    eval_generations = getattr(training_args, "num_generations_eval", None) or generations
    eval_batch = training_args.per_device_eval_batch_size * num_processes
    if eval_batch % eval_generations:
        raise ConfigError(
            f"the eval batch of {eval_batch} completions (per_device_eval_batch_size="
            f"{training_args.per_device_eval_batch_size} x {num_processes} processes) is not divisible by "
            f"num_generations={eval_generations}"
        )


def _check_groups(generation_batch: int, generations: int, per_device: int, num_processes: int, steps: int) -> None:
    """The generation batch holds whole groups of at least 2 completions."""
    if generation_batch % generations:
        raise ConfigError(
            f"the generation batch of {generation_batch} completions ({per_device} per device x {num_processes} "
            f"processes x {steps} steps_per_generation) is not divisible by num_generations={generations}: change "
            "per_device_train_batch_size, gradient_accumulation_steps, steps_per_generation or generation_batch_size"
        )
    if generations < 2:
        raise ConfigError(f"num_generations={generations}: GRPO needs at least 2 completions per prompt")


def _batch_sizes(training_args: Any, num_processes: int, generation_batch: int, steps: int) -> dict[str, Any]:
    """The sizes a dry run reports: per micro-batch, per optimizer step, per generation batch."""
    per_device, generations = training_args.per_device_train_batch_size, training_args.num_generations
    accumulation = training_args.gradient_accumulation_steps
    per_optimizer_step = per_device * num_processes * accumulation
    return {
        "num_processes": num_processes,
        "completions_per_device_micro_batch": per_device,
        "gradient_accumulation_steps": accumulation,
        "completions_per_optimizer_step": per_optimizer_step,
        "prompts_per_optimizer_step": _per_step(per_optimizer_step, generations),
        "steps_per_generation": steps,
        "completions_per_generation_batch": generation_batch,
        "prompts_per_generation_batch": generation_batch // generations,
    }


def _fill_auto(value: Any, fills: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: fills.get(k, v) if v == "auto" else _fill_auto(v, fills) for k, v in value.items()}
    return value


def check_deepspeed(path: str | Path) -> dict[str, Any]:
    """The DeepSpeed JSON exists and DeepSpeed's own parser accepts it once "auto" values are filled.

    Example:
    ```python
    >>> from reasonflux_rl.train.preflight import check_deepspeed
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
    >>> from reasonflux_rl.train.preflight import check_vllm_server
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


def missing_packages(training_args: Any, model_args: Any) -> list[dict[str, str]]:
    """Optional packages the settings need that are not installed: vLLM for ``use_vllm``, FlashAttention for
    ``attn_implementation: flash_attention_2`` (transformers also takes the hub kernel through ``kernels``).

    Only looks the modules up (no import), so it is cheap and safe on a login node without GPUs. TRL itself only
    notices a missing vLLM after the policy has loaded.

    Example:
    ```python
    >>> from types import SimpleNamespace
    >>> from reasonflux_rl.train.preflight import missing_packages
    >>> missing_packages(SimpleNamespace(use_vllm=False), SimpleNamespace(attn_implementation="sdpa"))
    []
    >>> [m["package"] for m in missing_packages(SimpleNamespace(use_vllm=True, vllm_mode="colocate"),
    ...                                          SimpleNamespace(attn_implementation=None))]  # no vllm on CPU
    ['vllm']

    ```
    """
    needs = []
    if training_args.use_vllm:
        needs.append((f"use_vllm=True (vllm_mode={training_args.vllm_mode!r})", ("vllm",), "vllm", "pip install vllm"))
    attention = getattr(model_args, "attn_implementation", None)
    if attention in ("flash_attention_2", "flash_attention_3"):
        module = "flash_attn" if attention == "flash_attention_2" else "flash_attn_interface"
        needs.append((f"attn_implementation={attention!r}", (module, "kernels"), module,
                      "pip install flash-attn --no-build-isolation, or pip install kernels for the hub kernel"))
    return [
        {"package": package, "needed_by": setting, "install": install}
        for setting, modules, package, install in needs
        if not any(importlib.util.find_spec(module) for module in modules)
    ]


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
    user_set: Collection[str] | None = None,
    require_packages: bool = True,
) -> dict[str, Any]:
    """Run every check that needs no weights; return the effective settings. Raises ConfigError on the first
    problem.

    ``user_set``: the training keys the recipe or command line set (see [`check_batch`]). A missing optional
    package ([`missing_packages`]) fails a real start (``require_packages``); a dry run, which may run on a login
    node without the GPU packages, lists it under ``"missing"`` instead.

    Example:
    ```python
    >>> from reasonflux_rl.train.launch import make_parser
    >>> from reasonflux_rl.train.preflight import preflight
    >>> _, training, model, reward = make_parser().parse_args_and_config(
    ...     ["--output_dir", "out", "--report_to", "none", "--bf16", "false", "--prm_beta", "0",
    ...      "--model_name_or_path", "owner/policy",
    ...      "--per_device_train_batch_size", "4", "--num_generations", "4"])
    >>> report = preflight(training, model, reward, num_processes=1)
    >>> report["batch"]["prompts_per_generation_batch"], report["prm_placement"], report["missing"]
    (1, 'replica', [])

    ```
    """
    from reasonflux_rl.rewards.build import validate

    report: dict[str, Any] = {}
    prm = validate(reward_args)
    report["prm"] = None if prm is None else {"path": str(prm.path), "kind": prm.kind}
    report["policy"] = _check_policy(model_args)
    _check_reward_against_grpo(training_args, reward_args)
    report["batch"] = check_batch(training_args, num_processes, user_set)
    report.update(_check_deepspeed_and_placement(training_args, reward_args, deepspeed))
    if training_args.use_vllm:
        report["vllm"] = {"mode": training_args.vllm_mode}
        if training_args.vllm_mode == "server":
            report["vllm"]["server"] = check_vllm_server(training_args)
    report["missing"] = _check_packages(training_args, model_args, require_packages)
    report["reward"] = {k: v for k, v in vars(reward_args).items()}
    report["optimisation"] = _optimisation(training_args)
    return report


def _check_policy(model_args: Any) -> dict[str, Any]:
    """The policy checkpoint: a local directory or a hub id."""
    if model_args.model_name_or_path is None:
        raise ConfigError("model_name_or_path is required (the policy checkpoint)")
    return {"path": model_args.model_name_or_path, "where": _policy_location(model_args.model_name_or_path),
            "use_peft": model_args.use_peft}


def _check_reward_against_grpo(training_args: Any, reward_args: Any) -> None:
    """``reward_mode: separate`` sets ``reward_weights`` itself; a recipe may not say otherwise. Dense credit
    (``prm_credit``) refuses the TRL settings whose meaning rests on one advantage per sequence."""
    if reward_args.credit_options().dense:
        from reasonflux_rl.rewards.dense_trainer import check_dense_credit

        check_dense_credit(training_args)
    if reward_args.reward_mode != "separate":
        return
    weights = [1.0 - reward_args.prm_beta, reward_args.prm_beta]
    if training_args.reward_weights is not None and list(training_args.reward_weights) != weights:
        raise ConfigError(
            f"reward_weights={training_args.reward_weights} contradicts reward_mode='separate' with "
            f"prm_beta={reward_args.prm_beta}, which sets them to {weights}; leave reward_weights unset"
        )


def _check_deepspeed_and_placement(training_args: Any, reward_args: Any, deepspeed: str | None) -> dict[str, Any]:
    """The DeepSpeed file (when there is one) and the PRM placement it allows."""
    from reasonflux_rl.rewards.build import check_placement

    report: dict[str, Any] = {}
    deepspeed = deepspeed or training_args.deepspeed or os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    plugin = getattr(training_args, "deepspeed_plugin", None)
    if isinstance(deepspeed, str):
        report["deepspeed"] = check_deepspeed(deepspeed)
        if plugin is not None:
            # Under `accelerate launch` (or with `deepspeed:` set) transformers has built accelerate's plugin and
            # filled the file's "auto" precision from the recipe's bf16 / fp16: what DeepSpeed will start with.
            report["deepspeed"]["bf16"] = plugin.deepspeed_config.get("bf16", {}).get("enabled")
    stage = report["deepspeed"]["zero_stage"] if "deepspeed" in report else (
        plugin.deepspeed_config.get("zero_optimization", {}).get("stage") if plugin is not None else None)
    report["prm_placement"] = check_placement(reward_args, stage)
    return report


def _check_packages(training_args: Any, model_args: Any, require_packages: bool) -> list[dict[str, str]]:
    """The optional packages the settings need and lack; a real start (``require_packages``) fails on them."""
    missing = missing_packages(training_args, model_args)
    if require_packages and missing:
        raise ConfigError("; ".join(
            f"{m['needed_by']} needs the {m['package']} package, which is not installed ({m['install']})"
            for m in missing
        ))
    return missing


def _optimisation(training_args: Any) -> dict[str, Any]:
    return {
        "learning_rate": training_args.learning_rate, "kl_beta": training_args.beta,
        "max_steps": training_args.max_steps, "num_train_epochs": training_args.num_train_epochs,
        "max_completion_length": training_args.max_completion_length, "bf16": training_args.bf16,
        "report_to": training_args.report_to, "output_dir": training_args.output_dir,
        "run_name": training_args.run_name,
    }
