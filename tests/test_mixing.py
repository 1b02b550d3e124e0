"""Normalisation and the mix r = (1 - beta) * outcome + beta * normalise(prm)."""

import math
import statistics
from types import SimpleNamespace

import pytest
from reference import reference_step_scores

from reasonflux_rl.prm.engine.format import trajectory_steps
from reasonflux_rl.prm.engine.results import StepScores
from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.prm.placement.pooling_client import PRMServerError, PRMUnavailableError
from reasonflux_rl.rewards.formula import mix, normalise
from reasonflux_rl.rewards.prm import MixedReward, PRMReward, gather_normalise

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


def normalised_by_hand(means, method):
    """The normalisations written out for groups of two distinct scores, where each has a closed form."""
    if method == "none":
        return list(means)
    if method == "batch_zscore":
        mean, std = statistics.fmean(means), statistics.stdev(means)
        return [(p - mean) / std for p in means]
    # Of two distinct scores, the higher one is 1 (min-max, rank) or 1/sqrt(2) (z-score with the unbiased std:
    # ((a - b) / 2) / (|a - b| / sqrt(2))), the lower one 0 or -1/sqrt(2).
    low, high = {"group_zscore": (-1 / math.sqrt(2), 1 / math.sqrt(2)), "group_minmax": (0.0, 1.0),
                 "group_rank": (0.0, 1.0)}[method]
    out = []
    for a, b in zip(means[::2], means[1::2]):
        out += [high, low] if a > b else [low, high]
    return out


@pytest.mark.parametrize("beta", [0.0, 0.75, 1.0])
@pytest.mark.parametrize("normalisation", ["none", "group_zscore", "group_minmax", "group_rank", "batch_zscore"])
def test_mixed_reward_is_the_weighted_sum(scorer, prm_means, beta, normalisation):
    assert prm_means[0] != prm_means[1] and prm_means[2] != prm_means[3]  # what normalised_by_hand needs
    reward = MixedReward(hand_outcome, scorer, beta=beta, normalisation=normalisation, num_generations=2)
    got = reward(prompts=[PROBLEM] * 4, completions=COMPLETIONS, solution=["14"] * 4)
    normalised = normalised_by_hand(prm_means, normalisation)
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
    assert logged["reasonflux/prm_outcome_corr"] == pytest.approx(statistics.correlation(OUTCOME, prm_means), abs=1e-5)
    assert logged["reasonflux/prm_std"] == pytest.approx(statistics.pstdev(prm_means), abs=1e-6)
    # No normalisation: the normalised scores are the raw ones.
    assert logged["reasonflux/prm_normalised_mean"] == pytest.approx(sum(prm_means) / 4, abs=1e-6)
    # Nothing missing, nothing past the PRM's context, the local PRM always answers.
    assert logged["reasonflux/prm_missing"] == 0.0
    assert logged["reasonflux/outcome_missing"] == 0.0
    assert logged["reasonflux/dropped_step_frac"] == 0.0
    assert logged["reasonflux/prm_unavailable"] == 0.0
    assert [len(row) for row in columns["prm_step_scores"]] == [3, 3, 2, 2]
    assert logged["reasonflux/single_step_frac"] == 0.0
    # Disagreement, each over the completions of one outcome: which PRM means reach 0.5 is read off the reference.
    wrong, right = [prm_means[1], prm_means[3]], [prm_means[0], prm_means[2]]
    assert logged["reasonflux/prm_high_when_wrong"] == sum(p >= 0.5 for p in wrong) / 2
    assert logged["reasonflux/prm_low_when_right"] == sum(p < 0.5 for p in right) / 2


def test_disagreement_rates_on_hand_made_scores():
    from reasonflux_rl.rewards.prm import PRMBatch, log_batch

    logged = {}
    prm = PRMBatch(raw=[0.9, 0.2, 0.6, 0.7, None], normalised=[0.9, 0.2, 0.6, 0.7, None],
                   step_scores=[[0.9], [0.2, 0.2], [0.6], [0.7], []], num_steps=[1, 2, 1, 1, 0],
                   dropped_fraction=[0.0] * 5)
    log_batch(logged.__setitem__, prm, outcome=[0.0, 0.0, 1.0, 0.0, 1.0])
    # Wrong: 0.9, 0.2, 0.7 (two of three high); right with a PRM score: 0.6 (none low); the unscored row counts in
    # neither. Three of the five completions are a single step.
    assert logged["reasonflux/prm_high_when_wrong"] == pytest.approx(2 / 3)
    assert logged["reasonflux/prm_low_when_right"] == 0.0
    assert logged["reasonflux/single_step_frac"] == pytest.approx(3 / 5)


def test_metrics_count_and_skip_missing_parts(scorer, prm_means):
    # Rows 0-3 are COMPLETIONS; row 4 has no step (no PRM score); row 5 repeats row 1. Row 2 has no outcome.
    completions = COMPLETIONS + ["\n\n  \n", COMPLETIONS[1]]
    outcomes = [1.0, 0.0, None, 0.0, 1.0, 1.0]
    raw = prm_means + [None, prm_means[1]]
    logged = {}
    reward = MixedReward(lambda completions, **kw: list(outcomes), scorer, beta=0.5, normalisation="group_minmax",
                         num_generations=3)
    got = reward(prompts=[PROBLEM] * 6, completions=completions, log_metric=logged.__setitem__)

    def minmax(group):
        present = [p for p in group if p is not None]
        low, high = min(present), max(present)
        assert high > low
        return [None if p is None else (p - low) / (high - low) for p in group]

    normalised = minmax(raw[:3]) + minmax(raw[3:])
    present = [p for p in raw if p is not None]
    assert logged["reasonflux/prm_mean"] == pytest.approx(statistics.fmean(present), abs=1e-6)
    assert logged["reasonflux/prm_std"] == pytest.approx(statistics.pstdev(present), abs=1e-6)
    assert logged["reasonflux/prm_normalised_mean"] == pytest.approx(
        statistics.fmean(n for n in normalised if n is not None), abs=1e-5)
    assert logged["reasonflux/outcome_mean"] == pytest.approx(0.6)
    assert (logged["reasonflux/prm_missing"], logged["reasonflux/outcome_missing"]) == (1.0, 1.0)
    # Only rows with both parts are correlated: 0, 1, 3 and 5.
    both = [0, 1, 3, 5]
    corr = statistics.correlation([outcomes[i] for i in both], [raw[i] for i in both])
    assert logged["reasonflux/prm_outcome_corr"] == pytest.approx(corr, abs=1e-5)
    # A missing part adds nothing: row 2 keeps only beta * prm, row 4 only (1 - beta) * outcome.
    n = normalised
    expected = [0.5 + 0.5 * n[0], 0.5 * n[1], 0.5 * n[2], 0.5 * n[3], 0.5, 0.5 + 0.5 * n[5]]
    assert got == pytest.approx(expected, abs=1e-5)


def test_dropped_steps_and_an_unavailable_prm_are_logged_by_value():
    from reasonflux_rl.rewards.prm import PRMBatch, log_batch

    logged = {}
    scored = PRMBatch(raw=[0.4, 0.8, 0.6], normalised=[0.0, 1.0, 0.5], step_scores=[[0.4], [0.8], [0.6]],
                      num_steps=[4, 2, 1], dropped_fraction=[0.5, 0.0, 0.25])
    log_batch(logged.__setitem__, scored)
    assert logged["reasonflux/dropped_step_frac"] == pytest.approx(0.25)  # (0.5 + 0 + 0.25) / 3
    assert logged["reasonflux/prm_normalised_mean"] == pytest.approx(0.5)
    assert logged["reasonflux/prm_std"] == pytest.approx(math.sqrt(0.08 / 3))  # deviations -0.2, 0.2, 0
    assert (logged["reasonflux/prm_missing"], logged["reasonflux/prm_unavailable"]) == (0.0, 0.0)
    assert "reasonflux/outcome_missing" not in logged  # no outcome was given

    logged = {}
    down = PRMBatch(raw=[None, None], normalised=[None, None], step_scores=[[], []], num_steps=[0, 0],
                    dropped_fraction=[0.0, 0.0], unavailable=True)
    log_batch(logged.__setitem__, down, outcome=[1.0, None])
    assert logged["reasonflux/prm_unavailable"] == 1.0
    assert (logged["reasonflux/prm_missing"], logged["reasonflux/outcome_missing"]) == (2.0, 1.0)
    # Nothing to average is not logged: a NaN would poison TRL's running mean.
    assert {"reasonflux/prm_mean", "reasonflux/prm_std", "reasonflux/prm_outcome_corr"}.isdisjoint(logged)


@pytest.mark.parametrize("schedule,start", [("linear_warmup", 0.0), ("linear_decay", 0.6), ("cosine", 0.6)])
def test_a_scheduled_beta_outside_a_trainer_is_its_start_value(scorer, prm_means, schedule, start):
    for steps in (None, 10):
        reward = MixedReward(hand_outcome, scorer, beta=0.6, beta_schedule=schedule, beta_schedule_steps=steps)
        logged = {}
        got = reward(prompts=[PROBLEM] * 4, completions=COMPLETIONS, solution=["14"] * 4, log_metric=logged.__setitem__)
        assert logged["reasonflux/beta"] == start
        assert got == pytest.approx([(1 - start) * o + start * p for o, p in zip(OUTCOME, prm_means)], abs=1e-5)
    # Step 5 of beta_schedule_steps=10 (which wins over max_steps) is halfway: every schedule is at half of beta.
    assert reward.current_beta(SimpleNamespace(global_step=5, max_steps=100)) == pytest.approx(0.3)
    unsized = MixedReward(hand_outcome, scorer, beta=0.6, beta_schedule=schedule)
    assert unsized.current_beta(SimpleNamespace(global_step=0, max_steps=0)) == start
    with pytest.raises(ValueError, match=f"beta_schedule='{schedule}' at step 3 needs its length"):
        unsized.current_beta(SimpleNamespace(global_step=3, max_steps=None))


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


class RecordingScorer:
    """A PRM stand-in that records the problems it is given and scores each completion with the number it holds, "none"
    with no step scored (or raises ``error``), so the tests below know every score without a model."""

    def __init__(self, error=None):
        self.error, self.problems = error, []

    def score(self, problems, completions):
        self.problems.append(list(problems))
        if self.error is not None:
            raise self.error
        return [StepScores() if c == "none" else StepScores([float(c)], num_steps=1, step_indices=[0])
                for c in completions]


@pytest.mark.parametrize(
    "scores,expected",
    [
        # A missing score neither takes part in the min and max nor gets a value.
        ([None, 0.2, 0.6, 0.4], [None, 0.0, 1.0, 0.5]),
        # One score among missing ones is a constant group: the middle, 0.5, not a division by zero.
        ([None, 0.3, None, None], [None, 0.5, None, None]),
        # A group with no score at all stays all missing: nothing invents a 0.5 (or a 0) for it.
        ([None, None, None, None], [None, None, None, None]),
    ],
)
def test_group_minmax_skips_missing_scores_and_keeps_an_unscored_group_missing(scores, expected):
    # Beside a fully scored group, so a group's statistics visibly stay its own.
    got = normalise(scores + [0.1, 0.9, 0.5, 0.3], "group_minmax", group_size=4)
    assert got == pytest.approx(expected + [0.0, 1.0, 0.5, 0.25])
    assert gather_normalise(scores + [0.1, 0.9, 0.5, 0.3], "group_minmax", 4) == pytest.approx(got)


def test_an_unscored_group_trains_on_the_outcome_alone():
    # Row 1 has no step at all, so the PRM gives it nothing; rows 2 and 3 form a group the PRM could not score.
    reward = MixedReward(lambda completions, **kw: [1.0, 0.0, 1.0, 0.0], RecordingScorer(), beta=0.5,
                         normalisation="group_minmax", num_generations=2)
    got = reward(prompts=["p"] * 4, completions=["0.2", "none", "none", "none"])
    # Row 0 is alone in its group, so it gets the middle 0.5 of min-max; the others keep (1 - beta) * outcome.
    assert got == [0.5 * 1.0 + 0.5 * 0.5, 0.0, 0.5, 0.0]


@pytest.mark.parametrize(
    "outcome,prm",
    [
        ([1.0, 0.0, 1.0, 0.0], [0.4, 0.4, 0.4, 0.4]),  # the PRM gave every completion the same score
        ([1.0, 1.0, 1.0, 1.0], [0.2, 0.9, 0.4, 0.6]),  # every completion has the same outcome
        ([1.0, None, None, 0.0], [0.3, 0.8, 0.2, None]),  # a single row has both parts: nothing to correlate
    ],
)
def test_no_correlation_is_logged_when_either_side_is_constant(outcome, prm):
    logged = {}
    reward = MixedReward(lambda completions, **kw: list(outcome), RecordingScorer(), beta=0.5)
    reward(prompts=["p"] * 4, completions=["none" if p is None else str(p) for p in prm],
           log_metric=logged.__setitem__)
    # A constant side has no variance: a logged value would be NaN (or a ZeroDivisionError from statistics).
    assert "reasonflux/prm_outcome_corr" not in logged
    # The rest of the batch is still logged.
    assert logged["reasonflux/outcome_mean"] == pytest.approx(statistics.fmean(o for o in outcome if o is not None))
    assert logged["reasonflux/prm_std"] == pytest.approx(statistics.pstdev(p for p in prm if p is not None))


def test_a_varying_batch_does_log_the_correlation():
    # The counterpart of the test above: the same set-up with both sides varying logs the hand-computed value.
    logged = {}
    reward = MixedReward(lambda completions, **kw: [1.0, 0.0, 1.0, 0.0], RecordingScorer(), beta=0.5)
    reward(prompts=["p"] * 4, completions=["0.9", "0.1", "0.7", "0.3"], log_metric=logged.__setitem__)
    # Outcome deviations +-1/2, PRM deviations 0.4, -0.4, 0.2, -0.2: r = 1.2 / sqrt(1 * 0.4) = 3 / sqrt(10).
    assert logged["reasonflux/prm_outcome_corr"] == pytest.approx(3 / math.sqrt(10))


CHAT_PROMPT = [{"role": "system", "content": "Answer in a box."},
               {"role": "user", "content": "Formatted: solve 2 + 3 * 4 step by step."}]


@pytest.mark.parametrize("column", ["problem", "question"])
def test_the_problem_column_is_what_the_prm_reads(column):
    scorer = RecordingScorer()
    reward = MixedReward(lambda completions, **kw: [1.0, 0.0], scorer, beta=0.5, problem_column=column)
    reward(prompts=[CHAT_PROMPT] * 2, completions=["0.5", "0.5"], **{column: ["2 + 3 * 4?", "2 + 3 * 4?"]})
    assert scorer.problems == [["2 + 3 * 4?", "2 + 3 * 4?"]]

    prm = PRMReward(scorer, problem_column=column)
    prm(prompts=[CHAT_PROMPT], completions=["0.5"], **{column: ["raw problem"]})
    assert scorer.problems[-1] == ["raw problem"]


def test_without_the_problem_column_the_prm_reads_the_prompts_user_turn():
    scorer = RecordingScorer()
    reward = MixedReward(lambda completions, **kw: [1.0], scorer, beta=0.5, problem_column="question")
    # A "problem" column is not the configured one: the prompt's user message is read instead.
    reward(prompts=[CHAT_PROMPT], completions=["0.5"], problem=["not this"])
    assert scorer.problems == [["Formatted: solve 2 + 3 * 4 step by step."]]


@pytest.mark.parametrize(
    "error",
    [PRMServerError("HTTP 400: the server refused the request"), RuntimeError("CUDA out of memory"),
     ValueError("the PRM tokenizer produced 0 step tags for 2 steps")],
)
def test_outcome_only_falls_back_only_when_the_prm_is_unavailable(error):
    # outcome_only is for servers that did not answer; a refused request or a local failure is a bug to see.
    reward = MixedReward(lambda completions, **kw: [1.0, 0.0], RecordingScorer(error), beta=0.5,
                         on_failure="outcome_only")
    with pytest.raises(type(error)) as raised:
        reward(prompts=["p", "p"], completions=["0.5", "0.5"])
    assert raised.value is error  # unchanged: not wrapped, not reworded as a fallback
    assert not isinstance(raised.value, PRMUnavailableError)

    unavailable = MixedReward(lambda completions, **kw: [1.0, 0.0],
                              RecordingScorer(PRMUnavailableError("no PRM server answered")), beta=0.5,
                              on_failure="outcome_only")
    assert unavailable(prompts=["p", "p"], completions=["0.5", "0.5"]) == [0.5, 0.0]


def test_with_on_failure_error_an_unavailable_prm_stops_with_the_reason_and_the_way_out():
    reward = MixedReward(lambda completions, **kw: [1.0], RecordingScorer(PRMUnavailableError("deadline of 5 s")),
                         beta=0.5)
    with pytest.raises(PRMUnavailableError, match=r"^deadline of 5 s\. Training stops \(prm_on_failure: error\)"):
        reward(prompts=["p"], completions=["0.5"])
