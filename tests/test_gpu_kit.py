"""The GPU kit's dry check: ``benchmarks/gpu/run.sh --cpu`` runs every section of the kit on tiny sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-kit") / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(["bash", "benchmarks/gpu/run.sh", "--cpu", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text()), json.loads(proc.stdout)


def test_every_section_ran(kit):
    results, summary = kit
    assert results["summary"] == summary
    assert summary["sections_failed"] == []
    assert set(results["sections_seconds"]) == {"environment", "matmul_peak", "prm_scoring_tiny-a",
                                                "prm_scoring_tiny-b", "grpo_smoke", "grpo_dense_credit",
                                                "reward_share", "step_value_head", "prm_train",
                                                "reasonflux_targets"}
    assert results["mode"] == "cpu" and results["matmul_peak"]["tflops"] > 0


def test_three_scoring_methods_agree_in_fp32(kit):
    results, _ = kit
    for shape in ("tiny-a", "tiny-b"):
        report = results["prm_scoring"][shape]
        assert report["max_abs_diff_ours_vs_per_sample"] < 1e-5
        assert report["max_abs_diff_padded_vs_per_sample"] < 1e-5
        assert report["speedup_vs_per_sample"] == pytest.approx(
            report["tokens_per_s_ours"] / report["tokens_per_s_per_sample"], abs=0.01)
        assert set(report["ours_by_batch_overhead"]) == {"256/16384", "1024/16384", "2048/16384", "4096/16384",
                                                         "2048/32768"}


def test_bf16_differs_from_fp32_by_rounding_only(kit):
    results, _ = kit
    check = results["bf16_vs_fp32"]
    assert check["steps"] > 0 and check["fp32_score_std"] > 0.01
    assert 0 < check["mean_abs_diff"] <= check["p99_abs_diff"] <= check["max_abs_diff"] < 0.1


def test_grpo_smoke_trains_two_steps_and_logs_the_reward(kit):
    results, summary = kit
    smoke = results["grpo_smoke"]
    assert summary["grpo_smoke_passed"] and smoke["steps_logged"] == 2
    for metric in ("mixed_mean", "outcome_mean", "prm_mean", "prm_seconds", "outcome_seconds", "beta"):
        assert f"reasonflux/{metric}" in smoke["reward_metrics"]
    assert smoke["wandb_offline_run"]


def test_grpo_dense_credit_puts_step_scores_on_the_tokens(kit):
    results, summary = kit
    dense = results["grpo_dense_credit"]
    assert summary["grpo_dense_credit_passed"] and "--prm_credit suffix_sum" in dense["command"]
    assert dense["last_step"]["reasonflux/process_advantage_std"] > 0


def test_reward_share_splits_each_step(kit):
    results, _ = kit
    share = results["reward_share"]
    assert len(share["steps"]) == 2 and share["prm"]["device"] == "cpu"
    for step in share["steps"]:
        parts = step["generation"] + step["outcome_reward"] + step["prm_scoring"] + step["optimizer_step"]
        assert step["generation"] > 0 and step["prm_scoring"] > 0
        assert parts <= step["step"] + 0.05
        assert step["reward_fraction"] == pytest.approx((step["outcome_reward"] + step["prm_scoring"]) / step["step"],
                                                        abs=0.01)


def test_step_value_head_loads_as_a_user_does_and_scores_alike_in_any_batch(kit):
    results, summary = kit
    check = results["step_value_head"]
    assert summary["step_value_head_passed"]
    assert (check["kind"], check["decoder_dtype"], check["head_dtype"]) == ("step_value_head", "float32", "float32")
    assert check["steps"] > 0 and check["fp32_score_std"] > 0.01 and check["tokens_per_s"] > 0
    # On the CPU both runs are fp32: the same numbers, whatever the batching.
    assert check["max_abs_diff_bf16_vs_fp32"] < 1e-5 and check["max_abs_diff_batched_vs_alone_fp32"] < 1e-5


def test_prm_train_steps_the_trainer_and_fits_a_fixed_batch(kit):
    results, summary = kit
    report = results["prm_train"]
    assert summary["prm_train_passed"] and report["passed"]
    assert summary["prm_train_tokens_per_s"] == report["tokens_per_s"] > 0
    assert report["precision"] == "fp32" and report["peak_gpu_mb"] == 0
    assert report["steps"] == len(report["step_seconds"]) == 3 and report["rows"] >= report["pairs"] > 0
    fixed = report["fixed_batch"]
    assert fixed["rows"] > 0 and fixed["steps"] == len(fixed["losses"]) == 6
    # The tiny model's loss on one batch falls step after step, well clear of noise.
    assert fixed["loss_falls"] and fixed["last_loss"] < 0.9 * fixed["first_loss"]


def test_reasonflux_targets_label_every_step_with_the_judge_and_encoder(kit):
    results, summary = kit
    report = results["reasonflux_targets"]
    assert summary["reasonflux_targets_passed"] and report["ratings_in_unit_interval"]
    assert report["pairs"] == 1 and report["steps"] >= report["steps_with_alignment"] > 0
    assert summary["reasonflux_targets_steps_per_s"] == report["steps_per_s"] > 0
    assert report["seconds"]["total"] >= report["seconds"]["judge"] + report["seconds"]["encoder"] > 0
