"""Step-level credit: token_advantages against hand-computed values, step -> token mapping on tricky
tokenisations, and DenseCreditGRPOTrainer against TRL's own advantages and gradients."""

import json
import os
import random
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from rank_records import read_records
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from trl import GRPOConfig, GRPOTrainer

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm import load_scorer
from reasonflux_rl.prm.engine.format import trajectory_step_spans, trajectory_steps
from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.rewards.build import build_reward_funcs
from reasonflux_rl.rewards.config import RewardArguments
from reasonflux_rl.rewards.credit import CreditOptions, outcome_advantages, token_advantages, transform_steps
from reasonflux_rl.rewards.dense_trainer import DenseCreditGRPOTrainer, check_dense_credit
from reasonflux_rl.rewards.prm import CreditInputs, MixedReward, PRMBatch
from reasonflux_rl.rewards.step_tokens import step_token_ends, token_char_ends
from reasonflux_rl.tiny import build_tokenizer
from reasonflux_rl.train.dataset import prompt_rows

REPO = Path(__file__).resolve().parents[1]
LAB_PRM = str(REPO / "reasonflux_rl/lab/assets/prm")
LAB_POLICY = str(REPO / "reasonflux_rl/lab/assets/policy")


# --- the math -------------------------------------------------------------------------------------------------------


def test_suffix_sum_by_hand():
    # Group of two: outcomes 1 and 0; steps [0.8, 0.2] ending at tokens 1 and 3, and [0.6] ending at token 2.
    # A_outcome = +-0.5 / (0.70711 + 1e-4) = +-0.70700.
    # Pooled steps 0.8, 0.2, 0.6: mean 0.53333, unbiased std 0.30551; r~ = 0.87257, -1.09072, 0.21815.
    # Row 1: tokens 0-1 carry r~1 + r~2 = -0.21815, tokens 2-3 carry r~2 = -1.09072.
    # Row 2: tokens 0-2 carry 0.21815, token 3 is after the last step: 0.
    got = token_advantages([1.0, 0.0], [[0.8, 0.2], [0.6]], [[1, 3], [2]], [4, 4], group_size=2, beta=0.5)
    expected = [
        [0.35350 - 0.10907, 0.35350 - 0.10907, 0.35350 - 0.54536, 0.35350 - 0.54536],
        [-0.35350 + 0.10907, -0.35350 + 0.10907, -0.35350 + 0.10907, -0.35350],
    ]
    assert got == [pytest.approx(row, abs=1e-4) for row in expected]


def test_soft_min_by_hand():
    # T = 0.1: [0.9, 0.1] weighs exp(-8) : 1, so r* = [0.9 * 3.3535e-4, 0.1 * 0.99966] = [3.0182e-4, 0.099966];
    # [0.5] keeps 0.5. Pooled: mean 0.20009, std 0.26447; r~ = -0.75515, -0.37844, 1.13359.
    got = token_advantages([1.0, 1.0], [[0.9, 0.1], [0.5]], [[0, 1], [0]], [2, 1], group_size=2, beta=1.0,
                           credit="soft_min", temperature=0.1)
    assert got == [pytest.approx([-1.13359, -0.37844], abs=1e-4), pytest.approx([1.13359], abs=1e-4)]


def test_soft_min_credits_the_weakest_step_not_the_sum_of_good_ones():
    # Four good steps and one bad one against two mediocre steps: summed, the long completion's first token looks
    # better than the short one's; min-form, it does not.
    scores = [[0.9, 0.9, 0.9, 0.9, 0.1], [0.5, 0.5]]
    ends, lengths = [[0, 1, 2, 3, 4], [0, 1]], [5, 2]
    summed = token_advantages([1.0, 1.0], scores, ends, lengths, 2, beta=1.0, credit="suffix_sum")
    min_form = token_advantages([1.0, 1.0], scores, ends, lengths, 2, beta=1.0, credit="soft_min", temperature=0.05)
    assert summed[0][0] > summed[1][0]
    assert min_form[0][0] < min_form[1][0]


def test_delta_transform_by_hand():
    # delta: [0.9, 0.1] -> [0.8, 0.1]; [0.5, 0.5] -> [0.0, 0.5]. Pooled mean 0.35, std 0.36968;
    # r~ = 1.21692, -0.67607, -0.94649, 0.40564.
    got = token_advantages([0.0, 0.0], [[0.9, 0.1], [0.5, 0.5]], [[0, 1], [0, 1]], [2, 2], 2, beta=1.0,
                           step_transform="delta")
    assert got == [pytest.approx([0.54085, -0.67607], abs=1e-4), pytest.approx([-0.54085, 0.40564], abs=1e-4)]


def test_step_transforms_by_hand():
    assert transform_steps([0.9, 0.2, 0.5], "clip", clip_threshold=0.5) == pytest.approx([0.0, -0.3, 0.0])
    assert transform_steps([0.9, 0.2, 0.5], "delta") == pytest.approx([0.7, -0.3, 0.5])
    assert transform_steps([], "delta") == []
    with pytest.raises(ValueError, match="step_transform='square' is not one of"):
        transform_steps([0.5], "square")


@pytest.mark.parametrize("credit", ["suffix_sum", "soft_min"])
def test_equal_step_scores_in_a_group_leave_only_the_outcome(credit):
    rng = random.Random(0)
    outcome = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    steps = [[0.7] * rng.randint(1, 4) for _ in outcome]
    ends = [list(range(len(s))) for s in steps]
    lengths = [len(s) + 2 for s in steps]
    got = token_advantages(outcome, steps, ends, lengths, group_size=3, beta=0.4, credit=credit)
    base = outcome_advantages(outcome, 3)
    if credit == "suffix_sum":
        assert got == [pytest.approx([0.6 * a] * n) for a, n in zip(base, lengths)]
    else:
        # soft_min divides a score among a completion's steps, so equal scores differ across lengths: the process
        # part is then not zero, but it still never varies within a step.
        assert all(len(set(row[:len(s)])) <= len(s) for row, s in zip(got, steps))


def test_beta_zero_is_the_outcome_advantage_on_every_token():
    outcome = [1.0, 0.0, None, 1.0]
    got = token_advantages(outcome, [[0.9], [0.1, 0.5], [], [0.3]], [[2], [0, 1], [], [0]], [3, 2, 2, 1], 2, beta=0.0)
    base = outcome_advantages(outcome, 2)
    assert got == [pytest.approx([a] * n) for a, n in zip(base, [3, 2, 2, 1])]
    assert base[2] == 0.0 and base[0] > 0 > base[1]


@pytest.mark.parametrize("scale_rewards, expected", [
    ("group", [0.70700, -0.70700, 0.0, 0.0]),
    ("none", [0.5, -0.5, 0.0, 0.0]),
    # Batch std of [1, 0, 1, 1] is 0.5: (1 - 0.5) / 0.5001 and (1 - 1) / 0.5001.
    ("batch", [0.99980, -0.99980, 0.0, 0.0]),
])
def test_outcome_advantages_scale_as_trl(scale_rewards, expected):
    assert outcome_advantages([1.0, 0.0, 1.0, 1.0], 2, scale_rewards) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(step_ends=[[5], [0]]), "non-decreasing token indices below its length"),
    (dict(step_ends=[[1, 0], [0]], step_scores=[[0.5, 0.5], [0.5]]), "non-decreasing"),
    (dict(step_scores=[[0.5, 0.5], [0.5]]), "2 step scores but 1 step ends"),
    (dict(credit="sequence"), "'sequence' is TRL's own advantage"),
    (dict(group_size=3), "do not make whole groups"),
    (dict(lengths=[2]), "one of each per completion"),
    (dict(step_scores=[[float("nan")], [0.5]]), "must be finite"),
])
def test_bad_inputs_are_refused(kwargs, message):
    args = dict(outcome=[1.0, 0.0], step_scores=[[0.5], [0.5]], step_ends=[[1], [0]], lengths=[2, 2], group_size=2,
                beta=0.5)
    with pytest.raises(ValueError, match=message):
        token_advantages(**{**args, **kwargs})


def test_credit_options_are_checked_where_they_are_declared():
    with pytest.raises(ConfigError, match="prm_credit='dense' is not allowed"):
        RewardArguments(prm_name_or_path="prm", prm_credit="dense")
    with pytest.raises(ConfigError, match="acts on dense credit only"):
        RewardArguments(prm_name_or_path="prm", prm_step_transform="clip")
    with pytest.raises(ConfigError, match="needs prm_name_or_path and reward_mode 'mixed'"):
        RewardArguments(prm_beta=0, prm_credit="suffix_sum")
    with pytest.raises(ConfigError, match="prm_credit_temperature=0.0 must be positive"):
        RewardArguments(prm_name_or_path="prm", prm_credit="soft_min", prm_credit_temperature=0.0)
    assert CreditOptions("suffix_sum").dense and not CreditOptions().dense


# --- step -> token mapping ------------------------------------------------------------------------------------------

MULTIBYTE = [
    "Schritt eins: ä = 1.\n\nZweiter Schritt ∑ 中文 🙂 straddles\n\n\nthe end 🙂",
    "<think>\nx² + 2 = 6 ⇒ x = ±2.\n\nCheck: (±2)² = 4 ✓\n</think>\n\nSo $x = \\boxed{2}$ 🙂🙂",
]


def byte_level_tokenizer():
    """A byte-level BPE (as Qwen2's) whose merges cut multi-byte characters between tokens."""
    return build_tokenizer(vocab_size=300, texts=MULTIBYTE * 3 + ["plain ascii text"])


def metaspace_tokenizer():
    """A sentencepiece-style tokenizer (not byte-level): the mapping decodes it incrementally."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "</s>"], show_progress=False)
    backend.train_from_iterator(MULTIBYTE * 3, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>")


def reference_char_ends(tokenizer, ids):
    """Quadratic but obviously right: how much of the text the first t + 1 tokens complete."""
    return [len(tokenizer.decode(ids[: t + 1], skip_special_tokens=True).rstrip("\ufffd")) for t in range(len(ids))]


@pytest.mark.parametrize("make", [byte_level_tokenizer, metaspace_tokenizer, build_tokenizer])
@pytest.mark.parametrize("text", MULTIBYTE)
def test_token_char_ends_match_decoding_prefixes(make, text):
    tokenizer = make()
    ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    ends = token_char_ends(tokenizer, ids, decoded)
    assert ends == reference_char_ends(tokenizer, ids)
    assert ends[-1] == ends[-2] == len(decoded)  # the stripped EOS adds nothing


def test_some_tokens_really_hold_part_of_a_character():
    # Otherwise the multi-byte tests would not test what they say.
    tokenizer = byte_level_tokenizer()
    ids = tokenizer.encode(MULTIBYTE[0], add_special_tokens=False)
    assert any(tokenizer.decode([i]).endswith("\ufffd") for i in ids)


def test_a_cut_inside_a_character_and_a_rewritten_text():
    tokenizer = byte_level_tokenizer()
    ids = tokenizer.encode(MULTIBYTE[0], add_special_tokens=False)
    cut = next(k for k in range(1, len(ids)) if tokenizer.decode(ids[:k]).endswith("\ufffd"))
    # A completion cut at the length limit inside a character: TRL's text ends in U+FFFD, which maps too.
    text = tokenizer.decode(ids[:cut], skip_special_tokens=True)
    assert token_char_ends(tokenizer, ids[:cut], text)[-1] == len(text)
    # Tokens that do not spell the PRM's text cannot place its steps.
    assert token_char_ends(tokenizer, ids, "something else") is None


@pytest.mark.parametrize("make", [byte_level_tokenizer, build_tokenizer])
def test_each_step_ends_at_the_token_that_completes_its_last_character(make):
    tokenizer = make()
    text = MULTIBYTE[1]
    ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    spans = trajectory_step_spans(text)
    assert [text[s:e] for s, e in spans] == trajectory_steps(text)
    ends = step_token_ends(token_char_ends(tokenizer, ids, text), spans)
    for (_, end), token in zip(spans, ends):
        assert len(tokenizer.decode(ids[: token + 1], skip_special_tokens=True).rstrip("\ufffd")) >= end
        assert len(tokenizer.decode(ids[:token], skip_special_tokens=True).rstrip("\ufffd")) < end
    assert ends[-1] < len(ids) - 1  # the EOS comes after the last step


def test_sixteen_thousand_tokens_map_in_one_pass():
    tokenizer = build_tokenizer()
    text = "Step: 2 + 2 = 4 ∑.\n\n" * 2000
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) > 16000
    ends = token_char_ends(tokenizer, ids, text)
    spans = trajectory_step_spans(text)
    token_ends = step_token_ends(ends, spans)
    assert len(token_ends) == 2000 and token_ends == sorted(token_ends) and token_ends[-1] < len(ids)
    # Spot checks against decoding prefixes.
    for t in (0, 777, 9001, len(ids) - 1):
        assert ends[t] == len(tokenizer.decode(ids[: t + 1]).rstrip("\ufffd"))


def test_the_prm_reports_the_span_of_each_scored_step_after_truncation(tiny_models):
    text = "<think>\n" + "\n\n".join(f"Step {k}: add {k} to the total, which is now {k * (k + 1) // 2}."
                                     for k in range(1, 30)) + "\n</think>\n\nThe total is 435."
    whole = StepScorer.from_pretrained(tiny_models.prm)
    [full] = whole.score(["Add 1 to 29."], [text])
    assert [text[s:e] for s, e in full.step_spans] == trajectory_steps(text)
    cut = StepScorer.from_pretrained(tiny_models.prm, max_length=160)
    [kept] = cut.score(["Add 1 to 29."], [text])
    assert 0 < kept.dropped_steps < kept.num_steps
    assert kept.step_spans == [full.step_spans[i] for i in kept.step_indices]
    assert kept.step_spans[0][0] > 0  # the oldest steps were dropped; their tokens fall under the first kept step


# --- the trainer ----------------------------------------------------------------------------------------------------


def lab_trainer(tmp_path, beta, num_generations=8, **config):
    funcs, _ = build_reward_funcs(
        RewardArguments(prm_name_or_path=LAB_PRM, prm_system_prompt="", prm_beta=beta, prm_credit="suffix_sum",
                        outcome_num_workers=1),
        num_generations=num_generations, device="cpu",
    )
    rows = prompt_rows("builtin:lab", instruction="")
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=16,
                      num_generations=num_generations, max_completion_length=96, temperature=1.0, report_to="none",
                      seed=0, **config)
    trainer = DenseCreditGRPOTrainer(model=LAB_POLICY, reward_funcs=funcs, args=args,
                                     train_dataset=Dataset.from_list(rows))
    trainer.model.train()
    return trainer, rows


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_beta_zero_gives_trl_its_own_advantages(tmp_path, scale_rewards):
    trainer, rows = lab_trainer(tmp_path, beta=0.0, scale_rewards=scale_rewards)
    try:
        batch = [rows[0]] * 8 + [rows[1]] * 8
        torch.manual_seed(0)
        trl_output = GRPOTrainer._generate_and_score_completions(trainer, batch)
        ours = trainer._token_advantages(trainer.mixed_reward.last_credit_inputs, trl_output["completion_ids"])
        lengths = [len(ids) for ids in trainer.mixed_reward.last_credit_inputs.completion_ids]
        assert trl_output["advantages"].abs().max() > 0.1  # outcomes vary: the comparison is not of zeros
        for row, advantage, length in zip(ours, trl_output["advantages"], lengths):
            torch.testing.assert_close(row[:length], advantage.expand(length), atol=1e-5, rtol=0)
            assert not row[length:].any()
    finally:
        trainer.mixed_reward.close()


def crafted_batch(tokenizer, scores):
    """Two completions of one prompt, three steps each, with the step scores given."""
    texts = ["<think>\nStep 1: H(5) = 7\n\nStep 2: G(7) = 1\n\nStep 3: H(1) = 3\n</think>\n\n3"] * 2
    ids = [tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id] for t in texts]
    spans = [trajectory_step_spans(t) for t in texts]
    prm = PRMBatch(raw=[0.5, 0.5], normalised=[0.5, 0.5], step_scores=scores, num_steps=[4, 4],
                   dropped_fraction=[0.0, 0.0], step_spans=spans)
    return CreditInputs(texts=texts, completion_ids=ids, outcome=[1.0, 1.0], prm=prm, beta=0.5), ids, spans


def test_a_low_scored_step_gets_a_lower_advantage_and_its_tokens_are_pushed_down(tmp_path):
    trainer, _ = lab_trainer(tmp_path, beta=0.5, num_generations=2)
    try:
        tokenizer = trainer.processing_class
        scored, ids, spans = crafted_batch(tokenizer, [[0.9, 0.1, 0.9, 0.9], [0.9, 0.9, 0.9, 0.9]])
        width = max(map(len, ids))
        completion_ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids])
        advantages = trainer._token_advantages(scored, completion_ids)
        ends = step_token_ends(token_char_ends(tokenizer, ids[0], scored.texts[0]), spans[0])
        first, bad = advantages[0, : ends[0] + 1], advantages[0, ends[0] + 1 : ends[1] + 1]
        after = advantages[0, ends[1] + 1 : ends[2] + 1]
        assert bad.max() < first.min() and bad.max() < after.min()
        assert advantages[0, : ends[3] + 1].mean() < advantages[1, : ends[3] + 1].mean()

        # TRL's own loss on these advantages: the gradient on each token's log-probability is -A (times a positive
        # normaliser), so descent lowers the bad step's tokens and raises the others.
        mask = (completion_ids != tokenizer.pad_token_id).long()
        logps = torch.zeros(completion_ids.shape, requires_grad=True)
        trainer._get_per_token_logps_and_entropies = lambda *a, **k: (logps, torch.zeros(completion_ids.shape), None)
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which this test does not run
        inputs = {"prompt_ids": torch.ones(2, 1, dtype=torch.long), "prompt_mask": torch.ones(2, 1, dtype=torch.long),
                  "completion_ids": completion_ids, "completion_mask": mask, "advantages": advantages,
                  "num_items_in_batch": mask.sum()}
        trainer._compute_loss(trainer.model, inputs).backward()
        moved = mask.bool() & (advantages != 0)
        scale = logps.grad[moved] / -advantages[moved]
        assert scale.min() > 0 and torch.allclose(scale, scale[0])
        assert logps.grad[0, ends[0] + 1 : ends[1] + 1].min() > logps.grad[0, : ends[0] + 1].max()
    finally:
        trainer.mixed_reward.close()


def test_a_batch_without_the_prm_trains_on_the_outcome(tmp_path):
    trainer, _ = lab_trainer(tmp_path, beta=0.5, num_generations=2)
    try:
        tokenizer = trainer.processing_class
        scored, ids, _ = crafted_batch(tokenizer, [[0.9, 0.1, 0.9, 0.9], [0.9, 0.9, 0.9, 0.9]])
        scored.outcome = [1.0, 0.0]
        scored.prm.unavailable = True
        completion_ids = torch.tensor(ids)
        advantages = trainer._token_advantages(scored, completion_ids)
        expected = outcome_advantages([1.0, 0.0], 2)
        assert torch.allclose(advantages, torch.tensor(expected)[:, None].expand_as(advantages))
    finally:
        trainer.mixed_reward.close()


@pytest.mark.parametrize("setting, message", [
    (dict(loss_type="vespo"), "loss_type='vespo'"),
    (dict(importance_sampling_level="sequence"), "importance_sampling_level='sequence'"),
    (dict(off_policy_mask_threshold=0.5), "off_policy_mask_threshold"),
    (dict(multi_objective_aggregation="normalize_then_sum"), "multi_objective_aggregation"),
])
def test_sequence_level_settings_are_refused(setting, message):
    base = dict(loss_type="dapo", importance_sampling_level="token", off_policy_mask_threshold=None,
                multi_objective_aggregation="sum_then_normalize")
    with pytest.raises(ConfigError, match=message):
        check_dense_credit(types.SimpleNamespace(**{**base, **setting}))
    check_dense_credit(types.SimpleNamespace(**base))


def test_the_trainer_needs_one_mixed_reward_with_dense_credit(tiny_models, tmp_path):
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=2, num_generations=2,
                      report_to="none")
    data = Dataset.from_list([{"prompt": "1+1?", "solution": "2"}] * 2)
    sequence = MixedReward(lambda completions, **kw: [0.0] * len(completions),
                           load_scorer(str(tiny_models.prm), device="cpu"), beta=0.5)
    for funcs in ([sequence], [lambda completions, **kw: [0.0] * len(completions)]):
        with pytest.raises(ConfigError, match="needs reward_funcs=\\[one MixedReward"):
            DenseCreditGRPOTrainer(model=str(tiny_models.policy), reward_funcs=funcs, args=args, train_dataset=data)


@pytest.mark.parametrize("credit, extra", [
    ("suffix_sum", []),
    # LoRA, and PURE's credit with Gao et al.'s clip.
    ("soft_min",
     ["--use_peft", "--lora_r", "4", "--lora_target_modules", "all-linear", "--prm_step_transform", "clip"]),
])
def test_dense_credit_trains_through_the_cli(tmp_path, credit, extra):
    # Two optimizer steps of two accumulated micro-batches each, from one generation batch of two groups per step.
    out = tmp_path / credit
    cli = Path(sys.executable).with_name("reasonflux-rl")
    proc = subprocess.run(
        [str(cli), "train", "--config", "recipes/lab/cpu.yaml", "--prm_credit", credit, "--max_steps", "2",
         "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2", "--eval_strategy", "no",
         "--eval_on_start", "false", "--report_to", "none", "--output_dir", str(out), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    steps = [row for row in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in row]
    assert len(steps) == 2
    for row in steps:
        assert row["reasonflux/process_advantage_std"] > 0
        assert row["reasonflux/credit_unmapped"] == 0
        assert row["reasonflux/step_tokens_mean"] > 1
    assert (out / ("adapter_model.safetensors" if extra else "model.safetensors")).is_file()


def test_two_process_advantages_equal_one_process(tiny_models, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "tests")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "tests/distributed_credit.py"), str(tiny_models.policy), str(tiny_models.prm), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = read_records(tmp_path)
    assert ranks[0]["world_size"] == 2 and len(ranks[0]["calls"]) == len(ranks[1]["calls"]) == 2
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.policy)
    for call0, call1 in zip(ranks[0]["calls"], ranks[1]["calls"]):
        # Three completions per rank in groups of two: the middle group straddles the ranks.
        joined = {key: call0[key] + call1[key] for key in call0}
        ends = [step_token_ends(token_char_ends(tokenizer, ids, text), spans)
                for ids, text, spans in zip(joined["ids"], joined["texts"], joined["spans"])]
        single = token_advantages(joined["outcome"], joined["scores"], ends, [len(i) for i in joined["ids"]],
                                  group_size=2, beta=0.5)
        assert joined["advantages"] == [pytest.approx(row, abs=1e-5) for row in single]
        # Both parts are at work: the outcomes differ, and the PRM moves the advantages off the outcome's.
        outcome_part = outcome_advantages(joined["outcome"], 2)
        assert len(set(joined["outcome"])) > 1
        assert any(row != pytest.approx([0.5 * a] * len(row), abs=1e-3) for row, a in zip(single, outcome_part))
        with pytest.raises(ValueError, match="whole groups"):
            token_advantages(call0["outcome"], call0["scores"], ends[:3], [len(i) for i in call0["ids"]], 2, 0.5)


def test_trl_grpo_users_are_told_dense_credit_needs_the_trainer(monkeypatch, tiny_models):
    from reasonflux_rl.rewards import build

    monkeypatch.setattr(build, "_default", None)
    monkeypatch.setenv("REASONFLUX_PRM_NAME_OR_PATH", str(tiny_models.prm))
    monkeypatch.setenv("REASONFLUX_PRM_CREDIT", "suffix_sum")
    with pytest.raises(ConfigError, match="trl grpo.*one reward per completion.*DenseCreditGRPOTrainer"):
        build.mixed_reward(prompts=["1+1?"], completions=["2"], solution=["2"])
    assert build._default is None


def test_a_dry_run_refuses_dense_credit_with_a_sequence_level_loss(tmp_path):
    from reasonflux_rl.train.launch import check_launch, parse_launch

    launch = parse_launch(["--config", str(REPO / "recipes/lab/cpu.yaml"), "--output_dir", str(tmp_path),
                           "--prm_name_or_path", LAB_PRM, "--model_name_or_path", LAB_POLICY,
                           "--prm_credit", "suffix_sum", "--loss_type", "vespo", "--dry-run"])
    with pytest.raises(ConfigError, match="loss_type='vespo' weights whole sequences"):
        check_launch(launch)
