"""The R1-style lab's trajectory-aware PRM from ``mc`` step targets (the lab policy as completer) against the same
PRM from ``given`` targets (the judge's), on the same pairs, with the same training. One JSON object.

    python benchmarks/lab_r1_mc.py [--quick] [--pairs N] [--rollouts K] [--epochs E] [--out DIR]

The lab build trains its trajectory-aware PRM on ``given`` targets of 8,000 pairs; ``mc`` at that size, with K=4
continuations of every step prefix by the shipped R1-style policy, is about 540,000 continuations, far beyond a
CPU build (``labelling.hours_for_the_builds_8000_pairs``: this labelling's time scaled to the build's pairs). So both
arms here take ``--pairs`` pairs written as the build writes its PRM data (``write_r1_trajectories``, same styles and
seed) and label them once each:

- ``mc``: ``prm label --method mc --policy reasonflux_rl/lab/assets/r1/policy --rollouts K``: a step's target is
  the share of K continuations from its prefix whose boxed answer is the gold one (Math-Shepherd); ``prm train``
  then reads them as ``given`` targets (an ``mc_targets`` column);
- ``given``: the judge's labels (a corrected detour is no error, an uncorrected slip is one).

``targets_by_kind``: each arm's mean step target on each kind of step the judge names, and
``error_auroc_of_targets`` (how well its targets rank the judge's errors below the other steps; 0.5: not at all).
Then ``prm train`` (the build's settings, ``lambda_final 1``, ``--epochs`` epochs so that the small data gets a few
hundred optimizer steps) from the policy's decoder on each, and each PRM's held-out figures by step kind
(``prm_figures``, the build's table) on the build's 400 held-out pairs. ``--quick`` (a few pairs, 1 rollout, short
continuations) checks the script.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from transformers import AutoTokenizer  # noqa: E402

from reasonflux_rl.lab.build import SHIPPED, LabBuildArguments, label_and_train_prm  # noqa: E402
from reasonflux_rl.lab.r1_build import prm_figures, write_r1_trajectories  # noqa: E402
from reasonflux_rl.prm_training import label_command  # noqa: E402
from reasonflux_rl.prm_training.metrics import auroc  # noqa: E402

POLICY = SHIPPED / "r1" / "policy"
BUILD_PAIRS = LabBuildArguments().prm_examples


def targets_by_kind(labelled: Path, column: str = "step_targets") -> dict[str, dict[str, float]]:
    """Mean step target (and count) of each kind of step the judge names, over the rows of ``labelled`` (``column``:
    the targets' column; a step without one is left out)."""
    by_kind: dict[str, list[float]] = {}
    for line in labelled.read_text().splitlines():
        row = json.loads(line)
        for target, kind in zip(row[column], row["kinds"], strict=True):
            if target is not None:
                by_kind.setdefault(kind, []).append(target)
    return {kind: {"steps": len(targets), "mean_target": round(statistics.fmean(targets), 4)}
            for kind, targets in sorted(by_kind.items())}


def error_auroc(labelled: Path, column: str = "step_targets") -> float | None:
    """How well a row set's step targets (``column``) rank the judge's errors (label false) below its other steps;
    a step without a target is left out."""
    targets, errors = [], []
    for line in labelled.read_text().splitlines():
        row = json.loads(line)
        for target, label in zip(row[column], row["labels"], strict=True):
            if target is not None:
                targets.append(-target)
                errors.append(not label)
    return auroc(targets, errors)


def label_mc(train: Path, rollouts: int, max_new_tokens: int) -> tuple[Path, float]:
    """``prm label --method mc`` on ``train`` (the policy as completer), and the seconds it took: the rows with its
    step targets as an ``mc_targets`` column, for ``prm label --method given`` to read again."""
    out = train.with_name("train-mc.jsonl")
    started = time.perf_counter()
    label_command.main(["--input", str(train), "--output", str(out), "--method", "mc", "--policy", str(POLICY),
                        "--backend", "transformers", "--rollouts", str(rollouts), "--max_new_tokens",
                        str(max_new_tokens), "--thinking_prefilled", "true", "--prompts_per_batch", "64",
                        "--outcome_num_workers", "1", "--no_progress", "true"])
    seconds = time.perf_counter() - started
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row in rows:
        row["mc_targets"] = row.pop("step_targets")
        del row["trajectory_target"]
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return out, seconds


def run_arm(name: str, train: Path, targets: str, data: dict[str, Path], args: LabBuildArguments, out: Path,
            held_out_rows: list[dict]) -> dict[str, Any]:
    """Train the trajectory-aware PRM on the step targets of ``train``'s column ``targets`` and measure it."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    train = Path(shutil.copy(train, folder / "train.jsonl"))
    held_out = Path(shutil.copy(data["test"], folder / "test.jsonl"))
    prm, verdict = label_and_train_prm(POLICY, folder / "prm", train, held_out, args, lambda_final=1.0,
                                       train_labels=("--method", "given", "--step_targets_field", targets))
    labelled = train.with_suffix(".labelled.jsonl")
    figures, _ = prm_figures(prm, AutoTokenizer.from_pretrained(folder / "prm"), held_out_rows)
    return {"targets_by_kind": targets_by_kind(labelled), "error_auroc_of_targets": error_auroc(labelled),
            "training": verdict, "held_out": figures}


def measure(pairs: int, rollouts: int, epochs: float, held_out: int, max_new_tokens: int, out: Path) -> dict:
    args = LabBuildArguments(task="r1", prm_examples=pairs, prm_held_out=held_out, prm_epochs=epochs)
    data = write_r1_trajectories(args, out / "data")
    held_out_rows = [json.loads(line) for line in data["test"].read_text().splitlines()]
    mc_train, mc_seconds = label_mc(data["train"], rollouts, max_new_tokens)
    continuations = rollouts * sum(len(json.loads(line)["labels"]) - 1
                                   for line in data["train"].read_text().splitlines())
    return {
        "benchmark": "lab_r1_mc", "pairs": pairs, "rollouts": rollouts, "prm_epochs": epochs,
        "held_out_pairs": len(held_out_rows), "max_new_tokens": max_new_tokens,
        "labelling": {"continuations": continuations, "seconds": round(mc_seconds, 1),
                      "continuations_per_second": round(continuations / mc_seconds, 2),
                      "hours_for_the_builds_8000_pairs": round(mc_seconds * BUILD_PAIRS / pairs / 3600, 1)},
        "arms": {"given": run_arm("given", data["train"], "labels", data, args, out, held_out_rows),
                 "mc": run_arm("mc", mc_train, "mc_targets", data, args, out, held_out_rows)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 pairs, 1 rollout of 32 tokens, 1 epoch: a check")
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None, help="where data, labels, PRMs and lab_r1_mc.json go")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="lab-r1-mc-"))
    settings = (4, 1, 1.0, 4, 32) if args.quick else (args.pairs, args.rollouts, args.epochs, 400, 400)
    with redirect_stdout(sys.stderr):  # the JSON alone on stdout
        report = {**measure(*settings, out), "quick": args.quick}
    out.mkdir(parents=True, exist_ok=True)
    (out / "lab_r1_mc.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
