"""A run that picks up where it stopped: ``resume_from_checkpoint: last``, a stop on SIGUSR1 that saves a checkpoint
first, and one W&B run across restarts. ``train`` and ``prm train`` both go through [`prepare_resume`] before their
trainer is built and [`StopOnSignal`] while it trains.

A checkpoint is complete when its ``trainer_state.json`` reads back with the step of its name: transformers writes
that file last, after the weights, the optimizer and the RNG states, so a job killed while saving leaves a
checkpoint without it (or with a truncated one), and ``last`` skips it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from reasonflux_rl.errors import ConfigError

LAST = "last"
STOP_SIGNAL = signal.SIGUSR1
WANDB_ID_FILE = "wandb_run_id"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class ResumePoint:
    """Where a run starts: ``checkpoint`` (None: from scratch) at optimizer step ``step``, and the newer checkpoints
    passed over, each with why.

    Example:
    ```python
    >>> from reasonflux_rl.train.resume import ResumePoint
    >>> point = ResumePoint("out/checkpoint-16", 16, ("checkpoint-24 (no trainer_state.json)",))
    >>> point.line(), point.resumed_at
    ('resuming from out/checkpoint-16 (step 16); skipped checkpoint-24 (no trainer_state.json)', 16)
    >>> ResumePoint(None, 0, (), searched="out").line()
    'no checkpoint in out: starting from step 0'

    ```
    """

    checkpoint: str | None
    step: int
    skipped: tuple[str, ...] = ()
    searched: str | None = field(default=None, compare=False)

    @property
    def resumed_at(self) -> int | None:
        """The step the run goes on from; None for a fresh start."""
        return self.step if self.checkpoint else None

    def line(self) -> str:
        head = (f"resuming from {self.checkpoint} (step {self.step})" if self.checkpoint
                else f"no checkpoint in {self.searched}: starting from step 0")
        return f"{head}; skipped {', '.join(self.skipped)}" if self.skipped else head


def _incomplete(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from, or None when it can."""
    state = checkpoint / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json: the save did not finish"
    try:
        step = json.loads(state.read_text())["global_step"]
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
        return "trainer_state.json does not read back: the save did not finish"
    number = int(_CHECKPOINT.match(checkpoint.name).group(1))
    if step != number:
        return f"trainer_state.json says step {step}"
    return None


def newest_complete_checkpoint(output_dir: str | Path) -> ResumePoint:
    """The newest ``checkpoint-N`` in ``output_dir`` whose save finished, with the newer ones it passed over; a
    point without a checkpoint when there is none (or no ``output_dir``).

    Example:
    ```python
    >>> import json, pathlib, tempfile
    >>> from reasonflux_rl.train.resume import newest_complete_checkpoint
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> for step in (8, 16):
    ...     (out / f"checkpoint-{step}").mkdir()
    ...     _ = (out / f"checkpoint-{step}/trainer_state.json").write_text(json.dumps({"global_step": step}))
    >>> (out / "checkpoint-24").mkdir()  # killed while saving
    >>> point = newest_complete_checkpoint(out)
    >>> pathlib.Path(point.checkpoint).name, point.step, point.skipped
    ('checkpoint-16', 16, ('checkpoint-24 (no trainer_state.json: the save did not finish)',))

    ```
    """
    folder = Path(output_dir)
    found = sorted((int(match.group(1)), path) for path in (folder.iterdir() if folder.is_dir() else ())
                   if path.is_dir() and (match := _CHECKPOINT.match(path.name)))
    skipped = []
    for step, path in reversed(found):
        reason = _incomplete(path)
        if reason is None:
            return ResumePoint(str(path), step, tuple(skipped), searched=str(folder))
        skipped.append(f"{path.name} ({reason})")
    return ResumePoint(None, 0, tuple(skipped), searched=str(folder))


def resume_point(training_args: Any) -> ResumePoint | None:
    """What ``resume_from_checkpoint`` means for this run, without changing it: ``last`` searched in ``output_dir``,
    a path checked; None when the run does not resume.

    Example:
    ```python
    >>> import tempfile
    >>> from types import SimpleNamespace
    >>> from reasonflux_rl.train.resume import resume_point
    >>> resume_point(SimpleNamespace(resume_from_checkpoint="last", output_dir=tempfile.mkdtemp())).checkpoint
    >>> try:
    ...     resume_point(SimpleNamespace(resume_from_checkpoint="/no/such/checkpoint-3", output_dir="out"))
    ... except ValueError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    resume_from_checkpoint=/no/such/checkpoint-3: not a directory (a checkpoint-N folder, or `last` for the newest...)

    ```
    """
    value = training_args.resume_from_checkpoint
    if value in (None, "", False):
        return None
    if str(value).lower() == LAST:
        return newest_complete_checkpoint(training_args.output_dir)
    path = Path(str(value))
    if not path.is_dir():
        raise ConfigError(f"resume_from_checkpoint={value}: not a directory (a checkpoint-N folder, or `{LAST}` for "
                          "the newest in output_dir)")
    reason = _incomplete(path) if _CHECKPOINT.match(path.name) else None
    if reason:
        raise ConfigError(f"resume_from_checkpoint={value}: {reason}; `{LAST}` takes the newest complete one")
    state = path / "trainer_state.json"
    step = json.loads(state.read_text())["global_step"] if state.is_file() else 0
    return ResumePoint(str(path), step)


def keep_wandb_run(output_dir: str | Path, resuming: bool) -> str:
    """The W&B run id of the run in ``output_dir``, set as ``WANDB_RUN_ID`` with ``WANDB_RESUME=allow``: a run that
    resumes from a checkpoint logs to the W&B run its first start made (the id is kept in ``output_dir``'s
    ``wandb_run_id`` file), a fresh start to a new one (a new id in the file), so a W&B run holds one training.
    Offline, each restart writes its own ``offline-run-*-ID`` folder and ``wandb sync`` uploads them in order into
    that run. A ``WANDB_RUN_ID`` already set (a sweep agent's, or yours) wins and is kept.

    Example:
    ```python
    >>> import os, tempfile
    >>> from reasonflux_rl.train.resume import keep_wandb_run
    >>> _ = os.environ.pop("WANDB_RUN_ID", None)
    >>> out = tempfile.mkdtemp()
    >>> first = keep_wandb_run(out, resuming=False)
    >>> _ = os.environ.pop("WANDB_RUN_ID")
    >>> keep_wandb_run(out, resuming=True) == first, os.environ["WANDB_RESUME"]
    (True, 'allow')
    >>> _ = os.environ.pop("WANDB_RUN_ID")
    >>> keep_wandb_run(out, resuming=False) == first  # the same directory, trained again from step 0
    False
    >>> _ = os.environ.pop("WANDB_RUN_ID")

    ```
    """
    path = Path(output_dir) / WANDB_ID_FILE
    kept = path.read_text().strip() if resuming and path.is_file() else None
    run_id = os.environ.get("WANDB_RUN_ID") or kept or uuid.uuid4().hex[:8]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    os.environ["WANDB_RUN_ID"] = run_id
    os.environ.setdefault("WANDB_RESUME", "allow")
    return run_id


def prepare_resume(training_args: Any, command: str) -> ResumePoint | None:
    """Before the trainer is built: ``resume_from_checkpoint`` replaced by the checkpoint it means (``last``: the
    newest complete one, or a fresh start), no evaluation at the start of a resumed run (its history has the
    start's already), the W&B run of a resumed run kept ([`keep_wandb_run`]), and the one line that says where the
    run starts, printed by the main process.

    Example:
    ```python
    >>> import tempfile
    >>> from types import SimpleNamespace
    >>> from reasonflux_rl.train.resume import prepare_resume
    >>> args = SimpleNamespace(resume_from_checkpoint="last", output_dir=tempfile.mkdtemp(), eval_on_start=True,
    ...                        report_to=[])
    >>> point = prepare_resume(args, "train")  # doctest: +ELLIPSIS
    reasonflux-rl train: no checkpoint in ...: starting from step 0
    >>> args.resume_from_checkpoint, args.eval_on_start
    (None, True)

    ```
    """
    from accelerate import PartialState

    main = PartialState().is_main_process
    point = resume_point(training_args)
    resuming = bool(point and point.resumed_at is not None)
    if "wandb" in (training_args.report_to or []) and main:
        keep_wandb_run(training_args.output_dir, resuming)
    if point is None:
        return None
    training_args.resume_from_checkpoint = point.checkpoint
    if resuming:
        training_args.eval_on_start = False
    if main:
        print(f"reasonflux-rl {command}: {point.line()}", flush=True)
    return point


class StopOnSignal(TrainerCallback):
    """On SIGUSR1 (Slurm's ``--signal`` before the time limit): finish the optimizer step, save a checkpoint, stop.
    The ranks agree on the step (the flag is all-reduced at every step end), so each saves the same checkpoint;
    ``stopped_at`` is that step after the stop, None otherwise.

    Example:
    ```python
    >>> import os, signal
    >>> from types import SimpleNamespace
    >>> from transformers import TrainerControl
    >>> from reasonflux_rl.train.resume import StopOnSignal
    >>> stop, control = StopOnSignal(), TrainerControl()
    >>> stop.on_train_begin(None, None, control)
    >>> os.kill(os.getpid(), signal.SIGUSR1)
    >>> _ = stop.on_step_end(SimpleNamespace(device="cpu"), SimpleNamespace(global_step=7, max_steps=100), control)
    >>> control.should_save, control.should_training_stop, stop.stopped_at
    (True, True, 7)
    >>> stop.on_train_end(None, None, control)  # the handler before it is back

    ```
    """

    def __init__(self) -> None:
        self._requested = False
        self._previous: Any = None
        self.stopped_at: int | None = None

    def _request(self, signum: int, frame: Any) -> None:
        self._requested = True

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._previous = signal.signal(STOP_SIGNAL, self._request)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._previous is not None:
            signal.signal(STOP_SIGNAL, self._previous)
            self._previous = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        # At the last step the run ends anyway, saved as a finished one.
        if self._agreed(args.device) and state.global_step < (state.max_steps or float("inf")):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def _agreed(self, device: Any) -> bool:
        """Whether any rank was signalled (every rank calls this at every step end)."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self._requested
        flag = torch.tensor([float(self._requested)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def stopped_line(command: str, stop: StopOnSignal, output_dir: str | Path) -> str:
    """What a run stopped by the signal says, with how it continues.

    Example:
    ```python
    >>> from reasonflux_rl.train.resume import StopOnSignal, stopped_line
    >>> stop = StopOnSignal()
    >>> stop.stopped_at = 12
    >>> print(stopped_line("train", stop, "out"))  # doctest: +ELLIPSIS
    reasonflux-rl train: stopped at step 12 on SIGUSR1 and saved out/checkpoint-12; --resume_from_checkpoint last ...

    ```
    """
    checkpoint = Path(output_dir) / f"checkpoint-{stop.stopped_at}"
    return (f"reasonflux-rl {command}: stopped at step {stop.stopped_at} on {STOP_SIGNAL.name} and saved {checkpoint}; "
            f"--resume_from_checkpoint {LAST} continues it")
