"""The lab: its task's judge, its shipped data and assets, its build, and a training run on it."""

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from reasonflux_rl.data import lab_path, load_table
from reasonflux_rl.lab.build import LabBuildArguments, build_lab, prm_accuracy, summary
from reasonflux_rl.lab.task import FUNCTIONS, Problem, dataset_rows, problems, solve, step_labels, write
from reasonflux_rl.prm import load_scorer

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "reasonflux_rl/lab/assets"


@pytest.mark.parametrize("seed", range(5))
def test_the_judge_labels_written_solutions_as_they_were_written(seed):
    rng = random.Random(seed)
    for problem in rng.sample(problems("train"), 40):
        written = write(problem, 0.4, rng, answer_corruption=0.3)
        assert step_labels(problem, written.completion) == list(written.labels)
        # Right steps give the right answer; wrong steps can still land on it (the functions are permutations),
        # which the outcome reward cannot see and the PRM can.
        if all(written.labels):
            assert written.answer == problem.answer


def test_a_right_solution_applies_the_functions_in_turn():
    problem = Problem(start=5, first="H", second="G", times=3)
    values = [5]
    for step in solve(problem):
        assert step.digit == values[-1]
        values.append(FUNCTIONS[step.function][step.digit])
    assert [s.function for s in solve(problem)] == ["H", "G", "H"] and problem.answer == values[-1]


def test_shipped_problems_are_what_the_task_writes_and_the_splits_are_disjoint():
    for split in ("train", "test"):
        shipped = [json.loads(line) for line in lab_path(split).read_text().splitlines()]
        assert shipped == dataset_rows(split) == load_table("builtin:lab", split=split).to_list()
    train = {r["problem"] for r in dataset_rows("train")}
    test = {r["problem"] for r in dataset_rows("test")}
    assert train and test and not train & test


def test_the_shipped_prm_tells_right_steps_from_wrong_ones():
    scorer = load_scorer(ASSETS / "prm", device="cpu", system_prompt=None, thinking_prefilled=True)
    assert scorer.kind == "step_classifier"
    measured = prm_accuracy(scorer.model, scorer.tokenizer, problems("eval"), LabBuildArguments(), count=60)
    report = json.loads((ASSETS / "lab.json").read_text())
    assert measured["step_accuracy"] >= 0.9 and measured["wrong_step_recall"] >= 0.8
    assert report["prm"]["step_accuracy"] >= 0.9 and 0.3 <= report["policy_sampled"]["accuracy"] <= 0.5


def test_build_at_reduced_size_writes_loadable_assets(tmp_path):
    args = LabBuildArguments(out=str(tmp_path / "lab"), sft_examples=128, sft_epochs=1, prm_examples=128,
                             prm_epochs=1, layers=1, hidden=32, eval_samples=1)
    paths = build_lab(args)
    report = json.loads(paths.report.read_text())
    for part in ("policy_sampled", "policy_greedy", "prm"):
        assert all(0.0 <= value <= 1.0 for value in report[part].values())
    assert report["arguments"]["hidden"] == 32 and report["held_out_problems"] == len(problems("eval"))
    # The PRM was trained by prm train, which evaluated it on held-out problems before and after.
    assert report["prm_training"].startswith("held-out step accuracy ")
    assert json.loads((paths.prm / "prm_training.json").read_text())["objective"]["lambda_final"] == 0.0
    assert re.match(r"policy: held-out accuracy \d+% sampled", summary(report))
    policy = AutoModelForCausalLM.from_pretrained(paths.policy)
    assert policy.config.hidden_size == 32
    scorer = load_scorer(paths.prm, device="cpu", system_prompt=None, thinking_prefilled=True)
    problem = problems("eval")[0]
    [result] = scorer.score([problem.text], [write(problem, 0.0, random.Random(0)).completion])
    assert len(result.step_scores) == problem.times + 1


def test_the_default_run_trains_on_the_lab_and_says_what_happened(tmp_path):
    command = [sys.executable, "-m", "reasonflux_rl.train", "--config", "recipes/lab/cpu.yaml", "--max_steps", "2",
               "--eval_steps", "2", "--output_dir", str(tmp_path), "--report_to", "none"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"held-out accuracy \d+% -> \d+% in 2 steps \(\dm\d\ds\); PRM-outcome correlation", proc.stdout)
    history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    evaluations = [e for e in history if "eval_outcome/accuracy" in e]
    assert [e["step"] for e in evaluations] == [0, 2]
    steps = [e for e in history if "reasonflux/mixed_mean" in e]
    for metric in ("outcome_mean", "prm_mean", "prm_std", "prm_normalised_mean", "beta", "steps_mean",
                   "dropped_step_frac", "prm_missing", "outcome_missing", "prm_outcome_corr", "prm_unavailable"):
        assert all(f"reasonflux/{metric}" in e for e in steps), metric
    assert (tmp_path / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
