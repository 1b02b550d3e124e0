"""The R1-style lab's benchmarks (``learning.py --lab r1``, ``lab_r1_mc.py``, ``lab_r1_reasonflux.py``,
``offline_uses.py``) run ``--quick`` on reduced sizes and report what they claim: every arm's curve, diagnostics and
safety flags, the hypotheses' verdicts following from the numbers; both label sets of the mc benchmark on the same
pairs; the reasonflux targets' quality being the judge's labels and the fusion lying between its components; both
PRMs' Best-of-N tables on the same candidates; the data selection's arms tuned on each PRM's top k, random k and the
pool. Whether targets are met
is the benchmarks' business."""

import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import learning  # noqa: E402

from reasonflux_rl.lab.task import boxed_answer  # noqa: E402

# transformers prints a line on stdout when it is imported under WANDB_MODE=offline (the suite's conftest sets it);
# both benchmarks train with report_to none, and their stdout is their JSON alone.
ENV = {**{k: v for k, v in os.environ.items() if k != "WANDB_MODE"}, "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1"}
VERDICTS = {"supported", "contradicted", "inconclusive"}


def _quick(tmp_path_factory, script, report_name, *options):
    """Run ``benchmarks/<script>`` with ``--quick``; its JSON (the one it also wrote as ``report_name``) and folder."""
    out = tmp_path_factory.mktemp(report_name.removesuffix(".json"))
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", *options, "--quick", "--out", str(out)], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert json.loads((out / report_name).read_text()) == report
    return report, out


@pytest.fixture(scope="module")
def r1_report(tmp_path_factory):
    return _quick(tmp_path_factory, "learning.py", "learning_r1.json", "--lab", "r1")


def test_r1_quick_runs_each_arm_with_the_quick_budget(r1_report):
    report, out = r1_report
    assert set(report["arms"]) == {"outcome_only", "trajectory_aware_suffix_sum"}
    assert report["budget"]["per_device_train_batch_size"] == "8" and report["steps"] == 4
    for name, arm in report["arms"].items():
        assert [p["step"] for p in arm["curve"]] == [0, 4]
        assert isinstance(arm["hacked"], bool) and isinstance(arm["collapsed"], bool)
        assert arm["hacked_seeds"] in (0, 1) and arm["collapsed_seeds"] in (0, 1)
        state = json.loads((out / f"{name}-seed0" / "trainer_state.json").read_text())
        assert state["global_step"] == 4
        # Every diagnostic was logged by the run, so each window has a value.
        for diagnostic, windows in arm["diagnostics"].items():
            assert windows["first_tenth"] is not None and windows["last_third"] is not None, diagnostic
    assert report["arms_settings"]["trajectory_aware_suffix_sum"]["prm_name_or_path"] == (
        "reasonflux_rl/lab/assets/r1/prm_trajectory_aware")
    assert (out / "learning_r1.png").read_bytes()[:4] == b"\x89PNG"


def test_r1_report_shows_the_trajectory_aware_prm_paying_for_unfinished_thinking(r1_report):
    # The finding the docs give for the hacked arms: the shipped trajectory-aware PRM scores a trajectory cut before
    # </think> above the finished one, the standard PRM does not.
    unfinished = r1_report[0]["prm_unfinished"]
    assert set(unfinished) == {"standard", "trajectory_aware", "reasonflux_targets"}
    aware, standard = unfinished["trajectory_aware"], unfinished["standard"]
    assert aware["unfinished"] > max(aware["finished_right"], aware["finished_wrong"])
    assert standard["unfinished"] < min(standard["finished_right"], standard["finished_wrong"])
    assert 0 < aware["right"] < aware["rows"] == 96


def test_r1_quick_hypotheses_have_verdicts(r1_report):
    report, _ = r1_report
    hypotheses = report["hypotheses"]
    assert set(hypotheses) == {"trajectory_aware_teaches_faster", "sum_form_credit_hacks", "mixing_prevents_hacking",
                               "step_credit_beats_sequence", "reasonflux_targets_help"}
    assert all(h["verdict"] in VERDICTS for h in hypotheses.values())
    # The quick run has no standard arm and no guarded arm: those claims cannot be judged.
    assert hypotheses["trajectory_aware_teaches_faster"]["verdict"] == "inconclusive"
    assert "half_the_steps" in report["targets"]


def _arm(auc_per_seed, hacked=0, collapsed=0):
    return {"auc": sum(auc_per_seed) / len(auc_per_seed), "auc_per_seed": auc_per_seed, "hacked_seeds": hacked,
            "collapsed_seeds": collapsed, "steps_to_outcome_final": None}


def test_hypotheses_follow_from_the_numbers():
    arms = {name: _arm([10, 11, 10, 11]) for name in learning.R1_ARMS}
    arms["trajectory_aware_sequence"] = _arm([20, 21, 20, 21])
    arms["trajectory_aware_suffix_sum"] = _arm([2, 3, 2, 3], hacked=3, collapsed=4)
    arms["trajectory_aware_only"] = _arm([1, 1, 2, 1], hacked=4)
    verdicts = {name: h["verdict"] for name, h in learning.r1_hypotheses(arms, 4).items()}
    assert verdicts == {
        "trajectory_aware_teaches_faster": "supported",  # 20.5 against the standard arms' 10.5
        "sum_form_credit_hacks": "supported",  # suffix_sum unsafe in 4 of 4 seeds, the guarded arms in none
        "mixing_prevents_hacking": "supported",  # PRM alone hacked in 4 seeds, its mix in none
        "step_credit_beats_sequence": "contradicted",  # the best dense arm (10.5) below the sequence arm (20.5)
        "reasonflux_targets_help": "contradicted",  # 10.5 against the judge-labelled sequence arm's 20.5
    }
    arms["trajectory_aware_sequence"] = _arm([10, 12, 9, 11])
    arms["trajectory_aware_soft_min"] = _arm([9, 13, 10, 10], collapsed=4)
    verdicts = {name: h["verdict"] for name, h in learning.r1_hypotheses(arms, 4).items()}
    assert verdicts["step_credit_beats_sequence"] == "inconclusive"  # within seed noise
    assert verdicts["sum_form_credit_hacks"] == "contradicted"  # soft_min as unsafe as suffix_sum
    arms["reasonflux_targets_sequence"] = _arm([30, 31, 30, 31])
    help_ = learning.r1_hypotheses(arms, 4)["reasonflux_targets_help"]
    assert help_["verdict"] == "supported"  # beyond both baselines, hacked in no seed
    arms["reasonflux_targets_sequence"] = _arm([30, 31, 30, 31], hacked=2)
    assert learning.r1_hypotheses(arms, 4)["reasonflux_targets_help"]["verdict"] == "contradicted"  # half hacked


@pytest.fixture(scope="module")
def mc_report(tmp_path_factory):
    return _quick(tmp_path_factory, "lab_r1_mc.py", "lab_r1_mc.json")[0]


def test_mc_quick_labels_the_same_steps_both_ways(mc_report):
    given, mc = mc_report["arms"]["given"], mc_report["arms"]["mc"]
    assert {k: v["steps"] for k, v in given["targets_by_kind"].items()} == {
        k: v["steps"] for k, v in mc["targets_by_kind"].items()}
    # The judge's targets: 1 for every step but the uncorrected slips and wrong response steps.
    assert given["targets_by_kind"]["wrong_uncorrected"]["mean_target"] == 0.0
    assert given["targets_by_kind"]["wrong_corrected"]["mean_target"] == 1.0
    assert given["error_auroc_of_targets"] == 1.0
    assert all(0.0 <= v["mean_target"] <= 1.0 for v in mc["targets_by_kind"].values())
    assert mc_report["labelling"]["continuations"] > 0 and mc_report["labelling"]["seconds"] > 0
    for arm in (given, mc):
        assert 0.0 <= arm["held_out"]["step_accuracy"] <= 1.0 and "kinds" in arm["held_out"]


@pytest.fixture(scope="module")
def offline_report(tmp_path_factory):
    return _quick(tmp_path_factory, "offline_uses.py", "offline_uses.json")


def test_offline_best_of_n_picks_from_the_same_candidates_with_both_prms(offline_report):
    report, out = offline_report
    bon = report["best_of_n"]
    assert bon["problems"] == 6 and bon["candidates_per_problem"] == 4
    candidates = [json.loads(line)["candidates"] for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert len(candidates) == 6 and all(len(c) == 4 for c in candidates)
    for name in ("standard", "trajectory_aware"):
        table = bon["tables"][name]
        assert [row["n"] for row in table] == [1, 2, 4]
        for row in table:
            assert set(row) == {"n", "prm", "majority", "weighted_majority", "random", "oracle"}
            assert max(row["prm"], row["majority"], row["weighted_majority"], row["random"]) <= row["oracle"]
        # At N=1 every method takes the first candidate; the candidates are the same for both PRMs.
        assert table[0] == bon["tables"]["standard"][0]
    aware = bon["at_n4"]["trajectory_aware"]
    assert bon["target_met"] == (aware["weighted_majority"] >= aware["majority"])


def test_offline_data_selection_tunes_on_each_prms_top_k_random_k_and_the_pool(offline_report):
    report, out = offline_report
    selection = report["data_selection"]
    pool = [json.loads(line) for line in (out / "pool.jsonl").read_text().splitlines()]
    assert selection["pool"]["rows"] == len(pool) == 32
    assert selection["pool"]["by_source"] == {"policy T=1.0": 8, "policy T=0.7": 8, "written (messy)": 16}
    assert all(row["right"] == (boxed_answer(row["completion"]) == int(row["solution"])) for row in pool)
    assert set(selection["arms"]) == {"standard", "trajectory_aware", "random", "pool"}
    for name in ("standard", "trajectory_aware"):
        kept = [json.loads(line) for line in (out / f"selected_{name}.jsonl").read_text().splitlines()]
        scores = [row["prm_score"] for row in kept]
        assert len(kept) == 8 and scores == sorted(scores, reverse=True)
        assert {row["completion"] for row in kept} <= {row["completion"] for row in pool}
        assert selection["arms"][name]["right_answer_share"] == round(statistics.fmean(r["right"] for r in kept), 3)
        assert selection["arms"][name]["by_source"] == dict(sorted(Counter(r["source"] for r in kept).items()))
        assert selection["arms"][name]["mean_characters"] == round(statistics.fmean(len(r["completion"]) for r in kept))
    assert selection["arms"]["pool"]["right_answer_share"] == selection["pool"]["right_answer_share"]
    assert selection["arms"]["pool"]["by_source"] == selection["pool"]["by_source"]
    if report["figure"] is not None:  # matplotlib is an extra
        assert Path(report["figure"]).read_bytes()[:4] == b"\x89PNG"
    for arm in selection["arms"].values():
        assert len(arm["per_seed_sampled"]) == 1 and arm["sampled_accuracy"] == arm["per_seed_sampled"][0]
        assert 0 <= arm["sampled_accuracy"] <= 100 and 0 <= arm["greedy_accuracy"] <= 100
    arms = selection["arms"]
    gain = selection["trajectory_aware_vs_random"]
    assert gain["gain"] == round(arms["trajectory_aware"]["sampled_accuracy"] - arms["random"]["sampled_accuracy"], 2)
    # One seed gives no standard error: never beyond noise, so the target cannot be met.
    assert gain["standard_error"] is None and not gain["beyond_noise"] and selection["target_met"] is False


def test_selection_gain_is_beyond_noise_only_past_twice_its_standard_error():
    import offline_uses

    arms = {"a": {"per_seed_sampled": [10.0, 12.0, 14.0]}, "b": {"per_seed_sampled": [4.0, 5.0, 6.0]},
            "c": {"per_seed_sampled": [2.0, 9.0, 16.0]}}
    assert offline_uses.selection_gain(arms, "a", "b") == {"gain": 7.0, "standard_error": 1.29, "beyond_noise": True}
    # sd 7 over 3 seeds: a gain of 4 is within twice its standard error (2 * 4.08).
    assert offline_uses.selection_gain(arms, "c", "b") == {"gain": 4.0, "standard_error": 4.08, "beyond_noise": False}


@pytest.fixture(scope="module")
def reasonflux_report(tmp_path_factory):
    return _quick(tmp_path_factory, "lab_r1_reasonflux.py", "lab_r1_reasonflux.json")


def test_reasonflux_quick_quality_is_the_judges_label_and_fused_lies_between_the_components(reasonflux_report):
    report, out = reasonflux_report
    quality = report["components"]["quality"]
    assert quality["error_auroc"] == 1.0
    assert {kind: v["mean_target"] for kind, v in quality["by_kind"].items()} == {
        kind: float(kind not in ("wrong_uncorrected", "response_wrong")) for kind in quality["by_kind"]}
    rows = [json.loads(line) for line in (out / "data" / "train-reasonflux.jsonl").read_text().splitlines()]
    assert len(rows) == report["pairs"] == 16
    for row in rows:
        for k, fused in enumerate(row["reasonflux_targets"]):
            present = [row[f"step_{c}"][k] for c in ("alignment", "quality", "coherence")
                       if row[f"step_{c}"][k] is not None]
            assert min(present) - 1e-9 <= fused <= max(present) + 1e-9
    # Both PRMs were measured on the same held-out pairs, and probed on the same unfinished trajectories.
    given, reasonflux = report["arms"]["given"], report["arms"]["reasonflux"]
    assert given["held_out"]["kinds"].keys() == reasonflux["held_out"]["kinds"].keys()
    assert {k: v["steps"] for k, v in given["held_out"]["kinds"].items()} == {
        k: v["steps"] for k, v in reasonflux["held_out"]["kinds"].items()}
    assert given["unfinished"]["rows"] == reasonflux["unfinished"]["rows"] == 96
    assert (out / "reasonflux" / "prm" / "config.json").exists()
    assert report["figure"] == "lab_r1_reasonflux.png" and (out / report["figure"]).read_bytes()[:4] == b"\x89PNG"


def test_reasonflux_quick_verdicts_follow_from_the_numbers(reasonflux_report):
    import lab_r1_reasonflux

    report, _ = reasonflux_report
    assert lab_r1_reasonflux.hypotheses(report["components"], report["arms"]) == report["hypotheses"]
    arms = {"given": {"held_out": {"trajectory_overlap": 0.8},
                      "unfinished": {"unfinished": 0.7, "finished_right": 0.6}},
            "reasonflux": {"held_out": {"trajectory_overlap": 0.7},
                           "unfinished": {"unfinished": 0.5, "finished_right": 0.6}}}
    components = {"alignment": {"error_auroc": 0.7}, "coherence": {"error_auroc": 0.55}}
    verdicts = {k: v["verdict"] for k, v in lab_r1_reasonflux.hypotheses(components, arms).items()}
    assert verdicts == {"alignment_and_coherence_carry_error_signal": "contradicted",  # coherence at 0.55
                        "reasonflux_prm_separates_answers_better": "supported",  # 0.1 less overlap
                        "reasonflux_prm_does_not_pay_for_unfinished": "supported"}


def test_lab_judge_refuses_a_step_it_never_labelled():
    import lab_r1_reasonflux

    from reasonflux_rl.prm_training.reasonflux_targets import StepQuery

    judge = lab_r1_reasonflux.LabJudge([{"problem": "Start at 1.", "completion": "F(1) = 3\n</think>\n\nF(1) = 3",
                                         "labels": [True, True]}])
    with pytest.raises(RuntimeError, match="no label"):
        judge.rate([StepQuery("Start at 1.", (), "F(1) = 4", "F(1) = 3")])
    with pytest.raises(ValueError, match="both ways"):
        lab_r1_reasonflux.LabJudge([{"problem": "Start at 1.", "completion": "F(1) = 3\n</think>\n\nF(1) = 3",
                                     "labels": labels} for labels in ([True, True], [False, True])])
