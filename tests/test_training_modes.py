"""Short in-process GRPO runs: a beta schedule, the two-callable mode, a LoRA policy."""

import math
from pathlib import Path

import pytest
import torch

from reasonflux_rl.rewards.prm import MixedReward, PRMReward
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


@pytest.mark.parametrize(
    "schedule,schedule_steps,expected",
    [
        # Over max_steps = 5: 0.8 * k / 5.
        ("linear_warmup", None, [0.0, 0.16, 0.32, 0.48, 0.64]),
        # 0.4 * (1 + cos(k * 36 degrees)); cos 36 = 0.809017, cos 72 = 0.309017.
        ("cosine", None, [0.8, 0.723607, 0.523607, 0.276393, 0.076393]),
        # Over 3 steps, then held at its end (0, not negative) for the rest of the run.
        ("linear_decay", 3, [0.8, 0.533333, 0.266667, 0.0, 0.0]),
        # Over 2 steps, then held at prm_beta (not past it).
        ("linear_warmup", 2, [0.0, 0.4, 0.8, 0.8, 0.8]),
    ],
)
def test_logged_beta_follows_the_schedule(tiny_models, tmp_path, schedule, schedule_steps, expected):
    argv = base_argv(tiny_models, tmp_path, 5) + ["--prm_beta", "0.8", "--prm_beta_schedule", schedule]
    if schedule_steps is not None:
        argv += ["--prm_beta_schedule_steps", str(schedule_steps)]
    train_main(argv)
    rows = logged_steps(tmp_path)
    assert len(rows) == 5
    # Rewards for optimizer step k are computed when global_step is still k - 1, so row k logs the beta of step k - 1.
    assert [row["reasonflux/beta"] for row in rows] == pytest.approx(expected, abs=1e-6)


def test_separate_mode_trains_with_two_reward_functions(tmp_path):
    # On the lab, whose policy is right about 40% of the time, so that the outcome's weight is exercised too.
    repo = Path(__file__).resolve().parents[1]
    train_main(["--config", str(repo / "recipes/lab/cpu.yaml"), "--max_steps", "2", "--per_device_train_batch_size",
                "16", "--eval_strategy", "no", "--eval_on_start", "false", "--report_to", "none", "--output_dir",
                str(tmp_path), "--model_name_or_path", str(repo / "reasonflux_rl/lab/assets/policy"),
                "--prm_name_or_path", str(repo / "reasonflux_rl/lab/assets/prm"), "--reward_mode", "separate",
                "--prm_beta", "0.25"])
    rows = logged_steps(tmp_path)
    assert len(rows) == 2
    assert any(0.0 < row["rewards/outcome/mean"] < 1.0 for row in rows)
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


# By position in the batch, so that both set-ups see the same outcomes; None rows are references that could not be
# parsed, which TRL reads as NaN in the two-callable set-up.
OUTCOMES = [1.0, None, 0.0, 1.0, 0.0, 0.0, None, 1.0]


def positional_outcome(completions, **kwargs):
    return OUTCOMES[: len(completions)]


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_one_callable_and_two_callables_give_the_same_group_advantages(tiny_models, tmp_path, scale_rewards):
    """TRL itself computes both: the one MixedReward, and the outcome and PRMReward with weights [1 - beta, beta]."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from reasonflux_rl.prm.kinds.step_classifier import StepScorer

    scorer = StepScorer.from_pretrained(tiny_models.prm)
    beta, generations = 0.3, 4
    rows = [{"prompt": "Add 2 and 3."}, {"prompt": "What is 7 times 6?"}]
    batch = [rows[0]] * generations + [rows[1]] * generations

    def scored(name, reward_funcs, reward_weights):
        # Groups of four: with two, a z-scored advantage is +-1/sqrt(2) whatever the rewards.
        args = GRPOConfig(output_dir=str(tmp_path / name), use_cpu=True, report_to="none",
                          per_device_train_batch_size=8, num_generations=generations, max_completion_length=8,
                          reward_weights=reward_weights, scale_rewards=scale_rewards)
        trainer = GRPOTrainer(model=str(tiny_models.policy), reward_funcs=reward_funcs, args=args,
                              train_dataset=Dataset.from_list(rows))
        trainer.model.train()
        torch.manual_seed(0)
        return trainer, GRPOTrainer._generate_and_score_completions(trainer, batch)

    _, one = scored("one", [MixedReward(positional_outcome, scorer, beta=beta, normalisation="group_zscore",
                                        num_generations=generations)], None)
    trainer, two = scored("two", [positional_outcome, PRMReward(scorer, normalisation="group_zscore",
                                                                num_generations=generations)], [1 - beta, beta])
    assert torch.equal(one["completion_ids"], two["completion_ids"])  # same seed, same completions
    outcome_column = list(trainer._logs["rewards"]["positional_outcome"])
    assert [math.isnan(o) for o in outcome_column] == [o is None for o in OUTCOMES]
    torch.testing.assert_close(one["advantages"], two["advantages"], atol=1e-5, rtol=0)
    # The PRM moves the advantages: rows of one group with the same outcome (0 and 3, 4 and 5) get different ones.
    advantages = one["advantages"].tolist()
    assert abs(advantages[0] - advantages[3]) > 1e-3 and abs(advantages[4] - advantages[5]) > 1e-3


def test_lora_policy_trains_and_saves_an_adapter(tiny_models, tmp_path):
    train_main(base_argv(tiny_models, tmp_path, 2) + [
        "--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj",
    ])
    assert (tmp_path / "adapter_config.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()
    assert len(logged_steps(tmp_path)) == 2
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "adapter_model.safetensors")
    lora_b = {name: tensor for name, tensor in weights.items() if "lora_B" in name}
    assert {name.split(".")[-3] for name in lora_b} == {"q_proj", "v_proj"}
    # LoRA's B matrices start at zero (the adapter starts as the identity): training moved every one of them.
    assert all(tensor.abs().max() > 0 for tensor in lora_b.values()), [n for n, t in lora_b.items() if not t.any()]
