"""Short in-process GRPO runs: a beta schedule, the two-callable mode, a LoRA policy."""

import math

import pytest
import torch

from reasonflux_rl.rewards.prm import MixedReward, PRMReward
from reasonflux_rl.rewards.schedule import beta_at
from reasonflux_rl.train.launch import main as train_main


def base_argv(tiny_models, out, steps):
    return [
        "--model_name_or_path", str(tiny_models.policy), "--prm_name_or_path", str(tiny_models.prm),
        "--output_dir", str(out), "--use_cpu", "--report_to", "none", "--max_steps", str(steps),
        "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "12",
        "--logging_steps", "1", "--save_strategy", "no", "--outcome_num_workers", "1", "--dtype", "float32",
    ]


def logged_steps(out):
    import json

    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [row for row in history if "loss" in row]


@pytest.mark.parametrize("schedule", ["linear_warmup", "cosine"])
def test_logged_beta_follows_the_schedule(tiny_models, tmp_path, schedule):
    train_main(base_argv(tiny_models, tmp_path, 5) + ["--prm_beta", "0.8", "--prm_beta_schedule", schedule])
    rows = logged_steps(tmp_path)
    assert len(rows) == 5
    # Rewards for optimizer step k are computed when global_step is still k - 1.
    expected = [beta_at(schedule, 0.8, step, 5) for step in range(5)]
    assert [row["reasonflux/beta"] for row in rows] == pytest.approx(expected)
    assert len(set(round(b, 6) for b in expected)) > 1


def test_separate_mode_trains_with_two_reward_functions(tiny_models, tmp_path):
    train_main(base_argv(tiny_models, tmp_path, 2) + ["--reward_mode", "separate", "--prm_beta", "0.25"])
    rows = logged_steps(tmp_path)
    assert len(rows) == 2
    for row in rows:
        assert "rewards/outcome/mean" in row and "rewards/prm/mean" in row
        outcome, prm = row["rewards/outcome/mean"], row["rewards/prm/mean"]
        assert row["reward"] == pytest.approx(0.75 * outcome + 0.25 * prm, abs=1e-5)
        assert row["reasonflux/beta"] == 0.25  # logged by the PRM function; TRL applies it as a reward weight


def test_separate_weights_contradicting_the_config_are_refused(tiny_models, tmp_path):
    from reasonflux_rl.errors import ConfigError

    argv = base_argv(tiny_models, tmp_path, 1) + ["--reward_mode", "separate", "--reward_weights", "1.0", "1.0"]
    with pytest.raises(ConfigError, match=r"reward_weights=\[1.0, 1.0\] contradicts reward_mode='separate'"):
        train_main(argv)


def test_one_callable_and_two_callables_give_the_same_group_advantages(tiny_models):
    """TRL's default sum_then_normalize: sum weighted rewards, then subtract the group mean and divide by its std."""
    from reasonflux_rl.prm.kinds.step_classifier import StepScorer

    scorer = StepScorer.from_pretrained(tiny_models.prm)
    completions = ["A.\n\nB.", "C.", "D.\n\nE.\n\nF.", "G.\n\nH."]
    outcome = lambda completions, **kw: [1.0, 0.0, 0.0, 1.0]
    kwargs = dict(prompts=["p"] * 4, completions=completions)
    beta = 0.3
    mixed = torch.tensor(MixedReward(outcome, scorer, beta=beta, normalisation="group_zscore", num_generations=2)(**kwargs))
    prm = torch.tensor(PRMReward(scorer, normalisation="group_zscore", num_generations=2)(**kwargs))
    summed = (1 - beta) * torch.tensor(outcome(completions)) + beta * prm

    def advantages(rewards):
        grouped = rewards.view(-1, 2)
        return ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(-1)

    torch.testing.assert_close(advantages(mixed), advantages(summed))
    assert not math.isclose(float(mixed[0]), float(mixed[3]))


def test_lora_policy_trains_and_saves_an_adapter(tiny_models, tmp_path):
    train_main(base_argv(tiny_models, tmp_path, 2) + [
        "--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj",
    ])
    assert (tmp_path / "adapter_config.json").is_file()
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "model.safetensors").exists()
    assert len(logged_steps(tmp_path)) == 2
