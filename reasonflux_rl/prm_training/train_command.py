"""``reasonflux-rl prm train``: a step-classifier PRM trained on labelled rows with the trajectory-aware objective.

``reasonflux-rl prm train --config FILE.yaml [--key value ...]`` (``accelerate launch -m reasonflux_rl.prm_training
train ...`` on a cluster). The YAML holds the keys of [`PRMTrainArguments`] (data, objective, the PRM's input),
transformers' ``TrainingArguments`` (optimiser, schedule, ``deepspeed``, ``eval_strategy``, ``report_to``...) and
TRL's ``ModelConfig`` (``model_name_or_path``, ``dtype``, LoRA via ``use_peft``). ``--dry-run`` checks the launch
(model, data, DeepSpeed and accelerate files) without loading weights, as ``train --dry-run`` does.

[`main`] reads as its steps: [`parse_launch`] -> [`check_launch`] (the start checkpoint, every data row, the launch
files: a bad row or key fails in seconds) -> with ``--dry-run`` the report, else [`train_prm`] (encode the rows with
the scorer's own encoding -> ``PRMTrainer`` -> the PRM written in the step-classifier layout, its held-out figures,
``prm_training.png`` and ``prm_training.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.declaration import CONFIG, OPTIONS, check_declared, config_fields
from reasonflux_rl.prm_training.fields import STEP_TARGETS, TRAJECTORY_TARGET, LabelledPair, read_labelled
from reasonflux_rl.prm_training.objective import LOSSES, TRAJECTORY_READS, Objective
from reasonflux_rl.prm_training.start import Start, inspect_start
from reasonflux_rl.tools.rows import BAD_ROW_POLICIES
from reasonflux_rl.train.resume import StopOnSignal, prepare_resume, resume_point, stopped_line

# What the trained PRM reads, declared once with the PRM options: the same keys (and meaning) as train's prm_* keys.
ENCODING_OPTIONS = ("step_tag", "parts", "thinking_prefilled", "max_length", "truncation", "window_overlap",
                    "system_prompt")
_ENCODING_KEYS = {OPTIONS[name].config.name: name for name in ENCODING_OPTIONS}
DEFAULT_BATCH_TOKENS = 16384


@dataclass
class _DataAndObjective:
    """The labelled rows and the loss."""

    dataset_name: str | None = field(default=None, metadata={"help": "Labelled rows (prm label's output): a .jsonl/"
                                     ".json/.parquet/.csv file, a save_to_disk directory or a hub dataset."})
    dataset_config: str | None = field(default=None, metadata={"help": "Config name of a hub dataset."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split of the training rows."})
    eval_dataset_name: str | None = field(default=None, metadata={"help": "Held-out labelled rows evaluated during "
                                          "training (default: dataset_name's eval_split, if set)."})
    eval_split: str | None = field(default=None, metadata={"help": "Split of the held-out rows."})
    eval_holdout_size: int = field(default=0, metadata={"help": "Rows held out of the training rows (seeded) for "
                                   "evaluation, instead of eval_dataset_name."})
    problem_field: str | None = field(default=None, metadata={"help": "The problem (default: problem, prompt or "
                                      "question)."})
    completion_field: str | None = field(default=None, metadata={"help": "One text, split at its last </think>."})
    thinking_field: str | None = field(default=None, metadata={"help": "The thinking, with response_field."})
    response_field: str | None = field(default=None, metadata={"help": "The response, with thinking_field."})
    steps_field: str | None = field(default=None, metadata={"help": "A list of steps, joined into one response."})
    step_targets_field: str = field(default=STEP_TARGETS, metadata={"help": "One target in [0, 1] per step (null: "
                                    "none)."})
    trajectory_target_field: str = field(default=TRAJECTORY_TARGET, metadata={"help": "The trajectory target in "
                                         "[0, 1] (null: none)."})
    on_bad_row: str = field(default="error", metadata={"help": f"One of {BAD_ROW_POLICIES}: a bad row stops the run "
                            "before training, or is left out and named."})
    loss: str = field(default="mse", metadata={"help": f"L of the objective, one of {LOSSES}: squared error of the "
                      "probability (the paper's MSE) or binary cross-entropy (Math-Shepherd, Qwen)."})
    lambda_step: float = field(default=1.0, metadata={"help": "Weight of the mean step loss (not public: 1)."})
    lambda_final: float = field(default=1.0, metadata={"help": "Weight of the trajectory loss (not public: 1)."})
    trajectory_read: str = field(default="last_step", metadata={"help": f"Where the trajectory score R(x, y) is read, "
                                 f"one of {TRAJECTORY_READS}: the step head at the last step tag, or the mean step "
                                 "score (not public)."})
    batch_tokens: int = field(default=DEFAULT_BATCH_TOKENS, metadata={"help": "Padded tokens of one batch on one "
                              "device: rows of similar length are batched up to it (per_device_train_batch_size is "
                              "not used)."})
    pool_batches: int = field(default=16, metadata={"help": "Batches' worth of shuffled rows sorted by length "
                              "together each epoch: more pads less, fewer mixes lengths more (1: nearly random "
                              "batches)."})


_Base = dataclasses.make_dataclass(
    "_Base", [f for f in config_fields() if f[0] in _ENCODING_KEYS], bases=(_DataAndObjective,),
    namespace={"__module__": __name__})


@dataclass
class PRMTrainArguments(_Base):
    """The keys of ``prm train`` besides ``TrainingArguments`` and ``ModelConfig``: the labelled rows, the objective
    and what the PRM reads (``prm_parts``, ``prm_system_prompt``, ``thinking_prefilled``, ``prm_max_length``,
    ``prm_truncation``, ``prm_window_overlap``, ``prm_step_tag``: the keys ``train`` scores the PRM with, so score
    it with the same values).

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.train_command import PRMTrainArguments
    >>> args = PRMTrainArguments(dataset_name="labelled.jsonl", prm_system_prompt="")
    >>> args.objective().loss, args.scorer_options()["system_prompt"], args.scorer_options()["parts"]
    ('mse', None, 'both')
    >>> try:
    ...     PRMTrainArguments(dataset_name="labelled.jsonl", loss="l1")
    ... except ValueError as err:
    ...     print(err)
    loss='l1' is not one of ('mse', 'bce')

    ```
    """

    def __post_init__(self) -> None:
        if not self.dataset_name:
            raise ConfigError("dataset_name is required: the labelled rows (prm label's output)")
        if self.on_bad_row not in BAD_ROW_POLICIES:
            raise ConfigError(f"on_bad_row={self.on_bad_row!r} is not allowed: choose one of {list(BAD_ROW_POLICIES)}")
        if self.batch_tokens < 1 or self.pool_batches < 1 or self.eval_holdout_size < 0:
            raise ConfigError(f"batch_tokens={self.batch_tokens} and pool_batches={self.pool_batches} must be positive "
                              f"and eval_holdout_size={self.eval_holdout_size} >= 0")
        try:
            self.objective()
        except ValueError as err:
            raise ConfigError(str(err)) from None
        check_declared({name: getattr(self, key) for key, name in _ENCODING_KEYS.items()}, CONFIG)
        self.thinking_prefilled = bool(self.thinking_prefilled)
        if self.prm_system_prompt == "":
            self.prm_system_prompt = None

    def objective(self) -> Objective:
        """The loss these keys describe."""
        return Objective(self.loss, self.lambda_step, self.lambda_final, self.trajectory_read)

    def scorer_options(self) -> dict[str, Any]:
        """The keywords of the ``StepScorer`` whose encoding makes the training rows."""
        return {name: getattr(self, key) for key, name in _ENCODING_KEYS.items()}

    def named_fields(self) -> dict[str, str | None]:
        """The fields named by the keys, for [`~reasonflux_rl.prm_training.fields.detect_fields`]."""
        return {"problem": self.problem_field, "completion": self.completion_field, "thinking": self.thinking_field,
                "response": self.response_field, "steps": self.steps_field, "step_targets": self.step_targets_field,
                "trajectory_target": self.trajectory_target_field}


def make_parser(world_size: int | None = None) -> Any:
    """``TrlParser`` over [`PRMTrainArguments`], transformers' ``TrainingArguments`` and TRL's ``ModelConfig``;
    ``world_size`` parses as a launch on that many processes would (a dry run).

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.train_command import make_parser
    >>> script, training, model = make_parser().parse_args_and_config(
    ...     ["--dataset_name", "l.jsonl", "--model_name_or_path", "m", "--output_dir", "out", "--loss", "bce"])
    >>> script.loss, training.output_dir, model.model_name_or_path
    ('bce', 'out', 'm')

    ```
    """
    from transformers import TrainingArguments
    from trl import ModelConfig, TrlParser

    config = TrainingArguments
    if world_size is not None:
        config = type("TrainingArguments", (TrainingArguments,), {"world_size": property(lambda self: world_size)})
    return TrlParser((PRMTrainArguments, config, ModelConfig), prog="reasonflux-rl prm train")


@dataclass
class Launch:
    """One ``prm train`` command, parsed: its three configs, the launch it describes and what a dry run here leaves
    to the launch (``deferred``)."""

    args: PRMTrainArguments
    training_args: Any
    model_args: Any
    num_processes: int
    deepspeed: str | None = None
    dry_run: bool = False
    deferred: list[str] = field(default_factory=list)


def parse_launch(argv: Sequence[str]) -> Launch:
    """Parse a ``prm train`` command line (``--config`` recipe, flags, ``--dry-run``, ``--num_processes``,
    ``--accelerate_config``) as the launch it describes; loads nothing.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.train_command import parse_launch
    >>> launch = parse_launch(["--dataset_name", "l.jsonl", "--model_name_or_path", "m", "--output_dir", "out",
    ...                        "--use_cpu", "true", "--dry-run", "--num_processes", "2"])
    >>> launch.dry_run, launch.num_processes, launch.args.batch_tokens
    (True, 2, 16384)

    ```
    """
    import contextlib

    from reasonflux_rl.train.preflight import (
        check_deepspeed,
        deepspeed_argument,
        gpu_checks_at_launch,
        launch_size,
        split_launch_options,
    )

    rest, options = split_launch_options(list(argv))
    if deepspeed_argument(rest) is not None:
        check_deepspeed(deepspeed_argument(rest))
    num_processes, deepspeed = launch_size(options)
    checks = gpu_checks_at_launch(num_processes or 1) if options["dry_run"] else contextlib.nullcontext([])
    with checks as deferred:
        try:
            args, training_args, model_args = make_parser(num_processes if options["dry_run"] else None
                                                          ).parse_args_and_config(rest)
        except ValueError as err:  # TrainingArguments' own rules: bad input, not a bug
            raise ConfigError(str(err)) from None
    if num_processes is None:
        from accelerate import PartialState

        num_processes = PartialState().num_processes
    return Launch(args, training_args, model_args, num_processes, deepspeed, options["dry_run"], list(deferred))


@dataclass
class Data:
    """The checked rows: training and held-out pairs, the bad rows left out of each, and where they came from."""

    train: list[LabelledPair]
    eval: list[LabelledPair]
    bad: dict[str, int]
    sources: dict[str, str]


def _read(args: PRMTrainArguments, name: str, split: str, what: str) -> tuple[list[LabelledPair], int]:
    source = argparse.Namespace(input=name, dataset_config=args.dataset_config, split=split,
                                on_bad_row=args.on_bad_row)
    rows, _ = read_labelled(source, args.named_fields(), "prm train", parts=args.prm_parts,
                            thinking_prefilled=args.thinking_prefilled, when=f"before training ({what} rows)")
    return rows.items, len(rows.bad)


def read_data(args: PRMTrainArguments, seed: int) -> Data:
    """The training rows and the held-out ones (``eval_holdout_size`` rows of the training rows, seeded, or the rows
    of ``eval_dataset_name`` / ``eval_split``), every row checked.

    Example:
    ```python
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.prm_training.train_command import PRMTrainArguments, read_data
    >>> path = Path(tempfile.mkdtemp()) / "l.jsonl"
    >>> row = {"problem": "1+1?", "completion": "2", "step_targets": [1.0], "trajectory_target": 1.0}
    >>> _ = path.write_text("\\n".join(json.dumps(row) for _ in range(5)))
    >>> data = read_data(PRMTrainArguments(dataset_name=str(path), eval_holdout_size=2), seed=0)
    >>> len(data.train), len(data.eval), data.bad
    (3, 2, {'train': 0})

    ```
    """
    train, bad_train = _read(args, args.dataset_name, args.dataset_train_split, "training")
    data = Data(train, [], {"train": bad_train}, {"train": f"{args.dataset_name} ({args.dataset_train_split})"})
    if args.eval_holdout_size:
        if args.eval_holdout_size >= len(train):
            raise ConfigError(f"eval_holdout_size={args.eval_holdout_size} leaves no training rows of {len(train)}")
        held = set(random.Random(seed).sample(range(len(train)), args.eval_holdout_size))
        data.train = [p for k, p in enumerate(train) if k not in held]
        data.eval = [p for k, p in enumerate(train) if k in held]
        data.sources["eval"] = f"{args.eval_holdout_size} rows held out of the training rows"
    elif args.eval_dataset_name or args.eval_split:
        name, split = args.eval_dataset_name or args.dataset_name, args.eval_split or "train"
        data.eval, data.bad["eval"] = _read(args, name, split, "held-out")
        data.sources["eval"] = f"{name} ({split})"
    return data


def _data_report(data: Data) -> dict[str, Any]:
    def part(pairs: list[LabelledPair]) -> dict[str, int]:
        targets = [t for p in pairs for t in (p.step_targets or ()) if t is not None]
        return {"rows": len(pairs), "steps": sum(len(p.steps) for p in pairs), "step_targets": len(targets),
                "trajectory_targets": sum(p.trajectory_target is not None for p in pairs)}

    return {name: {"source": data.sources[name], **part(pairs), "bad_rows": data.bad.get(name, 0)}
            for name, pairs in (("train", data.train), ("eval", data.eval)) if name in data.sources}


def _check_start(launch: Launch) -> dict[str, Any]:
    path = launch.model_args.model_name_or_path
    if not path:
        raise ConfigError("model_name_or_path is required: a causal LM (e.g. Qwen2.5-7B-Instruct) or a PRM checkpoint")
    try:
        start = inspect_start(path)
    except ConfigError:
        if not launch.dry_run or Path(path).exists():
            raise
        launch.deferred.append(f"model_name_or_path {path!r} (a hub model, not readable from here)")
        return {"path": path, "origin": "checked at launch"}
    return dataclasses.asdict(start)


def check_launch(launch: Launch) -> tuple[dict[str, Any], Data | None]:
    """Everything that can be wrong before weights load: the start checkpoint ([`inspect_start`]), every data row
    ([`read_data`]), the DeepSpeed and accelerate files; the effective settings, and the data. A dry run leaves
    data that is not there yet (written by ``prm label`` on the cluster) to the launch.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.prm_training.train_command import check_launch, parse_launch
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> policy = str(write_tiny_models(tempfile.mkdtemp()).policy)
    >>> launch = parse_launch(["--dataset_name", "outputs/not-yet.jsonl", "--model_name_or_path", policy,
    ...                        "--output_dir", "out", "--use_cpu", "true", "--report_to", "none", "--dry-run"])
    >>> report, data = check_launch(launch)
    >>> report["start"]["continued"], report["data"], data, report["checked_at_launch"][-1]
    (False, None, None, "dataset_name 'outputs/not-yet.jsonl' (not there yet)")

    ```
    """
    from reasonflux_rl.train.preflight import check_deepspeed

    training = launch.training_args
    report: dict[str, Any] = {"start": _check_start(launch)}
    data = None
    if launch.dry_run and not _readable(launch.args.dataset_name):
        launch.deferred.append(f"dataset_name {launch.args.dataset_name!r} (not there yet)")
    else:
        data = read_data(launch.args, training.seed)
        if not data.train:
            raise ConfigError(f"dataset_name={launch.args.dataset_name!r}: no usable training rows")
    report["data"] = None if data is None else _data_report(data)
    deepspeed = launch.deepspeed or training.deepspeed
    report["deepspeed"] = check_deepspeed(deepspeed) if isinstance(deepspeed, str) else None
    report["objective"] = dataclasses.asdict(launch.args.objective())
    report["encoding"] = launch.args.scorer_options()
    report["batch"] = {"batch_tokens_per_device": launch.args.batch_tokens, "pool_batches": launch.args.pool_batches,
                       "num_processes": launch.num_processes,
                       "gradient_accumulation_steps": training.gradient_accumulation_steps}
    report["optimisation"] = {"learning_rate": training.learning_rate, "num_train_epochs": training.num_train_epochs,
                              "max_steps": training.max_steps, "bf16": training.bf16, "use_peft":
                              launch.model_args.use_peft, "eval_strategy": str(training.eval_strategy),
                              "output_dir": training.output_dir, "report_to": training.report_to}
    point = resume_point(training)
    report["resume"] = point.line() if point else None
    report["checked_at_launch"] = launch.deferred
    return report, data


def _readable(name: str) -> bool:
    """Whether a dry run can read the data now: a local path that exists, or anything that is not a local path."""
    path = Path(name)
    local = path.suffix in (".jsonl", ".json", ".parquet", ".csv") or name.startswith(("/", ".", "~"))
    return path.exists() or not local


def train_prm(launch: Launch, data: Data) -> Any:
    """Load the start, encode the rows by the scorer's encoding, train with ``PRMTrainer``, write the PRM in the
    step-classifier layout to ``output_dir`` (and ``prm_training.json``, ``prm_training.png``) and say how it did;
    the trainer, for a caller that wants its predictions."""
    from transformers import set_seed

    from reasonflux_rl.prm.kinds.step_classifier import StepScorer
    from reasonflux_rl.prm_training.start import load_start, save_prm

    training, model_args = launch.training_args, launch.model_args
    _prepare_process(training)
    point = prepare_resume(training, "prm train")
    started = time.monotonic()
    set_seed(training.seed)
    start = inspect_start(model_args.model_name_or_path)
    model, tokenizer = load_start(start, step_tag=launch.args.prm_step_tag, dtype=model_args.dtype,
                                  attn_implementation=model_args.attn_implementation)
    scorer = StepScorer(model, tokenizer, **launch.args.scorer_options())
    train_rows, eval_rows = _encode(scorer, data)
    trainer = _trainer(launch, _with_adapter(model, model_args, training), tokenizer, train_rows, eval_rows)
    stop = StopOnSignal()
    trainer.add_callback(stop)
    result = trainer.train(resume_from_checkpoint=training.resume_from_checkpoint)
    if stop.stopped_at is not None:
        if trainer.is_world_process_zero():
            print(stopped_line("prm train", stop, training.output_dir), flush=True)
        return trainer
    save_prm(trainer, start, training.output_dir, step_tag=launch.args.prm_step_tag)
    trainer.save_state()
    if trainer.is_world_process_zero():
        _report(launch, trainer, start, data, result, time.monotonic() - started, point and point.resumed_at)
    return trainer


def _prepare_process(training: Any) -> None:
    """W&B writes beside the run; DeepSpeed is told a CPU run is one; ZeRO-3 on gloo gets its communication."""
    if "wandb" in (training.report_to or []):
        os.environ.setdefault("WANDB_DIR", training.output_dir)
        Path(training.output_dir).mkdir(parents=True, exist_ok=True)
    if training.use_cpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from reasonflux_rl.prm.placement.zero3 import init_deepspeed_comm, zero3_enabled

    if zero3_enabled():
        init_deepspeed_comm()


def _encode(scorer: Any, data: Data) -> tuple[list[Any], list[Any]]:
    from accelerate import PartialState

    from reasonflux_rl.prm_training.encoding import encode_pair

    encoded = {}
    for name, pairs in (("train", data.train), ("eval", data.eval)):
        rows, dropped = [], 0
        for pair in pairs:
            pair_rows, pair_dropped = encode_pair(scorer, pair)
            rows += pair_rows
            dropped += pair_dropped
        encoded[name] = rows
        tokens = sum(len(r.input_ids) for r in rows)
        note = f"; {dropped} steps past prm_max_length dropped (no target)" if dropped else ""
        if pairs and PartialState().is_main_process:
            print(f"reasonflux-rl prm train: {name}: {len(pairs)} pairs, {len(rows)} rows, {tokens} tokens{note}",
                  flush=True)
    return encoded["train"], encoded["eval"]


def _with_adapter(model: Any, model_args: Any, training: Any) -> Any:
    """The model with a LoRA adapter when ``use_peft`` (the step head trained whole, as ``modules_to_save``)."""
    if not model_args.use_peft:
        return model
    from peft import get_peft_model
    from trl import get_peft_config

    peft_config = get_peft_config(model_args)
    # No task type: PEFT's causal-LM wrapper would hand the model LM arguments it does not take.
    peft_config.task_type = None
    peft_config.modules_to_save = sorted({*(peft_config.modules_to_save or []), "score"})
    if training.activation_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, peft_config)


def _trainer(launch: Launch, model: Any, tokenizer: Any, train_rows: list[Any], eval_rows: list[Any]) -> Any:
    from reasonflux_rl.prm_training.trainer import PRMTrainer

    training = launch.training_args
    strategy = getattr(training.eval_strategy, "value", training.eval_strategy)
    if strategy != "no" and not eval_rows:
        raise ConfigError(f"eval_strategy={strategy!r} needs held-out rows: set eval_dataset_name, eval_split or "
                          "eval_holdout_size")
    return PRMTrainer(model=model, args=training, train_dataset=train_rows, eval_dataset=eval_rows or None,
                      processing_class=tokenizer, objective=launch.args.objective(),
                      batch_tokens=launch.args.batch_tokens, pool_batches=launch.args.pool_batches)


HELD_OUT = ("eval_step_accuracy", "eval_wrong_step_recall", "eval_step_auroc", "eval_trajectory_overlap")


def verdict(log_history: Sequence[dict[str, Any]], seconds: float, resumed_at: int | None = None) -> str:
    """One line on what the run did to the held-out figures, first evaluation to last (a resumed run's history
    starts at its first start; its time is this job's, from step ``resumed_at``).

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.train_command import verdict
    >>> history = [{"step": 0, "eval_step_accuracy": 0.5, "eval_wrong_step_recall": 0.1, "eval_step_auroc": 0.52,
    ...             "eval_trajectory_overlap": 0.95}, {"step": 40, "loss": 0.1},
    ...            {"step": 40, "eval_step_accuracy": 0.9, "eval_wrong_step_recall": 0.8, "eval_step_auroc": 0.97,
    ...             "eval_trajectory_overlap": 0.2}]
    >>> verdict(history, 95)
    'held-out step accuracy 50% -> 90%, recall on wrong steps 10% -> 80%, AUROC 0.52 -> 0.97, trajectory overlap 0.95 -> 0.20 in 40 steps (1m35s)'
    >>> verdict([{"step": 3, "loss": 0.1}], 5)
    'trained 3 steps (0m05s); no held-out evaluation (set eval_strategy and held-out rows)'

    ```
    """
    from reasonflux_rl.train.verdict import duration

    took = duration(seconds) + (f" from step {resumed_at}" if resumed_at else "")
    steps = max((int(entry.get("step", 0)) for entry in log_history), default=0)
    evals = [entry for entry in log_history if HELD_OUT[0] in entry]
    if len(evals) < 2:
        return f"trained {steps} steps ({took}); no held-out evaluation (set eval_strategy and held-out rows)"
    first, last = evals[0], evals[-1]
    parts = []
    for key, name, form in (("eval_step_accuracy", "held-out step accuracy", "{:.0%}"),
                            ("eval_wrong_step_recall", "recall on wrong steps", "{:.0%}"),
                            ("eval_step_auroc", "AUROC", "{:.2f}"),
                            ("eval_trajectory_overlap", "trajectory overlap", "{:.2f}")):
        if key in first and key in last:
            parts.append(f"{name} {form.format(first[key])} -> {form.format(last[key])}")
    return f"{', '.join(parts)} in {steps} steps ({took})"


def _report(launch: Launch, trainer: Any, start: Start, data: Data, result: Any, seconds: float,
            resumed_at: int | None) -> None:
    """``prm_training.json`` (settings, data, held-out figures first and last) and ``prm_training.png`` in
    ``output_dir``, and the verdict line."""
    from reasonflux_rl.tools.outputs import write_json
    from reasonflux_rl.tools.plots import prm_training_curves

    output = Path(launch.training_args.output_dir)
    history = trainer.state.log_history
    evals = [entry for entry in history if HELD_OUT[0] in entry]
    write_json({
        "start": dataclasses.asdict(start), "data": _data_report(data),
        "objective": dataclasses.asdict(launch.args.objective()), "encoding": launch.args.scorer_options(),
        "batch_tokens": launch.args.batch_tokens, "steps": trainer.state.global_step, "seconds": round(seconds, 1),
        "train_loss": result.training_loss,
        "held_out": {"first": evals[0] if evals else None, "last": evals[-1] if evals else None},
    }, output / "prm_training.json")
    print(f"reasonflux-rl prm train: {verdict(history, seconds, resumed_at)}")
    try:
        figure = prm_training_curves(history, output / "prm_training.png",
                                     title=launch.training_args.run_name or output.name)
        print(f"reasonflux-rl prm train: curves: {figure}")
    except ConfigError:
        print('reasonflux-rl prm train: no curves (pip install "reasonflux-rl[plots]" for matplotlib)')
    print(f"reasonflux-rl prm train: PRM: {output} (load_scorer reads it; score with the same prm_* keys)")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the launch, check it, then print the dry run's report or train and write the PRM.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.train_command import main
    >>> try:
    ...     main(["--model_name_or_path", "m", "--output_dir", "out"])
    ... except ValueError as err:
    ...     print(err)
    dataset_name is required: the labelled rows (prm label's output)

    ```
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    launch = parse_launch(argv)
    report, data = check_launch(launch)
    if launch.dry_run:
        print(json.dumps(report, indent=2, default=str))
        return
    train_prm(launch, data)  # type: ignore[arg-type]
