"""Run by tests/test_resume.py under torchrun: `prm train` on two ranks where only rank 1 gets SIGUSR1 (during its
third step); each rank records where it stopped.

argv: start_dir data.jsonl out_dir
"""

import os
import signal
import sys
from pathlib import Path

from accelerate import PartialState
from rank_records import write_and_leave

from reasonflux_rl.prm_training import train_command
from reasonflux_rl.train.resume import StopOnSignal


class SignalledOnRank1(StopOnSignal):
    """The stop callback, with rank 1 sending itself the signal as its third optimizer step begins."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 2 and PartialState().process_index == 1:
            os.kill(os.getpid(), signal.SIGUSR1)


def main():
    start, data, out = sys.argv[1:4]
    train_command.StopOnSignal = SignalledOnRank1
    launch = train_command.parse_launch([
        "--model_name_or_path", start, "--dataset_name", data, "--output_dir", str(Path(out) / "prm"),
        "--use_cpu", "true", "--ddp_backend", "gloo", "--report_to", "none", "--max_steps", "50",
        "--logging_steps", "1", "--seed", "0", "--batch_tokens", "160", "--disable_tqdm", "true",
        "--prm_system_prompt", "",
    ])
    _, rows = train_command.check_launch(launch)
    trainer = train_command.train_prm(launch, rows)
    [stop] = [c for c in trainer.callback_handler.callbacks if isinstance(c, StopOnSignal)]
    write_and_leave(PartialState(), out, {"stopped_at": stop.stopped_at, "global_step": trainer.state.global_step})


if __name__ == "__main__":
    main()
