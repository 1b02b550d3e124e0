"""Run by tests/test_prm_training_trainer.py under torchrun (or alone): `prm train` on a few labelled rows, each
rank recording the logged losses and the trained step head.

argv: start_dir data.jsonl out_dir gradient_accumulation_steps
"""

import sys
from pathlib import Path

from accelerate import PartialState
from rank_records import write_and_leave

from reasonflux_rl.prm_training.train_command import check_launch, parse_launch, train_prm


def main():
    start, data, out, accumulation = sys.argv[1:5]
    launch = parse_launch([
        "--model_name_or_path", start, "--dataset_name", data, "--output_dir", str(Path(out) / "prm"),
        "--use_cpu", "true", "--ddp_backend", "gloo", "--report_to", "none", "--save_strategy", "no",
        "--max_steps", "3", "--learning_rate", "5e-3", "--logging_steps", "1", "--seed", "0",
        "--gradient_accumulation_steps", accumulation, "--batch_tokens", "160", "--disable_tqdm", "true",
        "--prm_system_prompt", "",
    ])
    _, rows = check_launch(launch)
    trainer = train_prm(launch, rows)
    head = trainer.accelerator.unwrap_model(trainer.model).score[2].weight
    state = PartialState()
    write_and_leave(state, out, {
        "world_size": state.num_processes,
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "head": head.detach().flatten().tolist(),
    })


if __name__ == "__main__":
    main()
