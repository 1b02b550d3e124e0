"""Every recipe parses with train's own parser and passes --dry-run; configs reference files that exist."""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from health_stub import health_server

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.placement.pooling_server import PoolingServer
from reasonflux_rl.train.launch import main as train_main
from reasonflux_rl.train.launch import make_parser
from reasonflux_rl.train.preflight import check_deepspeed, gpu_checks_at_launch, read_accelerate_config

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
# `trl grpo` recipes (they name reward_funcs) run under TRL's own command: tests/test_trl_grpo.py runs them; the
# PRM-training recipes are `prm label` and `prm train`'s: tests/test_prm_training_trainer.py dry-runs them.
TRAIN_RECIPES = [p for p in RECIPES if p.parent.name not in ("accelerate", "sweeps", "prm_train")
                 and "reward_funcs" not in (yaml.safe_load(p.read_text()) or {})]
ACCELERATE = sorted((REPO / "recipes/accelerate").glob("*.yaml"))
DEEPSPEED = sorted((REPO / "deepspeed_configs").glob("*.json"))
R1 = REPO / "recipes/r1_distill_qwen_7b"
# What the R1 recipes need that this machine lacks (a CPU machine: all of it); their dry runs must still pass.
ABSENT = [name for name, alternatives in (("vllm", ["vllm"]), ("flash_attn", ["flash_attn", "kernels"]))
          if not any(importlib.util.find_spec(module) for module in alternatives)]


@pytest.fixture(scope="module")
def vllm_health_server():
    with health_server() as port:
        yield port


@pytest.fixture(scope="module")
def prm_server(tiny_models):
    """The tiny PRM behind vLLM's pooling API, accepting the recipes' 4096-token PRM context."""
    with PoolingServer(tiny_models.prm, model_name="tiny-prm", max_model_len=4096) as server:
        yield server


def tiny_overrides(tiny_models, recipe, prm_server=None):
    config = yaml.safe_load(recipe.read_text())
    # No --use_cpu: a dry run on this GPU-less machine must pass as it does on a login node.
    argv = ["--model_name_or_path", str(tiny_models.policy)]
    if config.get("prm_name_or_path"):
        argv += ["--prm_name_or_path", str(tiny_models.prm)]
    if config.get("prm_server_urls") and prm_server is not None:
        argv += ["--prm_server_urls", prm_server.url, "--prm_server_model", prm_server.model_name]
    return argv


def dry_run(recipe, extra, capsys):
    train_main(["--config", str(recipe), "--dry-run", *extra])
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("recipe", TRAIN_RECIPES, ids=[str(p.relative_to(REPO)) for p in TRAIN_RECIPES])
def test_recipe_parses_and_dry_run_passes(recipe, tiny_models, vllm_health_server, prm_server, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    overrides = tiny_overrides(tiny_models, recipe, prm_server)
    with gpu_checks_at_launch(num_processes=1):  # bf16 recipes parse here as on a GPU node
        make_parser().parse_args_and_config(["--config", str(recipe), *overrides])
    extra = overrides + ["--vllm_server_port", str(vllm_health_server)]
    if recipe.parent == R1:
        extra += ["--accelerate_config", "recipes/accelerate/zero3_1node_8gpu.yaml"]
    report = dry_run(recipe, extra, capsys)
    assert report["batch"]["prompts_per_generation_batch"] >= 1
    if recipe.parent == R1:
        # The paper's step: 32 prompts x 6 completions per optimizer step, generated together.
        assert report["batch"] == {"num_processes": 8, "completions_per_device_micro_batch": 1,
                                   "gradient_accumulation_steps": 24, "completions_per_optimizer_step": 192,
                                   "prompts_per_optimizer_step": 32, "steps_per_generation": 24,
                                   "completions_per_generation_batch": 192, "prompts_per_generation_batch": 32}
        assert report["deepspeed"]["zero_stage"] == 3
        assert sorted(m["package"] for m in report["missing"]) == sorted(ABSENT)
    config = yaml.safe_load(recipe.read_text())
    bf16_deferred = "bf16 on GPU (this machine has no GPU)" in report["checked_at_launch"]
    assert bf16_deferred == (bool(config.get("bf16")) and not torch.cuda.is_available())
    if "bf16" in config:
        assert report["optimisation"]["bf16"] is config["bf16"]


def test_readme_dry_run_passes_on_a_machine_without_a_gpu(tiny_models):
    # The README's line as a user types it on a login node: the policy stays the hub id, only the PRM checkpoint
    # path is this machine's.
    recipe = "recipes/r1_distill_qwen_7b/reasonflux_prm_mixed.yaml"
    command = [sys.executable, "-m", "reasonflux_rl", "train", "--config", recipe, "--dry-run",
               "--accelerate_config", "recipes/accelerate/zero3_1node_8gpu.yaml",
               "--prm_name_or_path", str(tiny_models.prm)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report, _ = json.JSONDecoder().raw_decode(proc.stdout[re.search(r"^\{", proc.stdout, re.M).start():])
    assert report["policy"] == {"path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "where": "hub", "use_peft": False}
    assert report["checked_at_launch"] == ["bf16 on GPU (this machine has no GPU)",
                                           "8 processes, one GPU each (this machine has none)"]
    assert report["batch"]["completions_per_optimizer_step"] == 192


def test_a_real_start_still_refuses_bf16_without_a_gpu(tiny_models, monkeypatch):
    import transformers.training_args

    monkeypatch.chdir(REPO)
    # As on any machine without a GPU, whatever this one has.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(transformers.training_args, "is_torch_bf16_gpu_available", lambda: False)
    recipe = R1 / "reasonflux_prm_mixed.yaml"
    with pytest.raises(ConfigError, match="doesn't support bf16/gpu"):
        train_main(["--config", str(recipe), *tiny_overrides(tiny_models, recipe)])


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


def test_read_accelerate_config_refuses_exactly_what_accelerate_refuses(monkeypatch):
    from dataclasses import fields

    from accelerate.utils import DeepSpeedPlugin

    from reasonflux_rl.train.preflight import DEEPSPEED_FILE_OWNS

    # accelerate's own check, given one config key at a time the way `accelerate launch` hands them over.
    refused = set()
    for name in [f.name for f in fields(DeepSpeedPlugin)] + ["mixed_precision"]:
        monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", name)
        try:
            DeepSpeedPlugin._deepspeed_config_checks(None)
        except ValueError:
            refused.add(name)
    assert refused == set(DEEPSPEED_FILE_OWNS)


@pytest.mark.parametrize(
    "config,named",
    [
        ({"mixed_precision": "bf16"}, "mixed_precision"),
        ({"mixed_precision": "no"}, "mixed_precision"),  # accelerate refuses any value once it is in the file
        ({"fp16": True}, "fp16"),
        ({"deepspeed_config": {"zero_stage": 3}}, "deepspeed_config.zero_stage"),
        ({"deepspeed_config": {"gradient_accumulation_steps": 4, "offload_param_device": "cpu"}},
         "deepspeed_config.gradient_accumulation_steps, deepspeed_config.offload_param_device"),
    ],
)
def test_accelerate_config_with_keys_the_deepspeed_file_owns_is_rejected(tmp_path, config, named):
    config = {"distributed_type": "DEEPSPEED", "num_processes": 8, **config}
    config["deepspeed_config"] = {"deepspeed_config_file": "ds.json", **config.get("deepspeed_config", {})}
    path = tmp_path / "acc.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=rf"acc.yaml': {re.escape(named)} (is|are) set beside deepspeed_config"):
        read_accelerate_config(path)
    # Without a DeepSpeed file the same keys are accelerate's to use.
    del config["deepspeed_config"]["deepspeed_config_file"]
    path.write_text(yaml.safe_dump(config))
    assert read_accelerate_config(path)["deepspeed"] is None


@pytest.mark.parametrize("config", ACCELERATE, ids=[p.name for p in ACCELERATE])
def test_accelerate_launch_starts_the_entry_point_with_each_config(config, tiny_models):
    # `accelerate launch` with the file as written, only the process count cut to 1 for CPU, then train's own
    # entry point: transformers builds accelerate's DeepSpeedPlugin from the launch environment while parsing the
    # recipe, which is where accelerate refuses a bad config; --dry-run stops before weights load.
    recipe = R1 / "reasonflux_prm_mixed.yaml"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_machines", "1",
        "--machine_rank", "0", "--num_processes", "1", "--main_process_port", "0",
        "-m", "reasonflux_rl.train", "--config", str(recipe), "--dry-run", "--accelerate_config", str(config),
        *tiny_overrides(tiny_models, recipe),
    ]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report, _ = json.JSONDecoder().raw_decode(proc.stdout[re.search(r"^\{", proc.stdout, re.M).start():])
    deepspeed_file = json.loads((REPO / read_accelerate_config(config)["deepspeed"]).read_text())
    assert report["deepspeed"]["zero_stage"] == deepspeed_file["zero_optimization"]["stage"]
    # bf16 reached DeepSpeed from the recipe's `bf16: true` through the file's "auto", not from accelerate.
    assert deepspeed_file["bf16"]["enabled"] == "auto" and report["deepspeed"]["bf16"] is True
    assert report["batch"]["num_processes"] == yaml.safe_load(config.read_text())["num_processes"]


@pytest.mark.parametrize("path", DEEPSPEED, ids=[p.name for p in DEEPSPEED])
def test_deepspeed_files_are_accepted_by_deepspeed(path):
    raw = json.loads(path.read_text())
    report = check_deepspeed(path)
    assert report["zero_stage"] == raw["zero_optimization"]["stage"]
    assert report["offload_param"] == ("offload_param" in raw["zero_optimization"])


SMOKE = REPO / "recipes/smoke/cpu.yaml"


@pytest.mark.parametrize(
    "extra,generation_batch",
    [
        (["--num_processes", "2"], 16),  # 8 per device x 2; parsed as one process it would be 8, not a split of 16
        (["--num_processes", "3"], 24),
        # On one process the generation batch (2) would not hold a group of 4; on two (4) it does.
        (["--num_processes", "2", "--per_device_train_batch_size", "2", "--num_generations", "4"], 4),
        (["--num_processes", "2", "--steps_per_generation", "3"], 48),
        (["--num_processes", "2", "--generation_batch_size", "32"], 32),
    ],
)
def test_dry_run_sizes_the_batch_for_the_launch_it_describes(tiny_models, capsys, monkeypatch, extra,
                                                              generation_batch):
    monkeypatch.chdir(REPO)
    batch = dry_run(SMOKE, tiny_overrides(tiny_models, SMOKE) + extra, capsys)["batch"]
    assert batch["completions_per_generation_batch"] == generation_batch
    processes, per_device = batch["num_processes"], batch["completions_per_device_micro_batch"]
    assert batch["steps_per_generation"] == generation_batch // (processes * per_device)
    assert batch["completions_per_optimizer_step"] == processes * per_device  # cpu.yaml: no accumulation


def test_dry_run_rejects_a_generation_batch_that_does_not_split_over_the_processes(tiny_models, monkeypatch):
    monkeypatch.chdir(REPO)
    # 24 splits over one process of 8 but not over two (16): TRL's rule, in TRL's words.
    with pytest.raises(ConfigError, match=r"generation_batch_size \(24\) must be divisible by the global batch "
                                          r"size \(16\)"):
        train_main(["--config", str(SMOKE), "--dry-run", "--num_processes", "2", "--generation_batch_size", "24",
                    *tiny_overrides(tiny_models, SMOKE)])


@pytest.mark.parametrize("num_processes", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("user_set", [{}, {"generation_batch_size": 12}, {"steps_per_generation": 3}],
                         ids=["neither", "generation_batch_size", "steps_per_generation"])
def test_batch_check_agrees_with_grpo_config_on_that_many_processes(tmp_path, monkeypatch, user_set, num_processes):
    from types import SimpleNamespace

    from trl import GRPOConfig

    from reasonflux_rl.train.preflight import check_batch

    keys = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 2, "num_generations": 4}
    monkeypatch.setattr(GRPOConfig, "world_size", property(lambda self: num_processes), raising=False)
    try:
        expected = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **keys, **user_set)
    except ValueError:
        expected = None
    # A config parsed elsewhere: the values the user did not set are whatever that parse derived; ignored.
    parsed = SimpleNamespace(**keys, eval_strategy="no", **{"generation_batch_size": 7, "steps_per_generation": 5,
                                                             **user_set})
    if expected is None:
        with pytest.raises(ConfigError):
            check_batch(parsed, num_processes, set(user_set))
    else:
        batch = check_batch(parsed, num_processes, set(user_set))
        assert batch["completions_per_generation_batch"] == expected.generation_batch_size
        assert batch["steps_per_generation"] == expected.steps_per_generation
        assert batch["completions_per_optimizer_step"] == num_processes * 2


@pytest.mark.parametrize("accumulation,completions,prompts", [(None, 384, 64), ("12", 192, 32)])
def test_dry_run_shows_the_optimizer_step_on_two_nodes(tiny_models, vllm_health_server, capsys, monkeypatch,
                                                       accumulation, completions, prompts):
    monkeypatch.chdir(REPO)
    recipe = R1 / "reasonflux_prm_mixed_server.yaml"
    extra = tiny_overrides(tiny_models, recipe) + ["--vllm_server_port", str(vllm_health_server),
                                                   "--accelerate_config", "recipes/accelerate/zero3_multinode.yaml"]
    if accumulation:
        extra += ["--gradient_accumulation_steps", accumulation]
    batch = dry_run(recipe, extra, capsys)["batch"]
    # The recipe's 24 accumulation steps make 8 GPUs a paper step; 16 need 12 (train.sbatch passes it).
    assert batch["num_processes"] == 16
    assert (batch["completions_per_optimizer_step"], batch["prompts_per_optimizer_step"]) == (completions, prompts)
    assert batch["completions_per_generation_batch"] == 192


def test_dry_run_lists_missing_packages_that_a_real_start_requires(tiny_models, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = R1 / "reasonflux_prm_mixed.yaml"
    argv = ["--config", str(recipe), "--num_processes", "8", *tiny_overrides(tiny_models, recipe)]
    # As on a login node without the GPU packages, whatever this machine has.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name in (
        "vllm", "flash_attn", "kernels") else real_find_spec(name, *args))
    train_main([*argv, "--dry-run"])
    missing = json.loads(capsys.readouterr().out)["missing"]
    assert [(m["package"], m["needed_by"]) for m in missing] == [
        ("vllm", "use_vllm=True (vllm_mode='colocate')"), ("flash_attn", "attn_implementation='flash_attention_2'")
    ]
    # A real start stops before any weights load (the policy here is a hub id nothing could download); --use_cpu
    # gets this GPU-less machine past bf16 to the check under test.
    with pytest.raises(ConfigError, match=r"use_vllm=True \(vllm_mode='colocate'\) needs the vllm package, which is "
                                          r"not installed .*attn_implementation='flash_attention_2' needs the "
                                          r"flash_attn package"):
        train_main([*argv, "--use_cpu"])


def test_present_optional_packages_are_not_reported(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from reasonflux_rl.train.preflight import missing_packages

    for name in ("vllm", "flash_attn"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    training = SimpleNamespace(use_vllm=True, vllm_mode="server")
    model = SimpleNamespace(attn_implementation="flash_attention_2")
    assert {m["package"] for m in missing_packages(training, model)} == set(ABSENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert missing_packages(training, model) == []


def render_sweep_command(sweep: dict, values: dict) -> list[str]:
    """The command W&B's agent runs for one parameter set: its own macro expansion (wandb_agent.Agent._command_run)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    macros = create_sweep_command_args({"args": {name: {"value": value} for name, value in values.items()}})
    macros["env"] = ["/usr/bin/env"]  # the agent's value on Linux
    rendered = []
    for part in create_sweep_command(sweep["command"]):
        rendered += (macros.get(part[2:-1]) or []) if part.startswith("${") and part.endswith("}") else [part]
    return rendered


def test_sweep_renders_an_accelerate_launch_that_dry_run_accepts(tiny_models, capsys, monkeypatch):
    from accelerate.commands.launch import launch_command_parser

    monkeypatch.chdir(REPO)
    sweep = yaml.safe_load((REPO / "recipes/sweeps/beta.yaml").read_text())
    values = {name: spec["values"][1] for name, spec in sweep["parameters"].items()}
    command = render_sweep_command(sweep, values)
    assert command[:3] == ["/usr/bin/env", "accelerate", "launch"]
    # accelerate's own parser reads the launch: the real entry point as a module, under a shipped config.
    launch = launch_command_parser().parse_args(command[3:])
    assert (launch.module, launch.training_script) == (True, "reasonflux_rl.train")
    assert launch.config_file in [str(p.relative_to(REPO)) for p in ACCELERATE]
    recipe = REPO / launch.training_script_args[launch.training_script_args.index("--config") + 1]
    train_main([*launch.training_script_args, "--dry-run", "--accelerate_config", launch.config_file,
                *tiny_overrides(tiny_models, recipe)])
    report = json.loads(capsys.readouterr().out)
    assert (report["reward"]["prm_beta"], report["reward"]["prm_normalisation"],
            report["reward"]["prm_aggregation"]) == (0.25, "group_zscore", "min")
    # Each run its own directory, named like the run, and the paper's step on the config's 8 processes.
    run = "beta0.25-group_zscore-min"
    assert report["optimisation"]["output_dir"] == f"outputs/r1-distill-qwen-7b/reasonflux_prm_mixed/{run}"
    assert report["optimisation"]["run_name"] == f"r1d7b-reasonflux_prm_mixed-{run}"
    assert report["batch"]["completions_per_optimizer_step"] == 192 and report["deepspeed"]["zero_stage"] == 3


def test_output_dir_template_names_only_reward_keys(tiny_models, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match=r"output_dir='out/\{learning_rate\}': KeyError\('learning_rate'\) is not a "
                                          r"reward key"):
        train_main(["--config", str(SMOKE), "--dry-run", "--output_dir", "out/{learning_rate}",
                    *tiny_overrides(tiny_models, SMOKE)])


def test_sweep_metric_is_what_the_reward_logs_during_evaluation(tiny_models):
    from types import SimpleNamespace

    from transformers.integrations.integration_utils import rewrite_logs

    from reasonflux_rl.rewards.build import build_reward_funcs
    from reasonflux_rl.rewards.config import RewardArguments

    sweep = yaml.safe_load((REPO / "recipes/sweeps/beta.yaml").read_text())
    logged = set()
    funcs, _ = build_reward_funcs(RewardArguments(prm_name_or_path=str(tiny_models.prm), outcome_num_workers=1),
                                  num_generations=2)
    try:
        completions = [[{"role": "assistant", "content": f"<think>\nsum\n</think>\n\n\\boxed{{{n}}}"}] for n in (2, 3)]
        for func in funcs:
            func(prompts=[[{"role": "user", "content": "1+1?"}]] * 2, completions=completions, solution=["2", "2"],
                 problem=["1+1?"] * 2, trainer_state=SimpleNamespace(global_step=0, max_steps=1),
                 log_metric=lambda name, value: logged.add(name), log_extra=lambda *args: None)
    finally:
        funcs[0].close()
    # GRPOTrainer.log prefixes evaluation metrics with "eval_"; transformers' W&B callback rewrites that to "eval/".
    assert sweep["metric"]["name"] in rewrite_logs({f"eval_{name}": 0.0 for name in logged})
    assert sweep["metric"]["name"] == "eval/outcome/accuracy"  # comparable across beta, unlike the mixed reward


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--num_processes", "5"], r"generation_batch_size=192 is not divisible by per_device_train_batch_size x "
                                   r"processes = 1 x 5 = 5"),
        (["--num_processes", "8", "--deepspeed", "deepspeed_configs/zero4.json"],
         r"deepspeed='deepspeed_configs/zero4.json': the DeepSpeed config file does not exist"),
        (["--num_processes", "8", "--vllm_mode", "server", "--vllm_server_base_url", "http://127.0.0.1:9"],
         r"no vLLM server answers at http://127.0.0.1:9/health"),
        (["--num_processes", "8", "--prm_server_urls", "http://127.0.0.1:9"],
         r"prm_server_urls: no PRM server answers at http://127.0.0.1:9/health"),
    ],
)
def test_launch_that_cannot_work_fails_at_start(tiny_models, monkeypatch, extra, message):
    monkeypatch.chdir(REPO)
    recipe = R1 / "reasonflux_prm_mixed.yaml"
    # No --dry-run: a real start must fail the same way, before the policy (a hub id here) is loaded; --use_cpu so
    # that this GPU-less machine gets past bf16 to the check under test.
    with pytest.raises(ConfigError, match=message):
        train_main(["--config", str(recipe), *tiny_overrides(tiny_models, recipe), "--use_cpu", *extra])


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
