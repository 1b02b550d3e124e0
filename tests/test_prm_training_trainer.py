"""prm train: a trained PRM beats its start on held-out steps, reads back through load_scorer exactly as it
predicted in training, in any start (causal LM, a PRM, LoRA); 2 processes train as 1; bad starts and rows fail
before any weights load; the recipes dry-run on a machine without a GPU."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rank_records import read_records
from safetensors.torch import load_file

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm import load_scorer
from reasonflux_rl.prm_training.start import inspect_start, load_start
from reasonflux_rl.prm_training.train_command import check_launch, parse_launch, train_prm

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORDS = ["add", "carry", "sum", "check", "count", "halve", "double", "note"]


def cue_rows(count, seed):
    """Trajectories whose steps are right unless they say "wrong": a cue a tiny PRM can learn in seconds, so the
    test shows training moves held-out figures (the lab's harder judgement is the lab build's, test_lab.py)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        steps = [f"{rng.choice(WORDS)} {rng.randint(1, 99)} {'wrong' if wrong else 'fine'} ."
                 for wrong in (rng.random() < 0.4 for _ in range(rng.randint(2, 5)))]
        targets = [0.0 if "wrong" in s else 1.0 for s in steps]
        answer = f"So the answer is $\\boxed{{{rng.randint(1, 9)}}}$."
        rows.append({"problem": f"Compute {rng.randint(1, 99)}.", "completion": "\n\n".join(steps) + "\n</think>\n\n"
                     + answer, "step_targets": [*targets, min(targets)], "trajectory_target": min(targets)})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def launch_for(start, train, out, *extra):
    return parse_launch(["--model_name_or_path", str(start), "--dataset_name", str(train), "--output_dir", str(out),
                         "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no", "--seed", "0",
                         "--disable_tqdm", "true", "--prm_system_prompt", "", *extra])


def train(start, train_rows, out, *extra):
    launch = launch_for(start, train_rows, out, *extra)
    _, data = check_launch(launch)
    return train_prm(launch, data), data


@pytest.fixture(scope="module")
def cue_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cue")
    return write_jsonl(folder / "train.jsonl", cue_rows(400, 0)), write_jsonl(folder / "eval.jsonl", cue_rows(80, 1))


@pytest.fixture(scope="module")
def trained(tiny_models, cue_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("prm-out")
    trainer, data = train(tiny_models.policy, cue_data[0], out, "--eval_dataset_name", str(cue_data[1]),
                          "--num_train_epochs", "3", "--learning_rate", "3e-3", "--loss", "bce",
                          "--eval_strategy", "epoch", "--eval_on_start", "true", "--batch_tokens", "2048")
    return trainer, data, out


def test_training_beats_the_untrained_start_on_held_out_steps(trained, capsys):
    trainer, _, out = trained
    evals = [e for e in trainer.state.log_history if "eval_step_accuracy" in e]
    first, last = evals[0], evals[-1]
    assert first["step"] == 0 and last["step"] == trainer.state.global_step
    assert last["eval_step_accuracy"] >= first["eval_step_accuracy"] + 0.25
    assert last["eval_step_auroc"] > 0.95 and last["eval_wrong_step_recall"] > 0.8
    report = json.loads((out / "prm_training.json").read_text())
    assert report["held_out"]["last"]["eval_step_accuracy"] == last["eval_step_accuracy"]
    assert report["start"]["continued"] is False and (out / "prm_training.png").stat().st_size > 1000


def test_the_checkpoint_scores_what_it_predicted_in_training(trained):
    trainer, data, out = trained
    predictions, _, _ = trainer.predict_rows()
    scorer = load_scorer(out, device="cpu", system_prompt=None)
    assert scorer.kind == "step_classifier"
    results = scorer.score([p.problem for p in data.eval], [p.completion for p in data.eval])
    for pair, result in zip(data.eval, results):
        assert result.step_indices == sorted(predictions.steps[pair.row])
        assert result.step_scores == pytest.approx([predictions.steps[pair.row][k] for k in result.step_indices],
                                                   abs=1e-5)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForProcessRewardModel"]


def test_continued_training_starts_from_the_prms_own_head(tiny_models):
    start = inspect_start(str(tiny_models.prm))
    model, _ = load_start(start)
    saved = load_file(str(tiny_models.prm / "model.safetensors"))
    assert start.continued and torch.equal(model.score[2].weight, saved["score.2.weight"])
    policy = inspect_start(str(tiny_models.policy))
    assert not policy.continued and "fresh 2-label step head" in policy.origin


def test_a_value_head_prm_gives_its_decoder_a_fresh_step_head(tmp_path):
    from reasonflux_rl.tiny import write_tiny_value_head

    start = inspect_start(str(write_tiny_value_head(tmp_path / "vh")))
    assert not start.continued and start.origin.startswith("a value_head PRM")


def test_lora_writes_the_adapter_and_a_merged_checkpoint_that_scores_as_it_trained(tiny_models, cue_data, tmp_path):
    out = tmp_path / "lora"
    trainer, data = train(tiny_models.policy, cue_data[0], out, "--use_peft", "true", "--lora_r", "4",
                          "--lora_target_modules", "q_proj", "v_proj", "--max_steps", "3", "--learning_rate", "1e-2",
                          "--eval_dataset_name", str(cue_data[1]))
    assert (out / "adapter" / "adapter_config.json").is_file()
    predictions, _, _ = trainer.predict_rows()
    scorer = load_scorer(out, device="cpu", system_prompt=None)
    pair = data.eval[0]
    [result] = scorer.score([pair.problem], [pair.completion])
    assert result.step_scores == pytest.approx([predictions.steps[pair.row][k] for k in result.step_indices],
                                               abs=1e-4)


def test_two_processes_train_as_one_accumulating_the_same_batches(tiny_models, tmp_path):
    rows = write_jsonl(tmp_path / "rows.jsonl", cue_rows(48, 2))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    script = str(HERE / "distributed_prm_training.py")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          script, str(tiny_models.policy), str(rows), str(tmp_path / "two"), "1"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-4000:]
    one = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                          script, str(tiny_models.policy), str(rows), str(tmp_path / "one"), "2"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-4000:]
    ranks, [single] = read_records(tmp_path / "two"), read_records(tmp_path / "one", ranks=1)
    assert [r["world_size"] for r in ranks] == [2, 2] and single["world_size"] == 1
    assert len(single["losses"]) == 3
    assert ranks[0]["losses"] == pytest.approx(single["losses"], rel=1e-5)
    assert ranks[0]["head"] == pytest.approx(single["head"], abs=1e-6) and ranks[0]["head"] == ranks[1]["head"]


# ----------------------------------------------------------------------------------------------- bad input


def test_a_backbone_the_layout_cannot_take_is_refused_before_loading(tmp_path, cue_data):
    start = tmp_path / "llama"
    start.mkdir()
    (start / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ConfigError, match="is a 'llama' model; the step-classifier layout .* takes a Qwen2 decoder"):
        check_launch(launch_for(start, cue_data[0], tmp_path / "out"))


def test_bad_rows_stop_training_before_any_weights_load(tiny_models, tmp_path, monkeypatch):
    rows = cue_rows(4, 3)
    rows[2]["step_targets"] = rows[2]["step_targets"][:-1]
    rows[3]["trajectory_target"] = 2.0
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    monkeypatch.setattr("reasonflux_rl.prm_training.start.load_start",
                        lambda *a, **k: pytest.fail("weights loaded before the rows were checked"))
    with pytest.raises(ConfigError) as err:
        check_launch(launch_for(tiny_models.policy, data, tmp_path / "out"))
    message = str(err.value)
    assert "row 2 (line 3): 'step_targets' has" in message and "row 3 (line 4): 'trajectory_target' is 2.0" in message
    assert "before training (training rows)" in message


def test_missing_target_columns_are_named(tiny_models, tmp_path):
    data = write_jsonl(tmp_path / "unlabelled.jsonl", [{"problem": "1+1?", "completion": "2"}])
    with pytest.raises(ConfigError, match="field 'step_targets' is in no input row"):
        check_launch(launch_for(tiny_models.policy, data, tmp_path / "out"))


def test_evaluation_without_held_out_rows_is_refused(tiny_models, cue_data, tmp_path):
    launch = launch_for(tiny_models.policy, cue_data[0], tmp_path / "out", "--eval_strategy", "steps")
    _, data = check_launch(launch)
    with pytest.raises(ConfigError, match="eval_strategy='steps' needs held-out rows"):
        train_prm(launch, data)


# ------------------------------------------------------------------------------------------------ recipes


def run_cli(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "reasonflux_rl.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_papers_recipe_dry_runs_for_8_gpus_with_zero3_on_a_cpu_node(tiny_models, cue_data):
    proc = run_cli("prm", "train", "--config", "recipes/prm_train/qwen2.5_7b_instruct_openthoughts.yaml", "--dry-run",
                   "--accelerate_config", "recipes/accelerate/zero3_1node_8gpu.yaml",
                   "--model_name_or_path", str(tiny_models.policy), "--dataset_name", str(cue_data[0]),
                   "--attn_implementation", "sdpa")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["batch"]["num_processes"] == 8 and report["deepspeed"]["zero_stage"] == 3
    assert report["data"]["train"]["rows"] == 400 - 200 and report["data"]["eval"]["rows"] == 200
    assert report["objective"]["loss"] == "mse" and report["optimisation"]["bf16"] is True
    assert any("bf16" in item for item in report["checked_at_launch"])


def test_the_label_recipes_dry_run_on_their_layouts(tmp_path):
    openthoughts = write_jsonl(tmp_path / "ot.jsonl", [{
        "problem": "What is 1+1?", "deepseek_reasoning": "1+1 is 2.\n\nCheck: 2-1=1.",
        "deepseek_solution": "The answer is $\\boxed{2}$.", "ground_truth_solution": "$2$", "domain": "math"}])
    proc = run_cli("prm", "label", "--config", "recipes/prm_train/qwen2.5_7b_instruct_openthoughts_label_mc.yaml",
                   "--dry-run", "--input", str(openthoughts), "--split", "train", "--policy",
                   "reasonflux_rl/lab/assets/policy", "--output", str(tmp_path / "labelled.jsonl"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 rows, 3 steps" in proc.stdout and "2 step prefixes x 8 rollouts = 16 continuations" in proc.stdout
    assert "nothing was labelled" in proc.stdout and not (tmp_path / "labelled.jsonl").exists()
    missing = run_cli("prm", "label", "--config", "recipes/prm_train/qwen2.5_7b_instruct_openthoughts_label_mc.yaml",
                      "--dry-run", "--input", str(openthoughts), "--split", "train", "--output",
                      str(tmp_path / "labelled.jsonl"))
    assert missing.returncode == 2 and "policy '/checkpoints/DeepSeek-R1-Distill-Qwen-7B' is not a local" in (
        missing.stderr)


TRAIN_RECIPES = sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes/prm_train").glob("*.yaml")
                       if "model_name_or_path" in p.read_text())
LABEL_RECIPES = sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes/prm_train").glob("*.yaml")
                       if str(p.relative_to(REPO)) not in TRAIN_RECIPES)


@pytest.mark.parametrize("recipe", TRAIN_RECIPES)
def test_every_train_recipe_dry_runs_with_tiny_checkpoints(recipe, tiny_models, cue_data):
    proc = run_cli("prm", "train", "--config", recipe, "--dry-run", "--model_name_or_path", str(tiny_models.policy),
                   "--dataset_name", str(cue_data[0]), "--eval_dataset_name", str(cue_data[1]),
                   "--attn_implementation", "sdpa")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["data"]["train"]["rows"] > 0 and report["start"]["continued"] is False


@pytest.mark.parametrize("recipe", LABEL_RECIPES)
def test_every_label_recipe_dry_runs_on_lab_solutions(recipe, tmp_path):
    from reasonflux_rl.lab.build import LabBuildArguments, write_trajectories

    train_rows, _ = write_trajectories(LabBuildArguments(prm_examples=3, prm_held_out=1), tmp_path)
    proc = run_cli("prm", "label", "--config", recipe, "--dry-run", "--input", str(train_rows), "--split", "train",
                   "--policy", "reasonflux_rl/lab/assets/policy", "--output", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prm label: 3 rows" in proc.stdout and "nothing was labelled" in proc.stdout


def test_a_run_reporting_to_wandb_logs_the_held_out_figures_in_an_offline_run_beside_the_prm(tiny_models, cue_data,
                                                                                          tmp_path):
    from wandb_offline import history

    out = tmp_path / "run"
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    proc = subprocess.run(
        [sys.executable, "-m", "reasonflux_rl.cli", "prm", "train", "--model_name_or_path", str(tiny_models.policy),
         "--dataset_name", str(cue_data[0]), "--eval_dataset_name", str(cue_data[1]), "--output_dir", str(out),
         "--use_cpu", "true", "--max_steps", "2", "--eval_strategy", "steps", "--eval_steps", "2",
         "--report_to", "wandb", "--save_strategy", "no", "--prm_system_prompt", ""],
        cwd=REPO, env={**env, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_file] = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    logged = [row for row in history(run_file) if "eval/step_accuracy" in row]
    assert len(logged) == 1 and 0.0 <= logged[0]["eval/step_accuracy"] <= 1.0


def test_a_step_tag_the_tokenizer_lacks_is_added_and_the_embeddings_grow(tiny_models, cue_data, tmp_path):
    out = tmp_path / "tagged"
    vocab = json.loads((tiny_models.policy / "config.json").read_text())["vocab_size"]
    train(tiny_models.policy, cue_data[0], out, "--max_steps", "1", "--prm_step_tag", "<step>")
    scorer = load_scorer(out, device="cpu", system_prompt=None, step_tag="<step>")
    assert scorer.tokenizer.convert_tokens_to_ids("<step>") == vocab  # a new id, past the old vocabulary
    assert scorer.model.get_input_embeddings().num_embeddings == vocab + 1
    [result] = scorer.score(["1+1?"], ["Add.\n</think>\n\nSo 2."])
    assert len(result.step_scores) == 2
