"""Every recipe parses with train's own parser and passes --dry-run; configs reference files that exist."""

import json
import os
import shlex
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.preflight import check_deepspeed, read_accelerate_config
from reasonflux_rl.train import main as train_main
from reasonflux_rl.train import make_parser

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
TRAIN_RECIPES = [p for p in RECIPES if p.parent.name not in ("accelerate", "sweeps")]
ACCELERATE = sorted((REPO / "recipes/accelerate").glob("*.yaml"))
DEEPSPEED = sorted((REPO / "deepspeed_configs").glob("*.json"))
R1 = REPO / "recipes/r1_distill_qwen_7b"


@pytest.fixture(scope="module")
def vllm_health_server():
    """A loopback stand-in that answers vLLM's /health, so the server recipes' reachability check can pass."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def tiny_overrides(tiny_models, recipe):
    config = yaml.safe_load(recipe.read_text())
    argv = ["--model_name_or_path", str(tiny_models.policy), "--use_cpu"]
    if config.get("prm_name_or_path"):
        argv += ["--prm_name_or_path", str(tiny_models.prm)]
    return argv


def dry_run(recipe, extra, capsys):
    train_main(["--config", str(recipe), "--dry-run", *extra])
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("recipe", TRAIN_RECIPES, ids=[str(p.relative_to(REPO)) for p in TRAIN_RECIPES])
def test_recipe_parses_and_dry_run_passes(recipe, tiny_models, vllm_health_server, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    overrides = tiny_overrides(tiny_models, recipe)
    make_parser().parse_args_and_config(["--config", str(recipe), *overrides])
    extra = overrides + ["--vllm_server_port", str(vllm_health_server)]
    if recipe.parent == R1:
        extra += ["--accelerate_config", "recipes/accelerate/zero3_1node_8gpu.yaml"]
    report = dry_run(recipe, extra, capsys)
    assert report["batch"]["prompts_per_generation_batch"] >= 1
    if recipe.parent == R1:
        assert report["batch"] == {"num_processes": 8, "completions_per_generation_batch": 192,
                                   "prompts_per_generation_batch": 32, "completions_per_device_micro_batch": 1}
        assert report["deepspeed"]["zero_stage"] == 3


def test_the_three_paper_arms_differ_only_in_reward_keys():
    arms = {name: yaml.safe_load((R1 / f"{name}.yaml").read_text())
            for name in ("rule_only", "qwen_math_prm_mixed", "reasonflux_prm_mixed")}
    reward_keys = {"prm_name_or_path", "prm_beta", "prm_normalisation", "prm_aggregation", "prm_max_length",
                   "output_dir", "run_name"}
    shared = [{k: v for k, v in arm.items() if k not in reward_keys} for arm in arms.values()]
    assert shared[0] == shared[1] == shared[2]
    assert arms["rule_only"]["prm_beta"] == 0.0 and arms["reasonflux_prm_mixed"]["prm_beta"] == 0.75
    base = shared[0]
    assert (base["learning_rate"], base["beta"], base["num_generations"], base["generation_batch_size"]) == (
        1e-6, 0.001, 6, 192
    )


@pytest.mark.parametrize("config", ACCELERATE, ids=[p.name for p in ACCELERATE])
def test_accelerate_configs_reference_existing_deepspeed_files(config):
    deepspeed = read_accelerate_config(config)["deepspeed"]
    assert (REPO / deepspeed).is_file(), deepspeed
    assert check_deepspeed(REPO / deepspeed)["zero_stage"] in (2, 3)


@pytest.mark.parametrize("path", DEEPSPEED, ids=[p.name for p in DEEPSPEED])
def test_deepspeed_files_are_accepted_by_deepspeed(path):
    raw = json.loads(path.read_text())
    report = check_deepspeed(path)
    assert report["zero_stage"] == raw["zero_optimization"]["stage"]
    assert report["offload_param"] == ("offload_param" in raw["zero_optimization"])


def test_sweep_renders_a_command_that_dry_run_accepts(tiny_models, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    sweep = yaml.safe_load((REPO / "recipes/sweeps/beta.yaml").read_text())
    values = {name: spec["values"][1] for name, spec in sweep["parameters"].items()}
    # W&B renders ${args} as --key=value and ${env} as nothing on Linux.
    args = [f"--{name}={value}" for name, value in values.items()]
    command = [part for part in sweep["command"] if part != "${env}"]
    i = command.index("${args}")
    command[i : i + 1] = args
    assert command[:2] == ["reasonflux-rl", "train"]
    recipe = REPO / command[command.index("--config") + 1]
    report = dry_run(recipe, command[4:] + tiny_overrides(tiny_models, recipe), capsys)
    assert report["reward"]["prm_beta"] == 0.25
    assert report["reward"]["prm_normalisation"] == "group_zscore"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--num_processes", "5"], r"generation_batch_size=192 is not divisible by per_device_train_batch_size x "
                                   r"processes = 1 x 5 = 5"),
        (["--num_processes", "8", "--deepspeed", "deepspeed_configs/zero4.json"],
         r"deepspeed='deepspeed_configs/zero4.json': the DeepSpeed config file does not exist"),
        (["--num_processes", "8", "--vllm_mode", "server", "--vllm_server_base_url", "http://127.0.0.1:9"],
         r"no vLLM server answers at http://127.0.0.1:9/health"),
    ],
)
def test_launch_that_cannot_work_fails_at_start(tiny_models, monkeypatch, extra, message):
    monkeypatch.chdir(REPO)
    recipe = R1 / "reasonflux_prm_mixed.yaml"
    # No --dry-run: a real start must fail the same way, before the policy (a hub id here) is loaded.
    with pytest.raises(ConfigError, match=message):
        train_main(["--config", str(recipe), *tiny_overrides(tiny_models, recipe), *extra])


def test_two_process_zero2_training_with_the_mixed_reward(tiny_models, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "WANDB_MODE": "offline"}
    command = (
        f"{shlex.quote(sys.executable)} -m torch.distributed.run --standalone --nproc_per_node 2 -m reasonflux_rl.train"
        f" --config recipes/smoke/cpu.yaml --model_name_or_path {tiny_models.policy}"
        f" --prm_name_or_path {tiny_models.prm} --output_dir {tmp_path} --deepspeed deepspeed_configs/zero2.json"
        " --ddp_backend gloo --max_steps 2 --report_to none"
    )
    proc = subprocess.run(shlex.split(command), cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [r for r in json.loads((tmp_path / "trainer_state.json").read_text())["log_history"] if "loss" in r]
    assert len(rows) == 2 and all(r["reasonflux/beta"] == 0.75 for r in rows)
    assert (tmp_path / "model.safetensors").is_file()
