"""Two CPU processes (torchrun, gloo): a group split across ranks gets exactly the rewards of one process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from distributed_grpo import parity_outcome
from distributed_prm_failure import boxed_14
from rank_records import read_records

from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.rewards.prm import MixedReward

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("normalisation", ["group_zscore", "batch_zscore"])
def test_two_process_rewards_equal_one_process(tiny_models, tmp_path, normalisation):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "distributed_grpo.py"), str(tiny_models.policy), str(tiny_models.prm), str(tmp_path),
         normalisation],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = read_records(tmp_path)
    assert all(rank["world_size"] == 2 for rank in ranks)
    assert len(ranks[0]["calls"]) == len(ranks[1]["calls"]) == 2

    single = MixedReward(parity_outcome, StepScorer.from_pretrained(tiny_models.prm), beta=0.5,
                         normalisation=normalisation, num_generations=2)
    for call0, call1 in zip(ranks[0]["calls"], ranks[1]["calls"]):
        # Each rank holds 3 completions and groups have 2: the middle group straddles the ranks.
        assert len(call0["completions"]) == len(call1["completions"]) == 3
        assert call0["prompts"][2] == call1["prompts"][0]
        prompts, completions = call0["prompts"] + call1["prompts"], call0["completions"] + call1["completions"]
        expected = single(prompts=prompts, completions=completions)
        # fp32 PRM scores move by ~1e-7 with batch composition; z-scores divide that by a std of a few hundredths.
        assert call0["rewards"] + call1["rewards"] == pytest.approx(expected, abs=2e-5)
        # What the gather prevents: one rank alone cannot normalise a split group, and its batch statistics differ.
        if normalisation == "group_zscore":
            with pytest.raises(ValueError, match="whole groups"):
                single(prompts=call0["prompts"], completions=call0["completions"])
        else:
            local = single(prompts=call0["prompts"], completions=call0["completions"])
            assert local != pytest.approx(expected[:3], abs=1e-3)


def per_rank(metrics):
    # Wall seconds are this rank's own time, the one metric log_batch does not take over the whole batch.
    return {name: value for name, value in metrics.items() if not name.endswith("_seconds")}


def test_one_ranks_unavailable_prm_drops_the_prm_on_every_rank_and_metrics_agree(tiny_models, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "distributed_prm_failure.py"), str(tiny_models.prm), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = read_records(tmp_path)
    assert [rank["world_size"] for rank in ranks] == [2, 2]
    (failed0, ok0), (failed1, ok1) = ranks[0]["calls"], ranks[1]["calls"]
    # Rank 0's PRM answered the first call (and rank 1's raised inside its), so only the gather can drop it there.
    assert (failed0["scorer_calls"], failed1["scorer_calls"]) == (1, 1)

    # Both ranks train the failed batch on (1 - beta) * outcome: rank 0 holds the two right answers.
    assert failed0["rewards"] == [0.5, 0.0, 0.5] and failed1["rewards"] == [0.0, 0.0, 0.0]
    assert per_rank(failed0["metrics"]) == per_rank(failed1["metrics"])
    metrics = failed0["metrics"]
    assert metrics["reasonflux/prm_unavailable"] == 1.0
    assert metrics["reasonflux/prm_missing"] == 6.0  # the whole batch, not one rank's 3 rows
    assert metrics["reasonflux/outcome_mean"] == pytest.approx(2 / 6)
    assert metrics["reasonflux/mixed_mean"] == pytest.approx(0.5 * 2 / 6)
    assert {"reasonflux/prm_mean", "reasonflux/prm_std", "reasonflux/prm_outcome_corr"}.isdisjoint(metrics)

    # The next batch has the PRM back on both ranks: rewards and metrics are one process's on the whole batch.
    single = MixedReward(boxed_14, StepScorer.from_pretrained(tiny_models.prm), beta=0.5, normalisation="group_zscore",
                         num_generations=2)
    logged = {}
    expected = single(prompts=ok0["prompts"] + ok1["prompts"], completions=ok0["completions"] + ok1["completions"],
                      log_metric=logged.__setitem__)
    assert ok0["rewards"] + ok1["rewards"] == pytest.approx(expected, abs=2e-5)
    assert ok0["rewards"] + ok1["rewards"] != pytest.approx([0.5, 0.0, 0.5, 0.0, 0.0, 0.0], abs=1e-3)
    assert per_rank(ok0["metrics"]) == per_rank(ok1["metrics"])
    assert ok0["metrics"]["reasonflux/prm_unavailable"] == 0.0
    assert per_rank(ok0["metrics"]) == pytest.approx(per_rank(logged), abs=2e-5)
