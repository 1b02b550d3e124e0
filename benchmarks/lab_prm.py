"""How the lab's PRM learns under `prm train`'s choices, over seeds: the loss (bce, mse), the learning rate, and the
batches (length pools, against the whole data sorted once: fixed batches of one length). One JSON object.

    python benchmarks/lab_prm.py [--quick] [--seeds 0,1,2] [--out PATH]

Every arm trains `recipes/prm_train/cpu.yaml` (the lab's warm-start policy with a fresh step head, 3 epochs, on
the lab's 8,000 labelled solutions, evaluated on 400 of held-out problems) with one key changed, in its own process;
the data is written once, by `reasonflux-rl lab trajectories` and `prm label`, as docs/prm-training.md does. An arm
"leaves the prior" at a seed when its final held-out step accuracy reaches 0.75 (the prior, saying every step right,
scores about 0.52). `--quick`: one seed, one epoch of 2,000 solutions (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = "recipes/prm_train/cpu.yaml"
LEFT_THE_PRIOR = 0.75
ARMS = {
    "bce_lr5e-4": [],
    "bce_lr1e-3": ["--learning_rate", "1e-3"],
    "mse_lr5e-4": ["--loss", "mse"],
    "bce_lr5e-4_sorted_once": ["--pool_batches", "100000"],
}


def cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "reasonflux_rl.cli", *args], cwd=REPO, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def write_data(folder: Path, rows: int) -> tuple[Path, Path]:
    cli("lab", "trajectories", "--out", str(folder), "--prm_examples", str(rows))
    labelled = []
    for name in ("train", "test"):
        out = folder / f"{name}-labelled.jsonl"
        cli("prm", "label", "--config", "recipes/prm_train/label_cpu.yaml", "--input", str(folder / f"{name}.jsonl"),
            "--output", str(out), "--no_progress", "true")
        labelled.append(out)
    return labelled[0], labelled[1]


def run_arm(extra: list[str], seed: int, data: tuple[Path, Path], out: Path, epochs: str) -> dict:
    started = time.monotonic()
    cli("prm", "train", "--config", RECIPE, "--dataset_name", str(data[0]), "--eval_dataset_name", str(data[1]),
        "--output_dir", str(out), "--seed", str(seed), "--num_train_epochs", epochs, "--disable_tqdm", "true", *extra)
    report = json.loads((out / "prm_training.json").read_text())
    first, last = report["held_out"]["first"], report["held_out"]["last"]
    return {"seed": seed, "start_step_accuracy": first["eval_step_accuracy"],
            "step_accuracy": last["eval_step_accuracy"], "wrong_step_recall": last.get("eval_wrong_step_recall"),
            "step_auroc": last.get("eval_step_auroc"), "steps": report["steps"],
            "left_the_prior": last["eval_step_accuracy"] >= LEFT_THE_PRIOR,
            "seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2; --quick: 0)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp) / "data", 2000 if args.quick else 8000)
        arms = {}
        for name, extra in ARMS.items():
            runs = [run_arm(extra, seed, data, Path(tmp) / f"{name}-{seed}", "1" if args.quick else "3")
                    for seed in seeds]
            accuracies = [r["step_accuracy"] for r in runs]
            arms[name] = {"keys": extra, "runs": runs, "left_the_prior": sum(r["left_the_prior"] for r in runs),
                          "mean_step_accuracy": round(statistics.fmean(accuracies), 4)}
            print(f"{name}: {[round(a, 3) for a in accuracies]}", file=sys.stderr, flush=True)
    result = {"benchmark": "lab_prm", "quick": args.quick, "recipe": RECIPE, "seeds": seeds,
              "left_the_prior_at": LEFT_THE_PRIOR, "arms": arms, "seconds": round(time.monotonic() - started)}
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
