"""``reasonflux-rl train``: GRPO with the mixed outcome + PRM reward, configured by a TRL-style YAML file.

Run ``reasonflux-rl train --config recipes/smoke/cpu.yaml [--key value ...]`` or
``python -m reasonflux_rl.train --config ...``. The YAML holds keys of TRL's ``GRPOConfig`` and ``ModelConfig``,
``ScriptArguments``-style dataset keys and our [`RewardArguments`]; command-line flags override it.

[`main`] reads as its steps: [`parse_launch`] (the recipe, parsed as the launch it describes) -> [`check_launch`]
(``preflight.py``: everything that can fail before weights load) -> with ``--dry-run`` the report, else [`train`]
(data -> reward -> ``trl.GRPOTrainer`` -> train and save).
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

from trl import GRPOConfig, ModelConfig, TrlParser

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.rewards.config import RewardArguments
from reasonflux_rl.train.dataset import TrainScriptArguments, load_train_dataset, split_holdout
from reasonflux_rl.train.preflight import (
    check_deepspeed,
    deepspeed_argument,
    gpu_checks_at_launch,
    launch_size,
    preflight,
    recipe_of,
    split_launch_options,
)
from reasonflux_rl.train.reference import USAGE, train_help
from reasonflux_rl.train.resume import StopOnSignal, prepare_resume, resume_point, stopped_line
from reasonflux_rl.train.verdict import plot_learning_curve, verdict
from reasonflux_rl.trajectory import THINK_OPEN

__all__ = ["Launch", "TrainScriptArguments", "check_launch", "load_train_dataset", "main", "make_parser",
           "parse_launch", "split_holdout", "thinking_prefilled_by", "train"]

# transformers 5 renamed ``gradient_checkpointing*`` to ``activation_checkpointing*`` and warns whenever only the old
# name is set, which TRL's GRPOConfig (1.16) does by default (True) and the R1 recipes do (true).
_CHECKPOINTING_ALIASES = (("gradient_checkpointing", "activation_checkpointing"),
                          ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"))


class _GRPOConfig(GRPOConfig):
    """TRL's ``GRPOConfig`` with ``gradient_checkpointing*`` read as the ``activation_checkpointing*`` they alias,
    before transformers can warn about the old names (the same settings, without a FutureWarning on every run), and
    fp32 on the CPU unless ``bf16`` is set (TRL's default would autocast a ``use_cpu`` run to bf16).

    Example:
    ```python
    >>> import warnings
    >>> from reasonflux_rl.train.launch import _GRPOConfig
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error")  # a FutureWarning would raise here
    ...     args = _GRPOConfig(output_dir="out", use_cpu=True, report_to="none", gradient_checkpointing=False)
    >>> args.activation_checkpointing, args.gradient_checkpointing, args.bf16
    (False, False, False)
    >>> _GRPOConfig(output_dir="out", use_cpu=True, report_to="none", bf16=True).bf16  # asked for: kept
    True
    >>> import pickle
    >>> type(pickle.loads(pickle.dumps(args))).__module__  # saved as TRL's class
    'trl.trainer.grpo_config'

    ```
    """

    def __post_init__(self) -> None:
        for old, new in _CHECKPOINTING_ALIASES:
            if getattr(self, new, True) is None and getattr(self, old, None) is not None:
                setattr(self, new, getattr(self, old))
        if self.use_cpu and self.bf16 is None:
            # TRL turns bf16 on whenever fp16 is off, also on the CPU, where autocast then multiplies in bf16: 50x
            # slower on a CPU without bf16 units (an AMD EPYC here: 674 ms against 12 ms for a [7808, 128] x
            # [128, 512] product). A CPU run computes in fp32 unless the recipe asks for bf16.
            self.bf16 = False
        super().__post_init__()

    def __reduce_ex__(self, protocol: int) -> tuple:
        # Pickled (the trainer's training_args.bin) and copied as TRL's own GRPOConfig, so that loading a run's
        # arguments needs TRL alone; the state is the same.
        return object.__new__, (GRPOConfig,), self.__dict__.copy()


class _TrainParser(TrlParser):
    """``TrlParser`` that refuses a ``trl grpo`` recipe with what to run instead, before its ``env:`` section is
    applied to this process."""

    def parse_args_and_config(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> tuple:
        args = list(sys.argv[1:] if args is None else args)
        recipe = recipe_of(args)
        if "reward_funcs" in recipe:
            path = args[args.index("--config") + 1]
            raise ConfigError(
                f"{path} is a `trl grpo` recipe: it names reward_funcs, and its reward keys are REASONFLUX_* variables "
                f"of its env: section. Run it with `trl grpo --config {path}`; `reasonflux-rl train` takes the reward "
                "keys themselves (prm_beta, prm_name_or_path, ...), as recipes/smoke/cpu.yaml does"
            )
        return super().parse_args_and_config(args, *rest, **kwargs)


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
    config = _GRPOConfig
    if world_size is not None:
        config = type("GRPOConfig", (_GRPOConfig,), {"world_size": property(lambda self: world_size)})
    # The short usage: argparse's own lists every flag of TRL's dataclasses, over a hundred lines before an error.
    return _TrainParser((TrainScriptArguments, config, ModelConfig, RewardArguments), prog="reasonflux-rl train",
                        usage=USAGE.removeprefix("usage: "))


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
    return set(recipe_of(argv)) | set(vars(given))


def _name_after_reward(key: str, template: str | None, reward_args: RewardArguments) -> str | None:
    """``template`` with reward keys filled in, e.g. ``outputs/r1/beta{prm_beta}-{prm_normalisation}``."""
    if not template or "{" not in template:
        return template
    try:
        return template.format(**vars(reward_args))
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"{key}={template!r}: {err!r} is not a reward key") from None


@dataclass
class Launch:
    """One ``reasonflux-rl train`` command, parsed: the four configs, the launch it describes (processes, DeepSpeed
    file), and what a dry run on this machine leaves to the launch (``deferred``).

    Example:
    ```python
    >>> from reasonflux_rl.train.launch import parse_launch
    >>> launch = parse_launch(["--output_dir", "out", "--use_cpu", "--report_to", "none", "--prm_beta", "0",
    ...                        "--model_name_or_path", "owner/policy", "--dry-run", "--num_processes", "2"])
    >>> type(launch).__name__, launch.dry_run, launch.num_processes, launch.deepspeed
    ('Launch', True, 2, None)

    ```
    """

    args: list[str]
    script_args: TrainScriptArguments
    training_args: GRPOConfig
    model_args: ModelConfig
    reward_args: RewardArguments
    num_processes: int
    deepspeed: str | None = None
    dry_run: bool = False
    deferred: list[str] = field(default_factory=list)


def _parse_configs(args: list[str], num_processes: int | None, dry_run: bool) -> tuple[tuple, list[str]]:
    """The four configs, and what only the launch's GPUs can tell (a dry run only)."""
    # A dry run parses the recipe as the launch it describes will, not as the single process it is, and on a login
    # node without a GPU leaves what only the GPU can tell (bf16) to the launch.
    parser = make_parser(num_processes if dry_run else None)
    gpu_checks = gpu_checks_at_launch(num_processes or 1) if dry_run else contextlib.nullcontext([])
    with gpu_checks as deferred:
        try:
            configs = parser.parse_args_and_config(args)
        except ValueError as err:  # GRPOConfig's batch rules and the like: bad input, not a bug
            raise ConfigError(str(err)) from None
    return configs, deferred


def parse_launch(argv: Sequence[str]) -> Launch:
    """Parse a ``reasonflux-rl train`` command line (``--config`` recipe, flags, our launch options) as the launch it
    describes; run and output directory names are filled from the reward keys. Loads nothing.

    Example:
    ```python
    >>> from reasonflux_rl.train.launch import parse_launch
    >>> launch = parse_launch(["--output_dir", "out/beta{prm_beta}", "--use_cpu", "--report_to", "none",
    ...                        "--prm_beta", "0", "--model_name_or_path", "owner/policy", "--dry-run",
    ...                        "--num_processes", "2", "--per_device_train_batch_size", "2", "--num_generations", "4"])
    >>> launch.training_args.output_dir, launch.training_args.generation_batch_size  # 2 per device x 2 processes
    ('out/beta0.0', 4)

    ```
    """
    args, options = split_launch_options(list(argv))
    deepspeed_file = deepspeed_argument(args)
    if deepspeed_file is not None:
        # transformers reads a missing file as inline JSON and fails with a JSONDecodeError while parsing.
        check_deepspeed(deepspeed_file)
    num_processes, deepspeed = launch_size(options)
    (script_args, training_args, model_args, reward_args), deferred = _parse_configs(
        args, num_processes, options["dry_run"])
    # Sweeps name each run, and give it its own directory, after its reward settings, e.g.
    # run_name: r1d7b-beta{prm_beta}-{prm_normalisation}; output_dir: outputs/r1d7b/beta{prm_beta}-{prm_normalisation}
    training_args.run_name = _name_after_reward("run_name", training_args.run_name, reward_args)
    training_args.output_dir = _name_after_reward("output_dir", training_args.output_dir, reward_args)
    if num_processes is None:
        from accelerate import PartialState

        num_processes = PartialState().num_processes
    return Launch(args, script_args, training_args, model_args, reward_args, num_processes, deepspeed,
                  options["dry_run"], deferred)


def check_launch(launch: Launch) -> dict[str, Any]:
    """Everything that can be wrong with the launch, checked before any weights or data load ([`preflight`]);
    returns the effective settings, with what is left to the launch under ``checked_at_launch``.

    Example:
    ```python
    >>> from reasonflux_rl.train.launch import check_launch, parse_launch
    >>> launch = parse_launch(["--output_dir", "out", "--use_cpu", "--report_to", "none", "--prm_beta", "0",
    ...                        "--model_name_or_path", "owner/policy", "--dry-run", "--num_processes", "2",
    ...                        "--per_device_train_batch_size", "2", "--num_generations", "4"])
    >>> report = check_launch(launch)
    >>> report["policy"]["where"], report["batch"]["completions_per_optimizer_step"], report["prm"]
    ('hub', 4, None)

    ```
    """
    report = preflight(launch.training_args, launch.model_args, launch.reward_args,
                       num_processes=launch.num_processes, deepspeed=launch.deepspeed,
                       user_set=_user_set(launch.args), require_packages=not launch.dry_run)
    point = resume_point(launch.training_args)
    report["resume"] = point.line() if point else None
    report["checked_at_launch"] = launch.deferred
    return report


def _prepare_run(launch: Launch) -> int | None:
    """What the process needs before anything loads: the W&B directory, where the run starts (``last``: its newest
    complete checkpoint), DeepSpeed told a CPU run is one, and ``thinking_prefilled`` read from the policy when the
    recipe does not say; the step it resumes at, if it does."""
    training_args, reward_args = launch.training_args, launch.reward_args
    if "wandb" in (training_args.report_to or []):
        os.environ.setdefault("WANDB_DIR", training_args.output_dir)
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
    point = prepare_resume(training_args, "train")
    if training_args.use_cpu:
        # accelerate imports DeepSpeed whenever it is installed; told the accelerator, DeepSpeed skips detecting it
        # and its "Setting accelerator to CPU" warning.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if reward_args.thinking_prefilled is None:
        reward_args.thinking_prefilled = thinking_prefilled_by(launch.model_args.model_name_or_path)
    return point.resumed_at if point else None


def _datasets(launch: Launch) -> tuple[Any, Any]:
    """``(train, eval)``: the training split with its prompts, and the evaluation rows (None without evaluation):
    ``eval_holdout_size`` rows held out of the training split, else the dataset's ``dataset_test_split``."""
    script_args, training_args = launch.script_args, launch.training_args
    dataset, eval_dataset = split_holdout(
        load_train_dataset(script_args, launch.reward_args), script_args.eval_holdout_size, training_args.seed
    )
    strategy = getattr(training_args.eval_strategy, "value", training_args.eval_strategy)  # an IntervalStrategy
    if strategy != "no" and eval_dataset is None:
        try:
            eval_dataset = load_train_dataset(script_args, launch.reward_args, split=script_args.dataset_test_split)
        except (ValueError, KeyError, FileNotFoundError) as err:
            raise ConfigError(
                f"eval_strategy={strategy!r} needs evaluation rows: dataset_test_split="
                f"{script_args.dataset_test_split!r} could not be loaded ({err}); set eval_holdout_size > 0 instead"
            ) from None
    return dataset, eval_dataset


def _reward_funcs(launch: Launch) -> list[Any]:
    """The reward functions (``reward_mode: separate`` also sets ``reward_weights``)."""
    from reasonflux_rl.prm.placement.zero3 import init_deepspeed_comm, zero3_enabled
    from reasonflux_rl.rewards.build import build_reward_funcs

    if zero3_enabled():
        # With use_cpu (gloo) nothing has started DeepSpeed's own communication layer yet, and zero.Init would read
        # a world size of 1 at the first model load; on GPUs accelerate has already done this.
        init_deepspeed_comm()
    reward_funcs, weights = build_reward_funcs(launch.reward_args,
                                               num_generations=launch.training_args.num_generations)
    if weights is not None:
        launch.training_args.reward_weights = weights
    return reward_funcs


def _trainer(launch: Launch, reward_funcs: list[Any], dataset: Any, eval_dataset: Any) -> Any:
    """``trl.GRPOTrainer`` on the policy, with the model keys of ``ModelConfig`` and its LoRA settings; with dense
    credit (``prm_credit`` other than ``sequence``) its subclass that puts step scores on the tokens."""
    from trl import GRPOTrainer, get_peft_config

    from reasonflux_rl.rewards.dense_trainer import DenseCreditGRPOTrainer

    training_args, model_args = launch.training_args, launch.model_args
    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}),
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        "revision": model_args.model_revision,
    }
    trainer_class = DenseCreditGRPOTrainer if launch.reward_args.credit_options().dense else GRPOTrainer
    return trainer_class(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )


def _train_and_save(trainer: Any, training_args: GRPOConfig, reward_funcs: list[Any],
                    resumed_at: int | None = None) -> None:
    """Train; save the model, the metrics and the trainer state to ``output_dir``; say what the run did (the
    verdict line, and ``learning_curve.png`` beside ``trainer_state.json``). A run stopped by SIGUSR1 saved a
    checkpoint instead and says how it continues."""
    stop = StopOnSignal()
    trainer.add_callback(stop)
    try:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        if stop.stopped_at is None:
            trainer.save_model(training_args.output_dir)
            trainer.log_metrics("train", result.metrics)
            trainer.save_metrics("train", result.metrics)
            trainer.save_state()
    finally:
        # Stops the verification worker processes.
        reward_funcs[0].close()
    trainer.end()
    if not trainer.is_world_process_zero():
        return
    if stop.stopped_at is not None:
        print(stopped_line("train", stop, training_args.output_dir), flush=True)
        return
    _say_what_happened(trainer.state.log_history, result.metrics["train_runtime"], training_args, resumed_at)


def _say_what_happened(log_history: list[dict[str, Any]], seconds: float, training_args: GRPOConfig,
                       resumed_at: int | None) -> None:
    figure = plot_learning_curve(log_history, Path(training_args.output_dir) / "learning_curve.png",
                                 title=training_args.run_name or "")
    print(f"reasonflux-rl train: {verdict(log_history, seconds, resumed_at)}")
    print(f"reasonflux-rl train: learning curve: {figure}" if figure else
          'reasonflux-rl train: no learning curve (pip install "reasonflux-rl[plots]" for matplotlib)')


def train(launch: Launch) -> None:
    """Run a checked launch: data, reward, ``trl.GRPOTrainer``, then train and save model, metrics and state.

    Example:
    ```python
    >>> from reasonflux_rl.train.launch import parse_launch, train
    >>> launch = parse_launch(["--output_dir", "out", "--report_to", "none", "--bf16", "false", "--prm_beta", "0",
    ...                        "--model_name_or_path", "owner/policy", "--thinking_prefilled", "true",
    ...                        "--eval_strategy", "steps"])
    >>> try:
    ...     train(launch)  # stops at the data, before any weights load
    ... except ValueError as err:
    ...     print(str(err)[:80])
    eval_strategy='steps' needs evaluation rows: dataset_test_split='test' could not

    ```
    """
    resumed_at = _prepare_run(launch)
    dataset, eval_dataset = _datasets(launch)
    reward_funcs = _reward_funcs(launch)
    trainer = _trainer(launch, reward_funcs, dataset, eval_dataset)
    _train_and_save(trainer, launch.training_args, reward_funcs, resumed_at)


def _print_help(argv: list[str]) -> bool:
    """Print the help ``argv`` asks for, if any: ours first (TRL's flags only with ``--help-all``)."""
    if "--help-all" in argv:
        # TRL's own argparse help without its usage line: one entry per flag, over a thousand lines.
        print(train_help(trl_flags=make_parser().format_help().split("\n\n", 1)[1]), end="")
    elif "-h" in argv or "--help" in argv:
        print(train_help(), end="")
    else:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the config, check it, build the reward, train with ``trl.GRPOTrainer`` and save model and metrics.

    With ``--dry-run`` it stops after the checks and prints the effective settings as JSON; ``--num_processes N``
    and ``--accelerate_config FILE`` (its ``num_processes`` and DeepSpeed file) say what the launch will be, since
    a dry run is not itself launched on the cluster. ``--help`` lists our options and keys, ``--help-all`` TRL's too.

    Example:
    ```python
    >>> from reasonflux_rl.train.launch import main
    >>> main(["--help"])  # doctest: +ELLIPSIS
    usage: reasonflux-rl train --config FILE.yaml [--dry-run] [--accelerate_config FILE | --num_processes N] ...
    ...launch options:
      --config FILE.yaml ...

    ```
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if _print_help(argv):
        return
    launch = parse_launch(argv)
    report = check_launch(launch)
    if launch.dry_run:
        print(json.dumps(report, indent=2, default=str))
        return
    train(launch)


if __name__ == "__main__":
    main()
