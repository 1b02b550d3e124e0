"""Two CPU processes (torchrun, gloo): a group split across ranks gets exactly the rewards of one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from distributed_grpo import parity_outcome

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
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
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
