"""``reasonflux-rl train``: GRPO with the mixed outcome + PRM reward, configured by a TRL-style YAML file.

Run ``reasonflux-rl train --config recipes/smoke/cpu.yaml [--key value ...]`` or
``python -m reasonflux_rl.train --config ...``. The YAML holds keys of TRL's ``GRPOConfig`` and ``ModelConfig``,
``ScriptArguments``-style dataset keys and our [`RewardArguments`]; command-line flags override it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trl import GRPOConfig, ModelConfig, ScriptArguments, TrlParser

from .config import RewardArguments
from .errors import ConfigError
from .prm.format import DEFAULT_SYSTEM_PROMPT

BUILTIN_DATASETS = {"builtin:smoke_math"}


@dataclass
class TrainScriptArguments(ScriptArguments):
    """Dataset keys of ``reasonflux-rl train``, on top of TRL's ``ScriptArguments``.

    ``dataset_name`` is a hub name, a directory written by ``save_to_disk``, a local ``.jsonl``/``.json``/``.parquet``
    file, or ``builtin:smoke_math`` (the problems shipped with the package). Rows need the problem column; a ``prompt``
    column is built from it (a user turn with ``instruction`` appended) unless the dataset already has one.
    """

    dataset_name: str | None = field(default="builtin:smoke_math", metadata={"help": "Dataset to train on."})
    instruction: str = field(
        default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "Appended to each problem when building the prompt."}
    )


def make_parser() -> TrlParser:
    """The parser ``train`` uses: ``TrlParser`` over our script arguments, ``GRPOConfig``, ``ModelConfig`` and
    [`RewardArguments`].

    Example:
    ```python
    >>> from reasonflux_rl.train import make_parser
    >>> script, grpo, model, reward = make_parser().parse_args_and_config(
    ...     ["--output_dir", "out", "--use_cpu", "--report_to", "none", "--prm_beta", "0", "--model_name_or_path", "m"])
    >>> reward.prm_beta, grpo.output_dir
    (0.0, 'out')

    ```
    """
    return TrlParser((TrainScriptArguments, GRPOConfig, ModelConfig, RewardArguments))


def load_train_dataset(script_args: TrainScriptArguments, reward_args: RewardArguments):
    """Load the training split and make sure it has a ``prompt`` and the reward's gold column."""
    from datasets import Dataset, load_dataset, load_from_disk

    name = script_args.dataset_name
    if name in BUILTIN_DATASETS:
        from .data import load_smoke_math

        dataset = Dataset.from_list(load_smoke_math())
    elif name and Path(name).is_file():
        suffix = Path(name).suffix.lstrip(".")
        dataset = load_dataset({"jsonl": "json"}.get(suffix, suffix), data_files=name, split="train")
    elif name and Path(name).is_dir() and (Path(name) / "dataset_info.json").exists():
        dataset = load_from_disk(name)
    elif name:
        dataset = load_dataset(name, name=script_args.dataset_config, split=script_args.dataset_train_split)
    else:
        raise ConfigError("dataset_name is required")
    if hasattr(dataset, "keys"):  # a DatasetDict saved to disk
        dataset = dataset[script_args.dataset_train_split]

    missing = [c for c in (reward_args.solution_column,) if c not in dataset.column_names]
    if "prompt" not in dataset.column_names and reward_args.problem_column not in dataset.column_names:
        missing.append(reward_args.problem_column)
    if missing:
        raise ConfigError(
            f"dataset {name!r} lacks column(s) {missing}; it has {dataset.column_names}. Set solution_column / "
            "problem_column to the right names."
        )
    if "prompt" not in dataset.column_names:
        suffix = f"\n{script_args.instruction}" if script_args.instruction else ""
        dataset = dataset.map(
            lambda row: {"prompt": [{"role": "user", "content": row[reward_args.problem_column] + suffix}]}
        )
    return dataset


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the config, check it, build the reward, train with ``trl.GRPOTrainer`` and save model and metrics."""
    script_args, training_args, model_args, reward_args = make_parser().parse_args_and_config(
        list(sys.argv[1:] if argv is None else argv)
    )
    from .rewards import validate

    # Everything that can be wrong with the config fails here, before any weights or data load.
    validate(reward_args)
    if model_args.model_name_or_path is None:
        raise ConfigError("model_name_or_path is required (the policy checkpoint)")
    if "wandb" in (training_args.report_to or []):
        os.environ.setdefault("WANDB_DIR", training_args.output_dir)
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)

    from trl import GRPOTrainer, get_peft_config

    from .rewards import build_reward_funcs

    dataset = load_train_dataset(script_args, reward_args)
    reward_funcs, weights = build_reward_funcs(reward_args, num_generations=training_args.num_generations)
    if weights is not None:
        if training_args.reward_weights is not None and list(training_args.reward_weights) != weights:
            raise ConfigError(
                f"reward_weights={training_args.reward_weights} contradicts reward_mode='separate' with "
                f"prm_beta={reward_args.prm_beta}, which sets them to {weights}; leave reward_weights unset"
            )
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
