"""The PRM sharded with DeepSpeed ZeRO-3 beside the policy (prm_placement: zero3), on CPU with two processes."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from rank_records import read_records
from zero3_scoring import BATCH_TOKENS, CASES

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm import load_scorer
from reasonflux_rl.rewards.build import check_placement
from reasonflux_rl.rewards.config import RewardArguments
from reasonflux_rl.tiny import (
    TINY_TOKEN_LOGIT_TOKENS,
    write_tiny_step_value_head,
    write_tiny_token_logit,
    write_tiny_value_head,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "WANDB_MODE": "offline"}


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def test_sharded_prms_score_uneven_slices_in_lockstep_as_replicas_do(tiny_models, tmp_path):
    value_head = write_tiny_value_head(tmp_path / "value_head")
    token_logit = write_tiny_token_logit(tmp_path / "token_logit")
    step_value_head = write_tiny_step_value_head(tmp_path / "step_value_head")
    proc = subprocess.run(
        torchrun(str(HERE / "zero3_scoring.py"), str(REPO / "deepspeed_configs" / "zero3.json"), str(tiny_models.prm),
                 str(value_head), str(token_logit), str(step_value_head), str(tmp_path)),
        env={**ENV, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = read_records(tmp_path)
    assert [rank["world_size"] for rank in ranks] == [2, 2]
    for rank in ranks:
        for shard in rank["shards"].values():
            # Each rank holds half of every large weight, in the PRM's own precision (fp32 on CPU).
            assert shard["local"] * 2 == shard["full"] and shard["dtype"] == "torch.float32"

    replicas = {
        "step_classifier+value_head": load_scorer(tiny_models.prm, trajectory_prm=value_head, placement="replica",
                                                  batch_tokens=BATCH_TOKENS, device="cpu"),
        "token_logit": load_scorer(token_logit, kind="token_logit", placement="replica", batch_tokens=BATCH_TOKENS,
                                   device="cpu", **TINY_TOKEN_LOGIT_TOKENS),
        "step_value_head": load_scorer(step_value_head, placement="replica", batch_tokens=BATCH_TOKENS, device="cpu"),
    }
    for case, per_rank in CASES.items():
        for kind, replica in replicas.items():
            got = [rank["results"][f"{case}/{kind}"] for rank in ranks]
            # Lockstep: both ranks ran the same forward passes, also a rank with one short completion or none.
            assert got[0]["passes"] == got[1]["passes"]
            if case == "uneven":
                busiest = max(got[0]["passes"].values())
                assert busiest >= 3, "rank 0's completions must need several passes, or lockstep is not exercised"
            for r in (0, 1):
                assert got[r]["completions"] == per_rank[r]
                expected = replica.score(got[r]["problems"], got[r]["completions"])
                assert len(got[r]["steps"]) == len(expected)
                for steps, trajectory, want in zip(got[r]["steps"], got[r]["trajectory"], expected):
                    assert steps == pytest.approx(want.step_scores, abs=1e-5)
                    assert (trajectory is None) == (want.trajectory_score is None)
                    if trajectory is not None:
                        assert trajectory == pytest.approx(want.trajectory_score, abs=1e-5)


@pytest.mark.parametrize("placement", ["zero3", "replica"])
def test_two_process_zero3_training_with_the_prm_sharded_or_whole(tiny_models, tmp_path, placement):
    # zero3: the PRM partitioned by the same ZeRO-3 config as the policy. replica (the R1 recipes' set-up): the PRM
    # loads whole beside a partitioned policy; it used to load partitioned and fail at its first forward. Before
    # train started DeepSpeed's communication layer, ZeRO-3 on CPU failed at the policy load (world size 1).
    command = torchrun(
        "-m", "reasonflux_rl.train", "--config", "recipes/smoke/cpu.yaml", "--model_name_or_path",
        str(tiny_models.policy), "--prm_name_or_path", str(tiny_models.prm), "--output_dir", str(tmp_path),
        "--deepspeed", "deepspeed_configs/zero3.json", "--prm_placement", placement, "--ddp_backend", "gloo",
        "--max_steps", "2", "--report_to", "none",
    )
    proc = subprocess.run(command, cwd=REPO, env={**ENV, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=500)
    assert proc.returncode == 0, f"{shlex.join(command)}\n{proc.stderr[-4000:]}"
    rows = [r for r in json.loads((tmp_path / "trainer_state.json").read_text())["log_history"] if "loss" in r]
    assert len(rows) == 2
    assert all(0.0 < r["reasonflux/prm_mean"] < 1.0 and r["reasonflux/prm_missing"] == 0 for r in rows)
    assert (tmp_path / "model.safetensors").is_file()


def test_zero3_placement_without_a_zero3_launch_is_a_config_error(tiny_models):
    with pytest.raises(ConfigError, match=r"^prm_placement='zero3' shards the PRM .* no ZeRO-3 DeepSpeed config is "):
        load_scorer(tiny_models.prm, placement="zero3", device="cpu")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"prm_placement": "gpu0"}, r"^prm_placement='gpu0' is not allowed: choose one of \['auto', 'replica', "),
        ({"prm_placement": "zero3", "prm_server_urls": ["http://prm:8001"]},
         r"^prm_placement='zero3' loads the PRM in the training processes, but prm_server_urls is set"),
        ({"prm_placement": "replica", "prm_server_urls": ["http://prm:8001"]},
         r"^prm_placement='replica' loads the PRM in the training processes"),
        ({"prm_placement": "server"}, r"^prm_placement='server' needs prm_server_urls"),
    ],
)
def test_placement_combinations_that_cannot_work_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        RewardArguments(prm_name_or_path="/any/prm", **settings)


@pytest.mark.parametrize(
    ("settings", "zero_stage", "placement"),
    [
        ({}, None, "replica"),
        ({"prm_server_urls": ["http://prm:8001"]}, 3, "server"),
        ({"prm_placement": "zero3"}, 3, "zero3"),
        ({"prm_placement": "replica"}, 3, "replica"),
    ],
)
def test_check_placement_resolves_auto_and_accepts_a_zero3_launch(settings, zero_stage, placement):
    assert check_placement(RewardArguments(prm_name_or_path="/any/prm", **settings), zero_stage) == placement


@pytest.mark.parametrize(("zero_stage", "launched"), [(None, "without DeepSpeed"), (2, "with DeepSpeed ZeRO stage 2")])
def test_check_placement_rejects_zero3_without_a_zero3_launch(zero_stage, launched):
    with pytest.raises(ConfigError, match=rf"^prm_placement='zero3' .* the run is launched {launched}: use a ZeRO-3"):
        check_placement(RewardArguments(prm_name_or_path="/any/prm", prm_placement="zero3"), zero_stage)
