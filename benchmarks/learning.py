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

``--lab r1`` runs the R1-style lab instead (docs/lab.md#the-r1-style-lab): ``recipes/lab/r1_cpu.yaml`` on its
shipped policy and two PRMs that err (``standard``, never shown a thinking trajectory, and ``trajectory_aware``),
with the budget of ``R1_BUDGET`` (4 problems x 8 completions per step, 40 steps at a learning rate of 4e-5, held-out
accuracy every 10 steps from 4 samples of each of the 47 held-out problems), the arms of ``R1_ARMS`` and 4 seeds.
Besides the curve, each arm reports the hacking diagnostics of its training logs (the PRM's mean, steps per
completion, single- and no-step completions, completion length and clipping, the share of self-correcting thinking
paragraphs, completions without a boxed answer: first tenth of training against last third) and, per seed and as a
majority, ``hacked`` and ``collapsed`` by ``reasonflux_rl.train.verdict.safety``'s rules. ``hypotheses`` gives each of
the five claims the lab tests a verdict (``r1_hypotheses``: supported, contradicted or inconclusive, with the AUC
differences and their standard errors over seeds, or the hacked/collapsed counts), and ``targets`` the two targets.
The arms, budget and rules were fixed before any of its runs was looked at. ``prm_unfinished``
(``unfinished_scores``), added after the runs to find out why the trajectory-aware arms were hacked: each PRM's
mean score of written held-out solutions, right and wrong, and of the same trajectories cut before ``</think>``.

The two ``reasonflux_targets`` arms (the fifth claim) were added later, with the PRM that
``benchmarks/lab_r1_reasonflux.py`` trains from the paper's own step targets, fixed before their runs.

Runs land in ``--out``; running again with the same ``--out`` reuses the runs that finished (their
``trainer_state.json`` and ``train_results.json`` are all it reads, so committed ones are reused too).
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
R1_RECIPE = REPO / "recipes/lab/r1_cpu.yaml"
R1_ASSETS = ASSETS / "r1"
R1_PRMS = {**{name: str(R1_ASSETS / f"prm_{name}") for name in ("standard", "trajectory_aware")},
           # The trajectory-aware PRM trained from the paper's own step targets (benchmarks/lab_r1_reasonflux.py).
           "reasonflux_targets": str(REPO / "benchmarks/results/lab_r1_reasonflux/prm")}
# The R1-style lab's budget, fixed before its first run: half the chains lab's batch and 40 steps at twice its
# learning rate. Estimated at 3 minutes a run (44 in about 2 hours); measured 3 to 5 minutes alone on 2 cores (44
# runs: about 3 hours), kept as fixed so that every arm runs the same budget.
R1_BUDGET = {"per_device_train_batch_size": "32", "learning_rate": "4e-5", "num_generations_eval": "4",
             "per_device_eval_batch_size": "64"}
R1_STEPS, R1_EVAL_STEPS, R1_SEEDS = 40, 10, 4
# --quick: a check of the script, not a measurement: one problem's group per step, 2 samples per held-out problem.
R1_QUICK_BUDGET = {"per_device_train_batch_size": "8", "num_generations_eval": "2", "per_device_eval_batch_size": "94",
                   "max_completion_length": "64"}


def _prm_arm(prm: str, beta: str, credit: str = "sequence", transform: str = "none") -> dict[str, str]:
    arm = {"prm_name_or_path": R1_PRMS[prm], "prm_beta": beta, "prm_normalisation": "none"}
    if credit != "sequence":
        arm["prm_credit"] = credit
    if transform != "none":
        arm["prm_step_transform"] = transform
    return arm


R1_ARMS: dict[str, dict[str, str]] = {
    "outcome_only": {"prm_beta": "0"},
    "standard_sequence": _prm_arm("standard", "0.5"),
    "standard_suffix_sum": _prm_arm("standard", "0.5", "suffix_sum"),
    "trajectory_aware_sequence": _prm_arm("trajectory_aware", "0.5"),
    "trajectory_aware_suffix_sum": _prm_arm("trajectory_aware", "0.5", "suffix_sum"),
    "trajectory_aware_soft_min": _prm_arm("trajectory_aware", "0.5", "soft_min"),
    "trajectory_aware_suffix_sum_clip": _prm_arm("trajectory_aware", "0.5", "suffix_sum", "clip"),
    "trajectory_aware_suffix_sum_delta": _prm_arm("trajectory_aware", "0.5", "suffix_sum", "delta"),
    # Probes of hacking: the PRM alone.
    "standard_only": _prm_arm("standard", "1"),
    "trajectory_aware_only": _prm_arm("trajectory_aware", "1"),
    "trajectory_aware_only_suffix_sum": _prm_arm("trajectory_aware", "1", "suffix_sum"),
    # Added with the reasonflux-targets PRM, fixed before their runs: the paper's use and the safe credit.
    "reasonflux_targets_sequence": _prm_arm("reasonflux_targets", "0.5"),
    "reasonflux_targets_soft_min": _prm_arm("reasonflux_targets", "0.5", "soft_min"),
}
REASONFLUX_ARMS = ("reasonflux_targets_sequence", "reasonflux_targets_soft_min")
REASONFLUX_BASELINES = ("trajectory_aware_sequence", "trajectory_aware_soft_min")
OUTCOME = "outcome_only"
SEQUENCE_ARM = "prm_mixed_beta0.5"
STEPS_FRACTION_TARGET = 2 / 3
DENSE_STEPS_FRACTION_TARGET = 1 / 2
EVAL_KEY = "eval_outcome/accuracy"


def run_arm(arm: str, seed: int, steps: int, eval_steps: int, out: Path, settings: dict[str, str] | None = None,
            recipe: Path = RECIPE) -> list[dict[str, Any]]:
    """Train one arm with one seed (a finished run of the same length in ``out`` is reused); its log history.
    ``settings``: the keys set on top of ``recipe`` (default: the chains lab's ``ARMS[arm]``)."""
    output_dir = out / f"{arm}-seed{seed}"
    state = output_dir / "trainer_state.json"
    if state.exists() and json.loads(state.read_text())["global_step"] == steps:
        return json.loads(state.read_text())["log_history"]
    overrides = [x for key, value in (ARMS[arm] if settings is None else settings).items() for x in (f"--{key}", value)]
    command = [sys.executable, "-m", "reasonflux_rl.train", "--config", str(recipe), "--seed", str(seed),
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


# The R1-style lab's diagnostics: each a logged training metric, read over the first tenth and the last third.
DIAGNOSTICS = {
    "prm_mean": "reasonflux/prm_mean", "steps_per_completion": "reasonflux/steps_mean",
    "single_step_frac": "reasonflux/single_step_frac", "no_step_frac": "reasonflux/no_step_frac",
    "completion_length": "completions/mean_length", "clipped_frac": "completions/clipped_ratio",
    "correction_frac": "reasonflux/correction_frac", "no_boxed_frac": "reasonflux/no_boxed_frac",
    "train_accuracy": "outcome/accuracy", "zero_std_group_frac": "frac_reward_zero_std",
}
# A verdict needs the difference beyond twice its standard error over seeds; a rate of hacked (or collapsed) seeds
# needs at least half of an arm's seeds against at most a quarter of its comparison's.
MAJORITY, FEW = 0.5, 0.25


def diagnostics(histories: list[list[dict[str, Any]]], steps: int) -> dict[str, dict[str, float | None]]:
    """Each of ``DIAGNOSTICS`` over the first tenth and the last third of training, averaged over seeds."""
    def window(key: str, low: float, high: float) -> float | None:
        values = [e[key] for h in histories for e in h
                  if key in e and EVAL_KEY not in e and low <= e.get("step", 0) <= high]
        return round(statistics.fmean(values), 4) if values else None
    return {name: {"first_tenth": window(key, 1, max(1, steps / 10)), "last_third": window(key, steps * 2 / 3, steps)}
            for name, key in DIAGNOSTICS.items()}


def summarise_r1_arm(histories: list[list[dict[str, Any]]], outcome_final: float | None, steps: int) -> dict:
    """[`summarise_arm`] plus the hacking diagnostics and, per seed and as a majority, ``hacked``/``collapsed``."""
    from reasonflux_rl.train.verdict import safety

    checks = [safety(h) for h in histories]
    hacked, collapsed = [c.hacked for c in checks], [c.collapsed for c in checks]
    return {
        **summarise_arm(histories, outcome_final),
        "hacked": sum(hacked) / len(hacked) >= MAJORITY, "hacked_seeds": sum(hacked),
        "collapsed": sum(collapsed) / len(collapsed) >= MAJORITY, "collapsed_seeds": sum(collapsed),
        "diagnostics": diagnostics(histories, steps),
    }


def _difference(arms: dict[str, dict[str, Any]], arm: str, baseline: str) -> dict[str, Any]:
    gain, error = auc_gain(arms[arm], arms[baseline])
    verdict = ("supported" if gain > 2 * error else "contradicted" if gain < -2 * error else "inconclusive")
    return {"arm": arm, "against": baseline, "auc_difference": round(gain, 2),
            "standard_error": None if math.isinf(error) else round(error, 2), "verdict": verdict}


def _unsafe_share(arm: dict[str, Any], seeds: int) -> float:
    return max(arm["hacked_seeds"], arm["collapsed_seeds"]) / seeds


def r1_hypotheses(arms: dict[str, dict[str, Any]], seeds: int) -> dict[str, dict[str, Any]]:
    """The five claims, each ``supported``, ``contradicted`` or ``inconclusive`` with its numbers (arms missing from
    the run: ``inconclusive``, with the reason)."""
    def best(names: list[str]) -> str | None:
        present = [n for n in names if n in arms]
        return max(present, key=lambda n: arms[n]["auc"]) if present else None

    mixed_standard = best(["standard_sequence", "standard_suffix_sum"])
    mixed_aware = best([a for a in R1_ARMS if a.startswith("trajectory_aware_") and "_only" not in a])
    out: dict[str, dict[str, Any]] = {}
    out["trajectory_aware_teaches_faster"] = (
        _difference(arms, mixed_aware, mixed_standard) if mixed_aware and mixed_standard
        else {"verdict": "inconclusive", "why": "needs a trajectory-aware and a standard mixed arm"})

    sums = [a for a in ("trajectory_aware_suffix_sum", "trajectory_aware_only_suffix_sum") if a in arms]
    guarded = [a for a in ("trajectory_aware_soft_min", "trajectory_aware_suffix_sum_clip",
                           "trajectory_aware_suffix_sum_delta") if a in arms]
    if sums and guarded:
        sum_share = max(_unsafe_share(arms[a], seeds) for a in sums)
        guarded_share = max(_unsafe_share(arms[a], seeds) for a in guarded)
        verdict = ("supported" if sum_share >= MAJORITY and guarded_share <= FEW
                   else "contradicted" if sum_share <= guarded_share else "inconclusive")
        out["sum_form_credit_hacks"] = {
            "verdict": verdict, "unsafe_seed_share": {a: _unsafe_share(arms[a], seeds) for a in sums + guarded},
            "auc_against_suffix_sum": [_difference(arms, a, "trajectory_aware_suffix_sum") for a in guarded
                                       if "trajectory_aware_suffix_sum" in arms]}
    else:
        out["sum_form_credit_hacks"] = {"verdict": "inconclusive", "why": "needs suffix_sum and a guarded arm"}

    pairs = [(alone, mixed) for alone, mixed in (("standard_only", "standard_sequence"),
                                                 ("trajectory_aware_only", "trajectory_aware_sequence"),
                                                 ("trajectory_aware_only_suffix_sum", "trajectory_aware_suffix_sum"))
             if alone in arms and mixed in arms]
    if pairs:
        hacked_alone = [a for a, _ in pairs if arms[a]["hacked_seeds"] / seeds >= MAJORITY]
        prevented = [m for a, m in pairs if a in hacked_alone and arms[m]["hacked_seeds"] / seeds <= FEW]
        verdict = ("inconclusive" if not hacked_alone
                   else "supported" if len(prevented) == len(hacked_alone)
                   else "contradicted" if not prevented else "inconclusive")
        out["mixing_prevents_hacking"] = {
            "verdict": verdict, "hacked_seeds": {n: arms[n]["hacked_seeds"] for pair in pairs for n in pair},
            "prm_alone_arms_hacked": hacked_alone,
            **({"why": "no PRM-alone arm was hacked in most seeds"} if not hacked_alone else {})}
    else:
        out["mixing_prevents_hacking"] = {"verdict": "inconclusive", "why": "needs a PRM-alone arm and its mix"}

    dense_aware = best([a for a in ("trajectory_aware_suffix_sum", "trajectory_aware_soft_min",
                                    "trajectory_aware_suffix_sum_clip", "trajectory_aware_suffix_sum_delta")])
    out["step_credit_beats_sequence"] = (
        _difference(arms, dense_aware, "trajectory_aware_sequence")
        if dense_aware and "trajectory_aware_sequence" in arms
        else {"verdict": "inconclusive", "why": "needs trajectory_aware_sequence and a dense arm"})
    if "standard_suffix_sum" in arms and "standard_sequence" in arms:
        out["step_credit_beats_sequence"]["standard"] = _difference(arms, "standard_suffix_sum", "standard_sequence")
    out["reasonflux_targets_help"] = _reasonflux_targets(arms, seeds)
    return out


def _reasonflux_targets(arms: dict[str, dict[str, Any]], seeds: int) -> dict[str, Any]:
    """The fifth claim: the PRM trained from the paper's step targets, at the sequence level (the paper's use), is
    not hacked where the judge-labelled one was, and teaches faster than that one and than the outcome alone."""
    new, old = REASONFLUX_ARMS[0], REASONFLUX_BASELINES[0]
    if not {new, old, OUTCOME} <= set(arms):
        return {"verdict": "inconclusive", "why": f"needs {new}, {old} and {OUTCOME}"}
    against = [_difference(arms, new, old), _difference(arms, new, OUTCOME)]
    hacked = {arm: arms[arm]["hacked_seeds"] for arm in (*REASONFLUX_ARMS, *REASONFLUX_BASELINES) if arm in arms}
    verdicts, unsafe = {d["verdict"] for d in against}, _unsafe_share(arms[new], seeds) >= MAJORITY
    verdict = ("supported" if verdicts == {"supported"} and not unsafe
               else "contradicted" if "contradicted" in verdicts or unsafe else "inconclusive")
    return {"verdict": verdict, "hacked_seeds": hacked, "auc": against}


def r1_targets(arms: dict[str, dict[str, Any]], steps: int) -> dict[str, Any]:
    """The two targets: the best PRM arm reaches outcome-only's final accuracy in at most half the steps with an AUC
    beyond outcome-only's by more than seed noise; the best trajectory-aware arm beats the best standard arm."""
    prm_arms = [a for a in arms if a != OUTCOME]
    if OUTCOME not in arms or not prm_arms:
        return {"met": None, "why": "needs outcome_only and a PRM arm"}
    best = max(prm_arms, key=lambda a: arms[a]["auc"])
    gain, error = auc_gain(arms[best], arms[OUTCOME])
    reached = arms[best]["steps_to_outcome_final"]
    faster = {"best_prm_arm": best, "steps_to_outcome_final": reached, "auc_gain_vs_outcome": round(gain, 2),
              "standard_error": None if math.isinf(error) else round(error, 2),
              "met": bool(reached is not None and reached <= steps / 2 and gain > 2 * error)}
    aware = [a for a in prm_arms if a.startswith("trajectory_aware")]
    standard = [a for a in prm_arms if a.startswith("standard")]
    result: dict[str, Any] = {"half_the_steps": faster}
    if aware and standard:
        comparison = _difference(arms, max(aware, key=lambda a: arms[a]["auc"]),
                                 max(standard, key=lambda a: arms[a]["auc"]))
        result["trajectory_aware_beats_standard"] = {**comparison, "met": comparison["verdict"] == "supported"}
    return result


def outcome_final(histories: dict[str, list[list[dict[str, Any]]]]) -> float | None:
    """The outcome-only arm's final held-out accuracy, averaged over seeds (``None`` without that arm)."""
    if OUTCOME not in histories:
        return None
    return statistics.fmean(eval_curve(h)[-1][1] for h in histories[OUTCOME])


def train_seconds(out: Path, arm_names: list[str], seeds: int) -> int:
    """Training time of every run, reused ones included (``train_runtime``, evaluation included)."""
    return round(sum(json.loads((out / f"{arm}-seed{seed}" / "train_results.json").read_text())["train_runtime"]
                     for arm in arm_names for seed in range(seeds)))


def unfinished_rows(count: int = 96) -> list[dict[str, Any]]:
    """``count`` written held-out solutions in the style the R1 PRMs were trained on (labelled rows)."""
    import random

    from reasonflux_rl.lab.build import TASKS, LabBuildArguments
    from reasonflux_rl.lab.task import problems
    from reasonflux_rl.lab.thinking import ThinkingStyle, labelled_r1_solutions

    style = ThinkingStyle(*LabBuildArguments().prm_thinking)
    return labelled_r1_solutions(problems("eval", lengths=TASKS["r1"].lengths), count, style,
                                 random.Random("unfinished"))


def prm_unfinished(prm: str | Path, rows: list[dict[str, Any]]) -> dict[str, float]:
    """A PRM's mean score, as the reward reads a completion (mean over its steps), of ``rows``'s trajectories by
    whether their answer is right, and of the same trajectories cut before ``</think>`` (no answer: how a completion
    clipped at the length limit reads). A PRM that scores the cut trajectories above the finished ones pays the
    policy for never answering."""
    from reasonflux_rl.lab.task import boxed_answer
    from reasonflux_rl.prm import load_scorer
    from reasonflux_rl.rewards.prm import PRMReward

    texts = [r["problem"] for r in rows]
    right = [boxed_answer(r["completion"]) == int(r["solution"]) for r in rows]
    reward = PRMReward(load_scorer(str(prm), system_prompt="", thinking_prefilled=True, device="cpu"),
                       thinking_prefilled=True)
    finished = reward(prompts=texts, completions=[r["completion"] for r in rows], problem=texts)
    cut = reward(prompts=texts, completions=[r["completion"].split("</think>")[0] for r in rows], problem=texts)
    return {"finished_right": round(statistics.fmean(s for s, ok in zip(finished, right) if ok), 4),
            "finished_wrong": round(statistics.fmean(s for s, ok in zip(finished, right) if not ok), 4),
            "unfinished": round(statistics.fmean(cut), 4), "rows": len(rows), "right": sum(right)}


def unfinished_scores(count: int = 96) -> dict[str, dict[str, float]]:
    """[`prm_unfinished`] of each R1 PRM on the same ``count`` held-out solutions ([`unfinished_rows`])."""
    rows = unfinished_rows(count)
    return {name: prm_unfinished(path, rows) for name, path in R1_PRMS.items()}


def measure_r1(arm_names: list[str], seeds: int, steps: int, eval_steps: int, out: Path,
               budget: dict[str, str]) -> dict[str, Any]:
    """The R1-style lab's runs and their report (see the module docstring)."""
    start = time.perf_counter()
    # Seed by seed, so that a call stopped half-way leaves every arm with the same seeds done.
    runs = {(arm, seed): run_arm(arm, seed, steps, eval_steps, out, {**budget, **R1_ARMS[arm]}, R1_RECIPE)
            for seed in range(seeds) for arm in arm_names}
    histories = {arm: [runs[arm, seed] for seed in range(seeds)] for arm in arm_names}
    arms = {arm: summarise_r1_arm(h, outcome_final(histories), steps) for arm, h in histories.items()}
    build = json.loads((R1_ASSETS / "lab.json").read_text())
    report = {
        "benchmark": "learning", "lab": "r1", "recipe": str(R1_RECIPE.relative_to(REPO)), "budget": budget,
        "steps": steps, "eval_steps": eval_steps, "seeds": seeds,
        "arms_settings": {a: {k: v.replace(str(REPO) + "/", "") for k, v in R1_ARMS[a].items()} for a in arm_names},
        "policy_start_accuracy": round(build["policy_sampled"]["accuracy"], 4),
        "prm_held_out": {name: {k: round(v, 4) for k, v in prm["held_out"].items() if isinstance(v, float)}
                         for name, prm in build["prms"].items()},
        "prm_unfinished": unfinished_scores(),
        "arms": arms,
        "hypotheses": r1_hypotheses(arms, seeds),
        "targets": r1_targets(arms, steps),
        "train_seconds_total": train_seconds(out, arm_names, seeds),
        "seconds": round(time.perf_counter() - start),
    }
    figure = plot(arms, out / "learning_r1.png", "The R1-style lab: held-out accuracy by reward (mean ± sd over seeds)")
    report["figure"] = None if figure is None else str(figure)
    # The fifth claim's arms beside their baselines, readable apart from the other eleven.
    fifth = {a: arms[a] for a in (OUTCOME, *REASONFLUX_BASELINES, *REASONFLUX_ARMS) if a in arms}
    if any(a in arms for a in REASONFLUX_ARMS):
        figure = plot(fifth, out / "learning_r1_reasonflux.png",
                      "PRM from reasonflux targets against the judge-labelled PRM (mean ± sd over seeds)")
        report["figure_reasonflux_targets"] = None if figure is None else str(figure)
    (out / "learning_r1.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def plot(arms: dict[str, dict[str, Any]], path: Path,
         title: str = "The lab: held-out accuracy by reward (mean ± sd over seeds)") -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axis = plt.subplots(figsize=(9, 4.5), dpi=120)
    # Eleven arms overrun the default cycle of ten colours: each arm its own, outcome-only black and dashed.
    colours = plt.get_cmap("tab20").colors
    for index, (name, arm) in enumerate(arms.items()):
        steps = [p["step"] for p in arm["curve"]]
        means = [p["mean"] for p in arm["curve"]]
        sds = [p["sd"] for p in arm["curve"]]
        colour = "black" if name == OUTCOME else colours[(2 * index) % 20 + (index >= 10)]
        axis.plot(steps, means, marker="o", color=colour, linewidth=2.5 if name == OUTCOME else 1.8,
                  linestyle="--" if name == OUTCOME else "-", label=name)
        axis.fill_between(steps, [m - s for m, s in zip(means, sds)], [m + s for m, s in zip(means, sds)],
                          color=colour, alpha=0.08)
    axis.set(xlabel="optimizer step", ylabel="held-out accuracy (sampled, T=1)", title=title)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def measure(arm_names: list[str], seeds: int, steps: int, eval_steps: int, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    histories = {arm: [run_arm(arm, seed, steps, eval_steps, out) for seed in range(seeds)] for arm in arm_names}
    arms = {arm: summarise_arm(h, outcome_final(histories)) for arm, h in histories.items()}
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
        "train_seconds_total": train_seconds(out, arm_names, seeds),
        "seconds": round(time.perf_counter() - start),
    }
    figure = plot(arms, out / "learning.png")
    report["figure"] = None if figure is None else str(figure)
    (out / "learning.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", choices=("chains", "r1"), default="chains",
                        help="chains: the lab of clean chains and an exact PRM; r1: the R1-style lab, PRMs that err")
    parser.add_argument("--quick", action="store_true", help="chains: 1 seed, 20 steps; r1: 1 seed, 4 steps of 2 "
                        "arms (outcome_only, trajectory_aware_suffix_sum unless --arms), 8 completions per step")
    parser.add_argument("--arms", default=None, help=f"comma-separated arms (chains: of {list(ARMS)}; r1: of "
                        f"{list(R1_ARMS)})")
    parser.add_argument("--seeds", type=int, default=None, help=f"default: 3 (chains), {R1_SEEDS} (r1)")
    parser.add_argument("--steps", type=int, default=None, help=f"default: 100 (chains), {R1_STEPS} (r1)")
    parser.add_argument("--eval-steps", type=int, default=None, help=f"default: 10 (chains), {R1_EVAL_STEPS} (r1)")
    parser.add_argument("--out", type=Path, default=None, help="where runs, the JSON and the PNG go")
    args = parser.parse_args()
    known = R1_ARMS if args.lab == "r1" else ARMS
    quick_arms = "outcome_only,trajectory_aware_suffix_sum" if args.lab == "r1" else ",".join(ARMS)
    arm_names = (args.arms or (quick_arms if args.quick else ",".join(known))).split(",")
    unknown = set(arm_names) - set(known)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; choose from {list(known)}")
    out = args.out or Path(tempfile.mkdtemp(prefix="learning-"))
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):
        if args.lab == "r1":
            seeds, steps, eval_steps = (1, 4, 4) if args.quick else (
                args.seeds or R1_SEEDS, args.steps or R1_STEPS, args.eval_steps or R1_EVAL_STEPS)
            budget = {**R1_BUDGET, **R1_QUICK_BUDGET} if args.quick else R1_BUDGET
            report = measure_r1(arm_names, seeds, steps, eval_steps, out, budget)
        else:
            seeds, steps = (1, 20) if args.quick else (args.seeds or 3, args.steps or 100)
            report = measure(arm_names, seeds, steps, args.eval_steps or 10, out)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
