"""The step-classifier scorer: one score per step, batch-independent, equal to the official one-sample recipe."""

import random

import pytest
import torch
from reference import reference_step_scores

from reasonflux_rl.prm import load_scorer
from reasonflux_rl.prm.engine.format import trajectory_steps
from reasonflux_rl.prm.kinds.step_classifier import StepScorer

PROBLEM = "What is $3 \\times 4$?"


def random_completion(rng, n_thinking, n_response):
    words = ["so", "then", "12", "we", "multiply", "3", "4", "check", "wait", "+", "=", "x"]
    step = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(2, 30)))
    thinking = "\n\n".join(step() for _ in range(n_thinking))
    response = "\n\n\n".join(step() for _ in range(n_response))
    return f"<think>\n{thinking}\n</think>\n\n{response}"


@pytest.fixture(scope="module")
def scorer(tiny_models):
    return StepScorer.from_pretrained(tiny_models.prm, batch_tokens=2048)


def test_one_score_per_non_empty_blank_line_step(scorer):
    completion = "<think>\nFirst.\n\n\n\nSecond.\n  \n\nThird.\n</think>\n\nSo $\\boxed{12}$.\n\nDone."
    [result] = scorer.score([PROBLEM], [completion])
    assert len(result.step_scores) == 5 == result.num_steps
    assert all(0.0 <= s <= 1.0 for s in result.step_scores)


@pytest.mark.parametrize("parts,expected", [("both", 4), ("thinking", 3), ("response", 1)])
def test_parts_select_the_trajectory_or_the_response(scorer, parts, expected):
    scorer.parts = parts
    try:
        [result] = scorer.score([PROBLEM], ["<think>\nA.\n\nB.\n\nC.\n</think>\n\nD."])
    finally:
        scorer.parts = "both"
    assert len(result.step_scores) == expected


def test_scores_equal_official_one_sample_recipe(scorer, tiny_models):
    rng = random.Random(0)
    completions = [random_completion(rng, rng.randint(1, 12), rng.randint(1, 3)) for _ in range(6)]
    results = scorer.score([PROBLEM] * len(completions), completions)
    for completion, result in zip(completions, results):
        expected = reference_step_scores(tiny_models.prm, PROBLEM, trajectory_steps(completion))
        assert len(result.step_scores) == len(expected)
        torch.testing.assert_close(torch.tensor(result.step_scores), torch.tensor(expected), atol=1e-5, rtol=0)


def test_sample_scores_do_not_depend_on_its_batch(scorer):
    rng = random.Random(1)
    completions = [random_completion(rng, n, 2) for n in (1, 9, 3, 15, 2, 6)]
    alone = [scorer.score([PROBLEM], [c])[0].step_scores for c in completions]
    batched = [r.step_scores for r in scorer.score([PROBLEM] * 6, completions)]
    order = [3, 0, 5, 1, 4, 2]
    shuffled = scorer.score([PROBLEM] * 6, [completions[i] for i in order])
    for position, i in enumerate(order):
        torch.testing.assert_close(torch.tensor(shuffled[position].step_scores), torch.tensor(alone[i]), atol=1e-5,
                                   rtol=0)
    for a, b in zip(alone, batched):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)


def test_small_token_budget_gives_same_scores_as_one_big_batch(tiny_models):
    rng = random.Random(2)
    completions = [random_completion(rng, rng.randint(1, 10), 1) for _ in range(8)]
    big = StepScorer.from_pretrained(tiny_models.prm, batch_tokens=1 << 20).score([PROBLEM] * 8, completions)
    small = StepScorer.from_pretrained(tiny_models.prm, batch_tokens=300).score([PROBLEM] * 8, completions)
    for a, b in zip(big, small):
        torch.testing.assert_close(torch.tensor(a.step_scores), torch.tensor(b.step_scores), atol=1e-5, rtol=0)


def test_empty_completion_has_no_steps_and_no_score(scorer):
    [result] = scorer.score([PROBLEM], ["\n\n  \n"])
    assert result.step_scores == [] and result.num_steps == 0


def test_step_tag_inside_policy_text_adds_no_score(scorer):
    [result] = scorer.score([PROBLEM], ["A <extra_0> B.\n\nC."])
    assert len(result.step_scores) == 2


def test_max_steps_merges_the_tail(scorer):
    scorer.max_steps = 3
    try:
        [result] = scorer.score([PROBLEM], ["<think>\n1.\n\n2.\n\n3.\n\n4.\n\n5.\n</think>\n\n6."])
    finally:
        scorer.max_steps = None
    assert len(result.step_scores) == 3 and result.num_steps == 3


def test_thinking_prefilled_reads_a_cut_off_completion_as_thinking(tiny_models):
    """Under DeepSeek-R1-Distill's template a completion without </think> is thinking cut at the length limit."""
    from reasonflux_rl.rewards.build import build_reward
    from reasonflux_rl.rewards.config import RewardArguments

    cut = "Let me try 2 + 2.\n\nIt is 4, or"
    as_response = load_scorer(tiny_models.prm, parts="thinking").score([PROBLEM], [cut])[0]
    as_thinking = load_scorer(tiny_models.prm, parts="thinking", thinking_prefilled=True).score([PROBLEM], [cut])[0]
    assert as_response.num_steps == 0 and as_response.step_scores == []
    assert as_thinking.num_steps == 2 and len(as_thinking.step_scores) == 2
    reward = build_reward(RewardArguments(prm_name_or_path=str(tiny_models.prm), thinking_prefilled=True,
                                          outcome_num_workers=1), device="cpu")
    assert reward.prm.scorer.thinking_prefilled and reward.outcome.thinking_prefilled
    reward.close()
