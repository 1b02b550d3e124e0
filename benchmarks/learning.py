"""Learning benchmark: how fast each reward set-up teaches the lab's policy, with equal budgets.

Run: ``python benchmarks/learning.py [--quick] [--arms a,b] [--seeds N] [--steps N] [--out DIR]``; prints one JSON
object on stdout and writes ``learning.png`` (held-out accuracy against step, mean and spread over seeds per arm) and
``learning.json`` into ``--out``.

Every arm trains ``recipes/lab/cpu.yaml`` (the lab's shipped policy and PRM, 8 problems x 8 completions per step)
for the same steps with the same seeds, through ``reasonflux-rl train`` in its own process; only the reward keys of
``ARMS`` differ. Held-out accuracy is the recipe's evaluation: every held-out problem sampled 8 times at
temperature 1 (as GRPO samples), judged by the outcome reward, every ``eval_steps`` steps and before training.

- ``arms[name]``: ``final_accuracy_mean``/``_sd`` over seeds, ``auc`` (held-out accuracy averaged over the run,
  trapezoids over steps, in points), ``steps_to_outcome_final`` (first evaluated step at which the arm's mean curve
  reaches the outcome-only arm's final mean accuracy; null if never), and the mean curve.
- ``best_prm_arm`` (largest AUC among the arms that use the PRM at the sequence level), ``auc_gain_vs_outcome`` and
  ``auc_gain_significant`` (the gain exceeds twice its standard error across seeds).
- ``target``: the best PRM arm reaches the outcome-only arm's final accuracy in at most 2/3 of the steps, beyond seed
  noise; ``target_met`` and, when it is not, ``finding`` says what the numbers show.
- ``dense_credit``: the best step-level credit arm (``prm_credit`` ``suffix_sum``/``soft_min``) against the same
  targets of the step-level credit issue: outcome-only's final accuracy in at most half the steps, and an AUC above
  the sequence-level arm of the same beta (``prm_mixed_beta0.5``) beyond seed noise.
- ``prm_step_accuracy``, ``prm_wrong_step_recall``, ``policy_start_accuracy``: from the assets' build report.

Runs land in ``--out``; running again with the same ``--out`` reuses the runs that finished.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/lab/cpu.yaml"
ASSETS = REPO / "reasonflux_rl/lab/assets"
# Each arm: the reward keys it sets on top of the recipe.
ARMS: dict[str, dict[str, str]] = {
    "outcome_only": {"prm_beta": "0"},
    "prm_mixed_beta0.5": {"prm_beta": "0.5", "prm_normalisation": "none"},
    "prm_mixed_beta0.5_group_zscore": {"prm_beta": "0.5", "prm_normalisation": "group_zscore"},
    "prm_only": {"prm_beta": "1", "prm_normalisation": "none"},
    "dense_suffix_sum_beta0.5": {"prm_beta": "0.5", "prm_credit": "suffix_sum"},
    "dense_soft_min_beta0.5": {"prm_beta": "0.5", "prm_credit": "soft_min"},
}
OUTCOME = "outcome_only"
SEQUENCE_ARM = "prm_mixed_beta0.5"
STEPS_FRACTION_TARGET = 2 / 3
DENSE_STEPS_FRACTION_TARGET = 1 / 2
EVAL_KEY = "eval_outcome/accuracy"


def run_arm(arm: str, seed: int, steps: int, eval_steps: int, out: Path) -> list[dict[str, Any]]:
    """Train one arm with one seed (a finished run of the same length in ``out`` is reused); its log history."""
    output_dir = out / f"{arm}-seed{seed}"
    state = output_dir / "trainer_state.json"
    if state.exists() and json.loads(state.read_text())["global_step"] == steps:
        return json.loads(state.read_text())["log_history"]
    overrides = [x for key, value in ARMS[arm].items() for x in (f"--{key}", value)]
    command = [sys.executable, "-m", "reasonflux_rl.train", "--config", str(RECIPE), "--seed", str(seed),
               "--max_steps", str(steps), "--eval_steps", str(eval_steps), "--output_dir", str(output_dir),
               "--report_to", "none", *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{arm} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return json.loads(state.read_text())["log_history"]


def eval_curve(history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """The held-out accuracy curve ``[(step, accuracy)]`` of a run."""
    return [(int(e["step"]), float(e[EVAL_KEY])) for e in history if EVAL_KEY in e]


def training_mean(histories: list[list[dict[str, Any]]], key: str) -> float | None:
    """``key`` averaged over the training steps of every seed (``None`` if never logged)."""
    values = [e[key] for h in histories for e in h if key in e and EVAL_KEY not in e]
    return round(statistics.fmean(values), 4) if values else None


def auc(curve: list[tuple[int, float]]) -> float:
    """Mean accuracy over the run (trapezoids over steps), in points."""
    steps = [s for s, _ in curve]
    area = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(curve, curve[1:]))
    return 100 * area / (steps[-1] - steps[0])


def mean_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float, float]]:
    """``(step, mean, sd)`` over seeds at each evaluated step."""
    out = []
    for points in zip(*curves):
        values = [v for _, v in points]
        out.append((points[0][0], statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0))
    return out


def summarise_arm(histories: list[list[dict[str, Any]]], outcome_final: float | None) -> dict[str, Any]:
    curves = [eval_curve(h) for h in histories]
    finals = [c[-1][1] for c in curves]
    aucs = [auc(c) for c in curves]
    mean = mean_curve(curves)
    reached = None if outcome_final is None else next((s for s, m, _ in mean if m >= outcome_final), None)
    return {
        "final_accuracy_mean": round(statistics.fmean(finals), 4),
        "final_accuracy_sd": round(statistics.stdev(finals), 4) if len(finals) > 1 else 0.0,
        "auc": round(statistics.fmean(aucs), 2),
        "auc_per_seed": [round(a, 2) for a in aucs],
        "start_accuracy_mean": round(statistics.fmean(c[0][1] for c in curves), 4),
        "steps_to_outcome_final": reached,
        # Groups whose completions all got the same reward give GRPO no gradient.
        "zero_std_group_fraction": training_mean(histories, "frac_reward_zero_std"),
        "prm_outcome_corr": training_mean(histories, "reasonflux/prm_outcome_corr"),
        "curve": [{"step": s, "mean": round(m, 4), "sd": round(sd, 4)} for s, m, sd in mean],
    }


def compare(arms: dict[str, dict[str, Any]], steps: int) -> dict[str, Any]:
    """The best sequence-level PRM arm against outcome only: AUC gain and its significance, steps to reach, the
    target (dense arms are [`compare_dense`]'s)."""
    prm_arms = [a for a in arms if a != OUTCOME and not dense(a)]
    if OUTCOME not in arms or not prm_arms:
        return {"best_prm_arm": None, "target_met": None, "finding": "needs outcome_only and a PRM arm"}
    best = max(prm_arms, key=lambda a: arms[a]["auc"])
    gain, error = auc_gain(arms[best], arms[OUTCOME])
    significant = gain > 2 * error
    reached = arms[best]["steps_to_outcome_final"]
    fast_enough = reached is not None and reached <= STEPS_FRACTION_TARGET * steps
    result = {
        "best_prm_arm": best,
        "auc_gain_vs_outcome": round(gain, 2),
        "auc_gain_standard_error": None if math.isinf(error) else round(error, 2),
        "auc_gain_significant": significant,
        "best_prm_arm_steps_to_outcome_final": reached,
        "target": f"best PRM arm reaches outcome_only's final accuracy in <= {STEPS_FRACTION_TARGET:.2f} of the "
                  f"{steps} steps, beyond seed noise",
        "target_met": bool(fast_enough and significant),
    }
    if not result["target_met"]:
        result["finding"] = (
            f"{best} reached outcome_only's final accuracy at step {reached} of {steps} "
            f"({'within' if fast_enough else 'not within'} 2/3 of the steps); AUC gain {gain:+.1f} points against a "
            f"standard error of {error:.1f} ({'beyond' if significant else 'within'} seed noise). "
            + _why(arms[OUTCOME])
        )
    return result


def dense(arm: str) -> bool:
    """Whether ``arm`` puts the PRM's step scores on the tokens (``prm_credit`` other than ``sequence``)."""
    return ARMS[arm].get("prm_credit", "sequence") != "sequence"


def auc_gain(arm: dict[str, Any], baseline: dict[str, Any]) -> tuple[float, float]:
    """AUC of ``arm`` minus that of ``baseline`` (points), and the standard error of that difference over seeds."""
    seeds = [arm["auc_per_seed"], baseline["auc_per_seed"]]
    n = len(seeds[0])
    error = math.sqrt(sum(statistics.variance(s) / n for s in seeds)) if n > 1 else float("inf")
    return arm["auc"] - baseline["auc"], error


def compare_dense(arms: dict[str, dict[str, Any]], steps: int) -> dict[str, Any]:
    """The best dense-credit arm against outcome only (steps to its final accuracy) and against the sequence-level
    arm of the same beta (AUC gain beyond seed noise)."""
    dense_arms = [a for a in arms if dense(a)]
    if not dense_arms or OUTCOME not in arms or SEQUENCE_ARM not in arms:
        return {}
    best = max(dense_arms, key=lambda a: arms[a]["auc"])
    gain, error = auc_gain(arms[best], arms[SEQUENCE_ARM])
    reached = arms[best]["steps_to_outcome_final"]
    fast_enough = reached is not None and reached <= DENSE_STEPS_FRACTION_TARGET * steps
    significant = gain > 2 * error
    result = {
        "best_dense_arm": best,
        "steps_to_outcome_final": reached,
        "auc_gain_vs_sequence": round(gain, 2),
        "auc_gain_vs_sequence_standard_error": None if math.isinf(error) else round(error, 2),
        "auc_gain_vs_sequence_significant": significant,
        "target": f"best dense arm reaches outcome_only's final accuracy in <= {DENSE_STEPS_FRACTION_TARGET:.2f} of "
                  f"the {steps} steps, and beats {SEQUENCE_ARM}'s AUC beyond seed noise",
        "target_met": bool(fast_enough and significant),
    }
    result["per_arm"] = {arm: _against_baselines(arms, arm) for arm in dense_arms}
    if not result["target_met"]:
        result["finding"] = (
            f"{best} reached outcome_only's final accuracy at step {reached} of {steps} "
            f"({'within' if fast_enough else 'not within'} half the steps); AUC {gain:+.1f} points against "
            f"{SEQUENCE_ARM}, standard error {error:.1f} ({'beyond' if significant else 'within'} seed noise)."
        )
    return {"dense_credit": result}


def _against_baselines(arms: dict[str, dict[str, Any]], arm: str) -> dict[str, Any]:
    """One arm's AUC gain (and its standard error) against outcome only and against the sequence-level arm."""
    out: dict[str, Any] = {"steps_to_outcome_final": arms[arm]["steps_to_outcome_final"]}
    for name, baseline in (("outcome", OUTCOME), ("sequence", SEQUENCE_ARM)):
        gain, error = auc_gain(arms[arm], arms[baseline])
        out[f"auc_gain_vs_{name}"] = round(gain, 2)
        out[f"auc_gain_vs_{name}_standard_error"] = None if math.isinf(error) else round(error, 2)
    return out


def _why(outcome: dict[str, Any]) -> str:
    """What the outcome-only arm's logs say about the room a sequence-level PRM reward has to help."""
    zero, corr = outcome["zero_std_group_fraction"], outcome["prm_outcome_corr"]
    if zero is None or corr is None:
        return ""
    return (
        f"The outcome reward alone already separates the completions of {1 - zero:.0%} of groups (only {zero:.1%} "
        f"had equal rewards), and the PRM's trajectory score correlates {corr:.2f} with the outcome: mixed in at "
        "the sequence level, the PRM re-ranks completions within groups but gives no credit to the step that went "
        "wrong, since every token of a completion still gets one advantage."
    )


def plot(arms: dict[str, dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=120)
    for name, arm in arms.items():
        steps = [p["step"] for p in arm["curve"]]
        means = [p["mean"] for p in arm["curve"]]
        sds = [p["sd"] for p in arm["curve"]]
        line, = axis.plot(steps, means, marker="o", linewidth=2 if name != OUTCOME else 2.5, label=name)
        axis.fill_between(steps, [m - s for m, s in zip(means, sds)], [m + s for m, s in zip(means, sds)],
                          color=line.get_color(), alpha=0.15)
    axis.set(xlabel="optimizer step", ylabel="held-out accuracy (sampled, T=1)",
             title="The lab: held-out accuracy by reward (mean ± sd over seeds)")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def measure(arm_names: list[str], seeds: int, steps: int, eval_steps: int, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    histories = {arm: [run_arm(arm, seed, steps, eval_steps, out) for seed in range(seeds)] for arm in arm_names}
    outcome_final = (statistics.fmean(eval_curve(h)[-1][1] for h in histories[OUTCOME])
                     if OUTCOME in histories else None)
    arms = {arm: summarise_arm(h, outcome_final) for arm, h in histories.items()}
    build = json.loads((ASSETS / "lab.json").read_text())
    report = {
        "benchmark": "learning", "recipe": str(RECIPE.relative_to(REPO)), "steps": steps, "eval_steps": eval_steps,
        "seeds": seeds, "arms_settings": {a: ARMS[a] for a in arm_names},
        "prm_step_accuracy": round(build["prm"]["step_accuracy"], 4),
        "prm_wrong_step_recall": round(build["prm"]["wrong_step_recall"], 4),
        "policy_start_accuracy": round(build["policy_sampled"]["accuracy"], 4),
        "arms": arms,
        **compare(arms, steps),
        **compare_dense(arms, steps),
        # Training time of every run, reused ones included (train_runtime, evaluation included), and this call's.
        "train_seconds_total": round(sum(
            json.loads((out / f"{arm}-seed{seed}" / "train_results.json").read_text())["train_runtime"]
            for arm in arm_names for seed in range(seeds))),
        "seconds": round(time.perf_counter() - start),
    }
    figure = plot(arms, out / "learning.png")
    report["figure"] = None if figure is None else str(figure)
    (out / "learning.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 20 steps: a check in a few minutes")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated arms (of {list(ARMS)})")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="where runs, learning.json and learning.png go")
    args = parser.parse_args()
    arm_names = args.arms.split(",")
    unknown = set(arm_names) - set(ARMS)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")
    seeds, steps = (1, 20) if args.quick else (args.seeds, args.steps)
    out = args.out or Path(tempfile.mkdtemp(prefix="learning-"))
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):
        report = measure(arm_names, seeds, steps, args.eval_steps, out)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
