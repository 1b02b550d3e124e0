"""``reasonflux-rl train``: GRPO with the mixed outcome + PRM reward, configured by a TRL-style YAML file.

Run ``reasonflux-rl train --config recipes/smoke/cpu.yaml [--key value ...]`` or
``python -m reasonflux_rl.train --config ...``. The YAML holds keys of TRL's ``GRPOConfig`` and ``ModelConfig``,
``ScriptArguments``-style dataset keys and our [`RewardArguments`]; command-line flags override it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import GRPOConfig, ModelConfig, ScriptArguments, TrlParser

from reasonflux_rl.data import load_table
from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.engine.format import DEFAULT_SYSTEM_PROMPT
from reasonflux_rl.rewards.config import RewardArguments
from reasonflux_rl.train.preflight import check_deepspeed, gpu_checks_at_launch, preflight, read_accelerate_config
from reasonflux_rl.trajectory import THINK_OPEN


@dataclass
class TrainScriptArguments(ScriptArguments):
    """Dataset keys of ``reasonflux-rl train``, on top of TRL's ``ScriptArguments``.

    ``dataset_name`` is a hub name, a directory written by ``save_to_disk``, a local ``.jsonl``/``.json``/``.parquet``
    file, or ``builtin:smoke_math`` (the problems shipped with the package). Rows need the problem column; a ``prompt``
    column is built from it (a user turn with ``instruction`` appended) unless the dataset already has one.
    """

    dataset_name: str | None = field(default="builtin:smoke_math", metadata={"help": "Dataset to train on."})
    eval_holdout_size: int = field(
        default=0,
        metadata={"help": "Rows held out of the training split (seeded) for evaluation during training; 0 for none."},
    )
    instruction: str = field(
        default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "Appended to each problem when building the prompt."}
    )


def make_parser(world_size: int | None = None) -> TrlParser:
    """The parser ``train`` uses: ``TrlParser`` over our script arguments, ``GRPOConfig``, ``ModelConfig`` and
    [`RewardArguments`].

    ``GRPOConfig`` derives its batch sizes (``generation_batch_size`` / ``steps_per_generation``) and DeepSpeed's
    ``"auto"`` batch from the world size when it is parsed; ``world_size`` parses it as a launch on that many
    processes would, for a dry run, which itself runs as one process.

    Example:
    ```python
    >>> from reasonflux_rl.train.launch import make_parser
    >>> base = ["--output_dir", "out", "--use_cpu", "--report_to", "none", "--prm_beta", "0",
    ...         "--model_name_or_path", "m"]
    >>> script, grpo, model, reward = make_parser().parse_args_and_config(base)
    >>> reward.prm_beta, grpo.output_dir
    (0.0, 'out')
    >>> batch = ["--per_device_train_batch_size", "2", "--num_generations", "4"]  # one process: 2, not a group of 4
    >>> make_parser(world_size=2).parse_args_and_config(base + batch)[1].generation_batch_size  # 2 per device x 2
    4

    ```
    """
    config = GRPOConfig
    if world_size is not None:
        config = type("GRPOConfig", (GRPOConfig,), {"world_size": property(lambda self: world_size)})
    return TrlParser((TrainScriptArguments, config, ModelConfig, RewardArguments))


def load_train_dataset(script_args: TrainScriptArguments, reward_args: RewardArguments):
    """Load the training split and make sure it has a ``prompt`` and the reward's gold column."""
    name = script_args.dataset_name
    if not name:
        raise ConfigError("dataset_name is required")
    dataset = load_table(name, config=script_args.dataset_config, split=script_args.dataset_train_split)

    missing = [c for c in (reward_args.solution_column,) if c not in dataset.column_names]
    if "prompt" not in dataset.column_names and reward_args.problem_column not in dataset.column_names:
        missing.append(reward_args.problem_column)
    if missing:
        raise ConfigError(
            f"dataset {name!r} lacks column(s) {missing}; it has {dataset.column_names}. Set solution_column / "
            "problem_column to the right names."
        )
    suffix = f"\n{script_args.instruction}" if script_args.instruction else ""
    if "prompt" not in dataset.column_names:
        dataset = dataset.map(
            lambda row: {"prompt": [{"role": "user", "content": row[reward_args.problem_column] + suffix}]}
        )
    elif isinstance(dataset[0]["prompt"], str):
        # A plain-string prompt would reach the policy without its chat template (and without the R1-distill
        # "<think>" pre-fill); make it a user turn, keeping the bare problem for the PRM.
        add_problem = reward_args.problem_column not in dataset.column_names

        def to_user_turn(row: dict) -> dict:
            out = {"prompt": [{"role": "user", "content": row["prompt"] + suffix}]}
            if add_problem:
                out[reward_args.problem_column] = row["prompt"]
            return out

        dataset = dataset.map(to_user_turn)
    return dataset


def split_holdout(dataset, size: int, seed: int):
    """``(train, eval)`` with ``size`` rows held out for evaluation (``eval`` is None for size 0)."""
    if size <= 0:
        return dataset, None
    if size >= len(dataset):
        raise ConfigError(f"eval_holdout_size={size} leaves no training rows (the dataset has {len(dataset)})")
    parts = dataset.train_test_split(test_size=size, seed=seed)
    return parts["train"], parts["test"]


def thinking_prefilled_by(policy: str) -> bool:
    """Whether the policy's chat template ends its generation prompt with ``<think>`` (DeepSeek-R1-Distill does).

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> from reasonflux_rl.train.launch import thinking_prefilled_by
    >>> thinking_prefilled_by(str(write_tiny_models(tempfile.mkdtemp()).policy))  # R1-distill style template
    True

    ```
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    if not tokenizer.chat_template:
        return False
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "1+1?"}], tokenize=False, add_generation_prompt=True
    )
    return prompt.rstrip().endswith(THINK_OPEN)


def _launch_options(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Split off the options that are ours, not the dataclasses': --dry-run, --num_processes, --accelerate_config."""
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


def _recipe(argv: list[str]) -> dict[str, Any]:
    """The mapping of the ``--config`` YAML (empty without one); TrlParser reads the same file again."""
    if "--config" not in argv[:-1]:
        return {}
    import yaml

    config_path = Path(argv[argv.index("--config") + 1])
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    return config if isinstance(config, dict) else {}


def _user_set(argv: list[str]) -> set[str]:
    """The argument names the ``--config`` YAML or the command line set, as opposed to dataclass defaults or values
    that a config's ``__post_init__`` derived (GRPOConfig fills ``generation_batch_size`` for the parsing process's
    world size)."""
    parser = make_parser()
    # With every default suppressed, argparse's namespace holds exactly the options given (any spelling it accepts).
    for action in parser._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    given, _ = parser.parse_known_args(argv)
    return set(_recipe(argv)) | set(vars(given))


def _deepspeed_argument(argv: list[str]) -> str | None:
    """The ``deepspeed`` file named on the command line or in the ``--config`` YAML, if it is a path."""
    value = _recipe(argv).get("deepspeed")
    for i, arg in enumerate(argv):
        if arg == "--deepspeed" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--deepspeed="):
            value = arg.split("=", 1)[1]
    return value if isinstance(value, str) and not value.lstrip().startswith("{") else None


def _name_after_reward(key: str, template: str | None, reward_args: RewardArguments) -> str | None:
    """``template`` with reward keys filled in, e.g. ``outputs/r1/beta{prm_beta}-{prm_normalisation}``."""
    if not template or "{" not in template:
        return template
    try:
        return template.format(**vars(reward_args))
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"{key}={template!r}: {err!r} is not a reward key") from None


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the config, check it, build the reward, train with ``trl.GRPOTrainer`` and save model and metrics.

    With ``--dry-run`` it stops after the checks and prints the effective settings as JSON; ``--num_processes N``
    and ``--accelerate_config FILE`` (its ``num_processes`` and DeepSpeed file) say what the launch will be, since
    a dry run is not itself launched on the cluster.
    """
    args, options = _launch_options(list(sys.argv[1:] if argv is None else argv))
    deepspeed_file = _deepspeed_argument(args)
    if deepspeed_file is not None:
        # transformers reads a missing file as inline JSON and fails with a JSONDecodeError while parsing.
        check_deepspeed(deepspeed_file)
    deepspeed = None
    num_processes = options["num_processes"]
    if options["accelerate_config"]:
        accelerate = read_accelerate_config(options["accelerate_config"])
        num_processes = num_processes or accelerate["num_processes"]
        deepspeed = accelerate["deepspeed"]
    # A dry run parses the recipe as the launch it describes will, not as the single process it is, and on a login
    # node without a GPU leaves what only the GPU can tell (bf16) to the launch.
    parser = make_parser(num_processes if options["dry_run"] else None)
    gpu_checks = gpu_checks_at_launch(num_processes or 1) if options["dry_run"] else contextlib.nullcontext([])
    with gpu_checks as deferred:
        try:
            script_args, training_args, model_args, reward_args = parser.parse_args_and_config(args)
        except ValueError as err:  # GRPOConfig's batch rules and the like: bad input, not a bug
            raise ConfigError(str(err)) from None
    # Sweeps name each run, and give it its own directory, after its reward settings, e.g.
    # run_name: r1d7b-beta{prm_beta}-{prm_normalisation}; output_dir: outputs/r1d7b/beta{prm_beta}-{prm_normalisation}
    training_args.run_name = _name_after_reward("run_name", training_args.run_name, reward_args)
    training_args.output_dir = _name_after_reward("output_dir", training_args.output_dir, reward_args)
    if num_processes is None:
        from accelerate import PartialState

        num_processes = PartialState().num_processes
    # Everything that can be wrong with the launch fails here, before any weights or data load.
    report = preflight(training_args, model_args, reward_args, num_processes=num_processes, deepspeed=deepspeed,
                       user_set=_user_set(args), require_packages=not options["dry_run"])
    if options["dry_run"]:
        report["checked_at_launch"] = deferred
        print(json.dumps(report, indent=2, default=str))
        return
    if "wandb" in (training_args.report_to or []):
        os.environ.setdefault("WANDB_DIR", training_args.output_dir)
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)

    from trl import GRPOTrainer, get_peft_config

    from reasonflux_rl.prm.placement.zero3 import init_deepspeed_comm, zero3_enabled
    from reasonflux_rl.rewards.build import build_reward_funcs

    if reward_args.thinking_prefilled is None:
        reward_args.thinking_prefilled = thinking_prefilled_by(model_args.model_name_or_path)

    dataset, eval_dataset = split_holdout(
        load_train_dataset(script_args, reward_args), script_args.eval_holdout_size, training_args.seed
    )
    if training_args.eval_strategy != "no" and eval_dataset is None:
        raise ConfigError(f"eval_strategy={training_args.eval_strategy!r} needs eval_holdout_size > 0")
    if zero3_enabled():
        # With use_cpu (gloo) nothing has started DeepSpeed's own communication layer yet, and zero.Init would read
        # a world size of 1 at the first model load; on GPUs accelerate has already done this.
        init_deepspeed_comm()
    reward_funcs, weights = build_reward_funcs(reward_args, num_generations=training_args.num_generations)
    if weights is not None:
        training_args.reward_weights = weights
    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}),
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        "revision": model_args.model_revision,
    }
    trainer = GRPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )
    try:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model(training_args.output_dir)
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
    finally:
        # Stops the verification worker processes.
        reward_funcs[0].close()
    trainer.end()


if __name__ == "__main__":
    main()
