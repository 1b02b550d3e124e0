"""Over-long trajectories: `drop_oldest` scores only the steps it kept; `windows` scores every step exactly once, in
windows that each fit the context, keep the problem and carry preceding steps as context."""

import random

import pytest
import torch
from reference import reference_step_scores, reference_token_logit_scores
from test_prm_scorer import PROBLEM, random_completion

from reasonflux_rl.prm import load_scorer
from reasonflux_rl.prm.engine.format import trajectory_steps
from reasonflux_rl.tiny import TINY_TOKEN_LOGIT_TOKENS, write_tiny_token_logit

MAX_LENGTH = 256


@pytest.fixture(scope="module")
def step_kinds(tiny_models, tmp_path_factory):
    token_logit = write_tiny_token_logit(tmp_path_factory.mktemp("token_logit"))
    return {
        "step_classifier": (tiny_models.prm, {}, lambda steps: reference_step_scores(tiny_models.prm, PROBLEM, steps)),
        "token_logit": (
            token_logit,
            {"kind": "token_logit", **TINY_TOKEN_LOGIT_TOKENS},
            lambda steps: reference_token_logit_scores(token_logit, PROBLEM, steps, **TINY_TOKEN_LOGIT_TOKENS),
        ),
    }


@pytest.fixture(scope="module")
def long_completion():
    return random_completion(random.Random(3), 40, 2)


@pytest.mark.parametrize("kind", ["step_classifier", "token_logit"])
def test_drop_oldest_reports_dropped_steps_and_scores_only_kept_ones(step_kinds, long_completion, kind):
    path, options, reference = step_kinds[kind]
    scorer = load_scorer(path, max_length=MAX_LENGTH, **options)
    steps = trajectory_steps(long_completion)
    [result] = scorer.score([PROBLEM], [long_completion])
    assert result.num_steps == len(steps) == 42
    assert 0 < result.dropped_steps < len(steps)
    assert result.step_indices == list(range(result.dropped_steps, len(steps)))
    assert result.dropped_fraction == pytest.approx(result.dropped_steps / 42)
    expected = reference(steps[result.dropped_steps :])
    torch.testing.assert_close(torch.tensor(result.step_scores), torch.tensor(expected), atol=1e-5, rtol=0)
    # Fewest steps dropped: one more would not have fitted.
    assert len(scorer._ids(PROBLEM, steps[result.dropped_steps - 1 :])) > MAX_LENGTH


@pytest.mark.parametrize("kind", ["step_classifier", "token_logit"])
def test_windows_score_every_step_once_each_from_one_window_that_fits(step_kinds, long_completion, kind):
    path, options, reference = step_kinds[kind]
    scorer = load_scorer(path, max_length=MAX_LENGTH, truncation="windows", **options)
    steps = trajectory_steps(long_completion)
    encoded = scorer.encode(PROBLEM, long_completion)
    assert len(encoded.rows) >= 3
    covered = [i for window in encoded.steps for i in window]
    assert covered == list(range(len(steps)))  # every step, once, in order
    for row, window in zip(encoded.rows, encoded.steps):
        assert len(row) <= MAX_LENGTH
        assert PROBLEM in scorer.tokenizer.decode(row)
    # Each window after the first carries at least one already-scored step as context.
    contexts = [row.count(scorer.tag_id) - len(window) for row, window in zip(encoded.rows, encoded.steps)]
    assert contexts[0] == 0 and all(c >= 1 for c in contexts[1:])

    [result] = scorer.score([PROBLEM], [long_completion])
    assert result.dropped_steps == 0 and result.step_indices == list(range(len(steps)))
    scores = dict(zip(result.step_indices, result.step_scores))
    for context, window in zip(contexts, encoded.steps):
        # Each step's score is the one-sample recipe's on its window (context steps + scored steps).
        expected = reference(steps[window.start - context : window.stop])[context:]
        got = [scores[i] for i in window]
        torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), atol=1e-5, rtol=0)


def test_windows_drop_only_a_step_that_cannot_fit_with_the_problem_alone(step_kinds):
    path, options, _ = step_kinds["step_classifier"]
    scorer = load_scorer(path, max_length=MAX_LENGTH, truncation="windows", **options)
    giant = " ".join(["multiply 3 by 4 and check"] * 60)
    completion = "<think>\nFirst.\n\nSecond.\n\n" + giant + "\n\nFourth.\n</think>\n\nSo 12."
    [result] = scorer.score([PROBLEM], [completion])
    assert result.num_steps == 5 and result.dropped_steps == 1
    assert result.step_indices == [0, 1, 3, 4] and len(result.step_scores) == 4


def test_windows_change_nothing_when_the_input_fits(step_kinds):
    path, options, _ = step_kinds["step_classifier"]
    completions = [random_completion(random.Random(5), n, 1) for n in (2, 5, 8)]
    plain = load_scorer(path, **options).score([PROBLEM] * 3, completions)
    windowed = load_scorer(path, truncation="windows", **options).score([PROBLEM] * 3, completions)
    assert [r.step_scores for r in plain] == [r.step_scores for r in windowed]
