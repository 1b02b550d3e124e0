"""The R1-style lab (reasonflux_rl/lab/thinking.py, r1_build.py): the judge's step kinds on hand-written
trajectories (a corrected detour, an uncorrected slip, an abandoned branch, a check, corrections that are false), the
writer's solutions as the judge reads them, the shipped problems and PRMs (they reproduce their build report), and
the build of its policy and two PRMs through prm train, each then driving GRPO steps."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from reasonflux_rl.data import load_table
from reasonflux_rl.lab.build import LabBuildArguments
from reasonflux_rl.lab.r1_build import PRMS, build_r1_lab, prm_figures, r1_summary, write_r1_trajectories
from reasonflux_rl.lab.task import Problem, dataset_rows, problems
from reasonflux_rl.lab.thinking import (
    CHECK,
    CORRECTION,
    RIGHT,
    WRONG_CORRECTED,
    WRONG_UNCORRECTED,
    ThinkingStyle,
    judge,
    write_solution,
)
from reasonflux_rl.prm.kinds.step_classifier_model import Qwen2ForProcessRewardModel

REPO = Path(__file__).resolve().parents[1]
# H then G from 5: H(5) = 7, G(7) = 1, H(1) = 2.
PROBLEM = Problem(5, "H", "G", 3)
CLEAN_RESPONSE = ["Step 1: H(5) = 7", "Step 2: G(7) = 1", "Step 3: H(1) = 2", "The answer is $\\boxed{2}$."]


def judged(thinking, response=CLEAN_RESPONSE, problem=PROBLEM):
    return judge(problem, "\n\n".join(thinking) + "\n</think>\n\n" + "\n\n".join(response))


def test_a_slip_noticed_and_redone_is_a_corrected_detour_not_an_error():
    verdict = judged(["Step 1: H(5) = 7", "Step 2: G(7) = 3", "Wait, G(7) is 1, not 3.", "Step 2: G(7) = 1",
                      "Step 3: H(1) = 2"])
    assert verdict.thinking == (RIGHT, WRONG_CORRECTED, CORRECTION, RIGHT, RIGHT)
    assert verdict.response == (True, True, True, True)
    assert verdict.labels == [True] * 9


def test_a_step_from_the_wrong_result_noticed_is_corrected_with_what_followed_it():
    verdict = judged(["Step 1: H(5) = 7", "Step 2: G(6) = 6", "Step 3: H(6) = 4",
                      "Wait, I should apply G to 7, not 6.", "Step 2: G(7) = 1", "Step 3: H(1) = 2"])
    # Step 3 was right after what step 2 wrote: it is dropped with step 2, but it was no error of its own.
    assert verdict.thinking == (RIGHT, WRONG_CORRECTED, RIGHT, CORRECTION, RIGHT, RIGHT)


def test_a_slip_never_noticed_is_an_error_and_the_chain_goes_on_from_it():
    response = ["Step 1: H(5) = 7", "Step 2: G(7) = 4", "Step 3: H(4) = 8", "The answer is $\\boxed{8}$."]
    verdict = judged(["Step 1: H(5) = 7", "Step 2: G(7) = 4", "Step 3: H(4) = 8"], response)
    assert verdict.thinking == (RIGHT, WRONG_UNCORRECTED, RIGHT)
    # The response restates it: its step 2 is wrong, the rest follows from what was written.
    assert verdict.response == (True, False, True, True)
    assert verdict.labels == [True, False, True, True, False, True, True]


def test_an_abandoned_line_is_corrected_by_starting_again():
    verdict = judged(["Step 1: G(5) = 3", "Step 2: H(3) = 9", "No: H comes first. Start again from 5.",
                      "Step 1: H(5) = 7", "Step 2: G(7) = 1", "Step 3: H(1) = 2"])
    assert verdict.thinking == (WRONG_CORRECTED, WRONG_CORRECTED, CORRECTION, RIGHT, RIGHT, RIGHT)


def test_a_check_of_the_last_step_is_a_check_and_a_false_one_is_an_error():
    right = judged(["Step 1: H(5) = 7", "Check: H(5) = 7. Yes.", "Step 2: G(7) = 1", "Step 3: H(1) = 2"])
    assert right.thinking == (RIGHT, CHECK, RIGHT, RIGHT)
    false = judged(["Step 1: H(5) = 6", "Check: H(5) = 6. Yes.", "Step 2: G(6) = 6", "Step 3: H(6) = 4"],
                   ["Step 1: H(5) = 6", "Step 2: G(6) = 6", "Step 3: H(6) = 4", "The answer is $\\boxed{4}$."])
    assert false.thinking == (WRONG_UNCORRECTED, WRONG_UNCORRECTED, RIGHT, RIGHT)


@pytest.mark.parametrize("correction", [
    "Wait, G(7) is 3, not 1.",               # the step was right: the "correction" is the mistake
    "Wait, G(7) is 5, not 3.",               # names the slip, gives another wrong value
    "Wait, I should apply G to 7, not 7.",   # nothing to correct
    "No: G comes first. Start again from 5.",  # the wrong order
])
def test_a_false_correction_corrects_nothing_and_is_an_error_itself(correction):
    slipped = "Step 2: G(7) = 3" if "not 3" in correction else "Step 2: G(7) = 1"
    verdict = judged(["Step 1: H(5) = 7", slipped, correction])
    assert verdict.thinking[2] == WRONG_UNCORRECTED
    assert verdict.thinking[1] == (WRONG_UNCORRECTED if slipped.endswith("3") else RIGHT)


@pytest.mark.parametrize("completion", [
    "Step 1: H(5) = 7\n\nSo it is 7, I think.\n</think>\n\nThe answer is $\\boxed{7}$.",  # not a lab form
    "Step 1: H(5) = 7\n\nStep 2: G(7) = 1",                                              # thinking never closed
    "Step 1: H(5) = 7\n</think>\n\nStep 1: H(5) = 7",                                    # no boxed answer
])
def test_what_is_not_the_labs_form_is_not_judged(completion):
    assert judge(PROBLEM, completion) is None


def test_written_solutions_read_back_as_they_were_written():
    rng, style = random.Random(0), ThinkingStyle(corrected=0.3, uncorrected=0.1, abandoned=0.3, recheck=0.2)
    every = problems("train", lengths=(6, 7, 8))
    kinds, steps = {k: 0 for k in (RIGHT, WRONG_CORRECTED, WRONG_UNCORRECTED, CORRECTION, CHECK)}, 0
    for _ in range(400):
        problem = rng.choice(every)
        solution = write_solution(problem, style, rng)
        verdict = judge(problem, solution.completion)
        assert verdict is not None and len(verdict.labels) == len(solution.thinking) + len(solution.response)
        for kind in verdict.thinking:
            kinds[kind] += 1
        steps += problem.times
        # The response restates the chain the thinking ended with: as many wrong steps as slips left standing.
        assert verdict.response.count(False) == verdict.thinking.count(WRONG_UNCORRECTED)
        assert verdict.response[-1]  # its answer is its own last result
    # Per step: corrected slips at 0.3, uncorrected at 0.1, checks of right steps at 0.2 (of 0.9 right).
    assert kinds[CORRECTION] / steps == pytest.approx(0.3 + 0.3 / 7, abs=0.03)  # and one restart per abandoned line
    assert kinds[WRONG_UNCORRECTED] / steps == pytest.approx(0.1, abs=0.02)
    assert kinds[CHECK] / steps == pytest.approx(0.2 * 0.9, abs=0.03)


def test_without_slips_every_written_solution_is_right_and_answers_the_gold():
    rng = random.Random(1)
    for problem in problems("eval", lengths=(6, 7, 8))[:50]:
        solution = write_solution(problem, ThinkingStyle(corrected=0.4, uncorrected=0.0, abandoned=0.5), rng)
        verdict = judge(problem, solution.completion)
        assert WRONG_UNCORRECTED not in verdict.thinking and all(verdict.labels)
        assert solution.response[-1] == f"The answer is $\\boxed{{{problem.answer}}}$."


@pytest.mark.parametrize("style,message", [
    ({"corrected": 1.5}, "corrected=1.5 must be in"),
    ({"corrected": 0.7, "uncorrected": 0.5}, "must sum to at most 1"),
])
def test_a_style_out_of_range_is_refused(style, message):
    with pytest.raises(ValueError, match=message):
        ThinkingStyle(**style)


def test_the_shipped_r1_problems_are_what_the_task_writes_and_the_splits_are_disjoint():
    for split in ("train", "test"):
        assert load_table("builtin:lab_r1", split=split).to_list() == dataset_rows(split, lengths=(6, 7, 8))
    train = {r["problem"] for r in dataset_rows("train", lengths=(6, 7, 8))}
    assert not train & {r["problem"] for r in dataset_rows("test", lengths=(6, 7, 8))}


def test_the_r1_build_at_reduced_size_trains_both_prms_by_prm_train_and_each_drives_grpo(tmp_path):
    args = LabBuildArguments(task="r1", out=str(tmp_path / "lab"), sft_examples=64, sft_epochs=1, prm_examples=64,
                             prm_held_out=24, prm_epochs=1, eval_samples=1)
    paths = build_r1_lab(args)
    report = json.loads(paths.report.read_text())
    assert set(report["prms"]) == {"standard", "trajectory_aware"}
    for name, prm in report["prms"].items():
        # Trained by prm train (its verdict line), on the responses alone or on the pairs, and measured by kind on the
        # same held-out pairs.
        assert prm["training"].startswith("held-out step accuracy ")
        assert prm["trained_on"] == {"standard": "train-response.jsonl", "trajectory_aware": "train.jsonl"}[name]
        assert json.loads((paths.prms[name] / "prm_training.json").read_text())["objective"]["lambda_final"] == (
            prm["lambda_final"])
        figures = prm["held_out"]
        assert 0.0 <= figures["step_accuracy"] <= 1.0 and 0.0 <= figures["trajectory_overlap"] <= 1.0
        assert sum(k["steps"] for k in figures["kinds"].values()) > report["held_out_pairs"] * 6
    assert paths.figure.read_bytes()[:4] == b"\x89PNG"
    assert "standard PRM: step accuracy" in r1_summary(report)
    for name, prm in paths.prms.items():
        command = [sys.executable, "-m", "reasonflux_rl.train", "--config", "recipes/lab/cpu.yaml",
                   "--model_name_or_path", str(paths.policy), "--prm_name_or_path", str(prm),
                   "--dataset_name", "builtin:lab_r1", "--max_steps", "2", "--per_device_train_batch_size", "16",
                   "--max_completion_length", "64", "--eval_strategy", "no", "--eval_on_start", "false",
                   "--output_dir", str(tmp_path / f"grpo-{name}"), "--report_to", "none"]
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        history = json.loads((tmp_path / f"grpo-{name}/trainer_state.json").read_text())["log_history"]
        assert [e["step"] for e in history if "reasonflux/prm_mean" in e] == [1, 2]


def test_the_shipped_r1_prms_score_the_held_out_pairs_as_their_build_report_says(tmp_path):
    assets = REPO / "reasonflux_rl/lab/assets/r1"
    report = json.loads((assets / "lab.json").read_text())
    built_with = {k: v for k, v in report["arguments"].items() if k not in ("out", "r1_base")}
    test = write_r1_trajectories(LabBuildArguments(**built_with), tmp_path)["test"]
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    assert len(rows) == report["held_out_pairs"]
    tokenizer = AutoTokenizer.from_pretrained(assets / "policy")
    for name in PRMS:
        figures, _ = prm_figures(Qwen2ForProcessRewardModel.from_pretrained(assets / f"prm_{name}").eval(), tokenizer,
                                 rows)
        recorded = report["prms"][name]["held_out"]
        assert figures["step_accuracy"] == pytest.approx(recorded["step_accuracy"], abs=1e-3)
        assert figures["trajectory_overlap"] == pytest.approx(recorded["trajectory_overlap"], abs=1e-3)
        assert {k: v["steps"] for k, v in figures["kinds"].items()} == {
            k: v["steps"] for k, v in recorded["kinds"].items()}


def test_lab_build_help_lists_the_r1_options(capsys):
    from reasonflux_rl.lab.build_command import main

    with pytest.raises(SystemExit) as stopped:
        main(["build", "--help"])
    assert stopped.value.code == 0
    said = capsys.readouterr().out
    assert all(option in said for option in ("--task", "--r1_base", "--prm_thinking"))
