"""Normalisation and the mix r = (1 - beta) * outcome + beta * normalise(prm)."""

import math

import pytest
from reference import reference_step_scores

from reasonflux_rl.prm.engine.format import trajectory_steps
from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.rewards.formula import mix, normalise
from reasonflux_rl.rewards.prm import MixedReward, gather_normalise

PROBLEM = "Compute $2 + 3 \\times 4$."
# Hand-made: which completions are right is known by construction (gold 14).
COMPLETIONS = [
    "<think>\n3 times 4 is 12.\n\nPlus 2 is 14.\n</think>\n\nThe answer is $\\boxed{14}$.",
    "<think>\n2 + 3 is 5.\n\n5 times 4 is 20.\n</think>\n\nThe answer is $\\boxed{20}$.",
    "</think>\n\nMultiply first: 12.\n\nThen add: $\\boxed{14}$.",
    "<think>\nHmm.\n\nLet me think about the order of operations for a long time",
]
OUTCOME = [1.0, 0.0, 1.0, 0.0]


def hand_outcome(completions, solution, **kwargs):
    """Stands in for the math-verify reward so this test checks the mix, not answer parsing."""
    return [OUTCOME[COMPLETIONS.index(c)] for c in completions]


@pytest.fixture(scope="module")
def scorer(tiny_models):
    return StepScorer.from_pretrained(tiny_models.prm)


@pytest.fixture(scope="module")
def prm_means(tiny_models):
    means = []
    for completion in COMPLETIONS:
        scores = reference_step_scores(tiny_models.prm, PROBLEM, trajectory_steps(completion))
        means.append(sum(scores) / len(scores))
    return means


@pytest.mark.parametrize("beta", [0.0, 0.75, 1.0])
@pytest.mark.parametrize("normalisation", ["none", "group_zscore", "group_rank"])
def test_mixed_reward_is_the_weighted_sum(scorer, prm_means, beta, normalisation):
    reward = MixedReward(hand_outcome, scorer, beta=beta, normalisation=normalisation, num_generations=2)
    got = reward(prompts=[PROBLEM] * 4, completions=COMPLETIONS, solution=["14"] * 4)
    normalised = normalise(prm_means, normalisation, group_size=2)
    expected = [(1 - beta) * o + beta * p for o, p in zip(OUTCOME, normalised)]
    assert got == pytest.approx(expected, abs=1e-5)
    if normalisation == "none":
        # The PRM really moves the reward: rows with equal outcome differ by beta * (prm difference).
        assert got[0] - got[2] == pytest.approx(beta * (prm_means[0] - prm_means[2]), abs=1e-5)


def test_conversational_completions_give_the_same_reward(scorer):
    reward = MixedReward(hand_outcome, scorer, beta=0.5)
    plain = reward(prompts=[PROBLEM] * 4, completions=COMPLETIONS, solution=["14"] * 4)
    conversational = reward(
        prompts=[[{"role": "user", "content": PROBLEM}]] * 4,
        completions=COMPLETIONS,
        solution=["14"] * 4,
    )
    assert plain == pytest.approx(conversational)


def test_metrics_are_logged(scorer, prm_means):
    logged = {}
    columns = {}
    reward = MixedReward(hand_outcome, scorer, beta=0.75)
    mixed = reward(
        prompts=[PROBLEM] * 4,
        completions=COMPLETIONS,
        solution=["14"] * 4,
        log_metric=lambda name, value: logged.setdefault(name, value),
        log_extra=lambda column, values: columns.setdefault(column, values),
    )
    assert logged["reasonflux/beta"] == 0.75
    assert logged["reasonflux/outcome_mean"] == pytest.approx(0.5)
    assert logged["reasonflux/prm_mean"] == pytest.approx(sum(prm_means) / 4, abs=1e-6)
    assert logged["reasonflux/mixed_mean"] == pytest.approx(sum(mixed) / 4)
    assert logged["reasonflux/steps_mean"] == pytest.approx((3 + 3 + 2 + 2) / 4)
    assert -1.0 <= logged["reasonflux/prm_outcome_corr"] <= 1.0
    assert [len(row) for row in columns["prm_step_scores"]] == [3, 3, 2, 2]


@pytest.mark.parametrize(
    "method,group,scores,expected",
    [
        ("none", None, [0.2, 0.9, None], [0.2, 0.9, None]),
        ("group_zscore", 2, [1.0, 3.0, 5.0, 5.0], [-1 / math.sqrt(2), 1 / math.sqrt(2), 0.0, 0.0]),
        ("group_zscore", 4, [0.4, 0.4, 0.4, 0.4], [0.0, 0.0, 0.0, 0.0]),
        ("group_minmax", 3, [0.2, 0.6, 0.4, 0.7, 0.7, 0.7], [0.0, 1.0, 0.5, 0.5, 0.5, 0.5]),
        ("group_rank", 3, [0.3, 0.1, 0.2, 0.2, 0.9, 0.9], [1.0, 0.0, 0.5, 0.0, 0.75, 0.75]),
        ("group_rank", 3, [0.6, 0.6, 0.6, 0.1, None, 0.5], [0.5, 0.5, 0.5, 0.0, None, 1.0]),
        ("group_rank", 4, [0.5, 0.1, 0.5, None], [0.75, 0.0, 0.75, None]),
        ("batch_zscore", None, [1.0, 2.0, 3.0, None], [-1.0, 0.0, 1.0, None]),
        ("batch_zscore", None, [0.3, 0.3], [0.0, 0.0]),
    ],
)
def test_normalisations_on_hand_made_groups(method, group, scores, expected):
    got = normalise(scores, method, group_size=group)
    assert all(g is None or math.isfinite(g) for g in got)
    assert got == pytest.approx(expected)
    assert gather_normalise(scores, method, group) == pytest.approx(expected)


def test_group_normalisation_needs_whole_groups():
    with pytest.raises(ValueError, match="whole groups of num_generations=4"):
        normalise([0.1, 0.2, 0.3], "group_zscore", group_size=4)


def test_missing_parts_keep_the_other_part():
    assert mix([1.0, None, 0.0, None], [0.2, 0.4, None, None], beta=0.5) == [0.6, 0.2, 0.0, None]


def test_beta_zero_never_turns_a_missing_outcome_into_a_number(scorer):
    reward = MixedReward(lambda completions, **kw: [None, 1.0], scorer, beta=0.0)
    assert reward(prompts=["p", "p"], completions=["a", "b"]) == [None, 1.0]


def test_bad_arguments_are_refused(scorer):
    with pytest.raises(ValueError, match="beta=1.5"):
        MixedReward(hand_outcome, scorer, beta=1.5)
    with pytest.raises(ValueError, match="needs a PRM scorer"):
        MixedReward(hand_outcome, None, beta=0.5)
    with pytest.raises(ValueError, match="normalisation='zscore'"):
        MixedReward(hand_outcome, scorer, normalisation="zscore")
