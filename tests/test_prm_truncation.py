"""Over-long trajectories: `drop_oldest` scores only the steps it kept; `windows` scores every step exactly once, in
windows that each fit the context, keep the problem and carry preceding steps as context."""

import random

import pytest
import torch
from reference import reference_step_scores, reference_step_value_head_scores, reference_token_logit_scores
from test_prm_scorer import PROBLEM, random_completion

from reasonflux_rl.prm import load_scorer
from reasonflux_rl.prm.engine.format import trajectory_steps
from reasonflux_rl.prm.engine.truncation import drop_oldest, plan_windows
from reasonflux_rl.tiny import TINY_TOKEN_LOGIT_TOKENS, write_tiny_step_value_head, write_tiny_token_logit

MAX_LENGTH = 256


@pytest.fixture(scope="module")
def step_kinds(tiny_models, tmp_path_factory):
    token_logit = write_tiny_token_logit(tmp_path_factory.mktemp("token_logit"))
    step_value_head = write_tiny_step_value_head(tmp_path_factory.mktemp("step_value_head"))
    return {
        "step_classifier": (tiny_models.prm, {}, lambda steps: reference_step_scores(tiny_models.prm, PROBLEM, steps)),
        "token_logit": (
            token_logit,
            {"kind": "token_logit", **TINY_TOKEN_LOGIT_TOKENS},
            lambda steps: reference_token_logit_scores(token_logit, PROBLEM, steps, **TINY_TOKEN_LOGIT_TOKENS),
        ),
        "step_value_head": (
            step_value_head, {}, lambda steps: reference_step_value_head_scores(step_value_head, PROBLEM,
                                                                                "\n".join(steps)),
        ),
    }


@pytest.fixture(scope="module")
def long_completion():
    return random_completion(random.Random(3), 40, 2)


@pytest.mark.parametrize("kind", ["step_classifier", "token_logit", "step_value_head"])
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
    longer, _ = scorer.step_rows(PROBLEM, steps)(result.dropped_steps - 1, len(steps))
    assert len(longer) > MAX_LENGTH


@pytest.mark.parametrize("kind", ["step_classifier", "token_logit", "step_value_head"])
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
    contexts = [len(reads) - len(window) for reads, window in zip(encoded.reads, encoded.steps)]
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


GIANT_STEP = " ".join(["multiply 3 by 4 and check"] * 60)  # far longer than MAX_LENGTH on its own


@pytest.mark.parametrize("kind", ["step_classifier", "token_logit", "step_value_head"])
def test_drop_oldest_scores_nothing_when_not_even_the_last_step_fits(step_kinds, kind):
    path, options, reference = step_kinds[kind]
    scorer = load_scorer(path, max_length=MAX_LENGTH, **options)
    hopeless = "<think>\nFirst.\n\nSecond.\n</think>\n\n" + GIANT_STEP
    short = "<think>\nFirst.\n</think>\n\nSo 12."
    assert scorer.encode(PROBLEM, hopeless).rows == []
    # Beside a pair that fits, in one batch: the hopeless one is reported as wholly dropped, the other is untouched.
    hopeless_result, short_result = scorer.score([PROBLEM, PROBLEM], [hopeless, short])
    assert (hopeless_result.num_steps, hopeless_result.dropped_steps, hopeless_result.dropped_fraction) == (3, 3, 1.0)
    assert hopeless_result.step_scores == [] and hopeless_result.step_indices == []
    torch.testing.assert_close(torch.tensor(short_result.step_scores),
                               torch.tensor(reference(trajectory_steps(short))), atol=1e-5, rtol=0)

    # The windows policy loses only the step that cannot fit, and scores the two before it.
    [windowed] = load_scorer(path, max_length=MAX_LENGTH, truncation="windows", **options).score([PROBLEM], [hopeless])
    assert windowed.dropped_steps == 1 and windowed.step_indices == [0, 1]


def test_drop_oldest_drops_the_fewest_steps_that_make_the_rest_fit():
    rng = random.Random(11)
    for _ in range(300):
        tokens = [rng.randint(1, 40) for _ in range(rng.randint(1, 12))]
        max_length = rng.randint(5, 150)
        length_of = lambda start, end: 8 + sum(tokens[start:end])
        # A linear scan, the obvious (quadratic in real use) way; len(tokens) when not even the last step fits.
        fewest = next((k for k in range(len(tokens)) if length_of(k, len(tokens)) <= max_length), len(tokens))
        assert drop_oldest(len(tokens), length_of, max_length) == fewest, (tokens, max_length)
    assert drop_oldest(3, lambda start, end: 8 + sum([2, 2, 50][start:end]), 40) == 3  # the last step is too long
    assert drop_oldest(3, lambda start, end: 8 + sum([50, 2, 2][start:end]), 40) == 1  # only the giant goes


@pytest.mark.parametrize("truncation", ["drop_oldest", "windows"])
@pytest.mark.parametrize(
    "kind,step_tag,tags",
    [
        # "=" is one token on its own, but the tagged text puts a space before it and " =" is another token.
        ("token_logit", "=", 0),
        # "s" is one token on its own, and also the token of many an "s" in the chat template and the problem.
        ("step_classifier", "s", None),
    ],
)
def test_a_step_tag_that_is_not_one_token_in_context_is_refused(step_kinds, kind, step_tag, tags, truncation):
    path, options, _ = step_kinds[kind]
    options = {**options, "step_tag": step_tag}
    scorer = load_scorer(path, max_length=MAX_LENGTH, truncation=truncation, **options)
    assert len(scorer.tokenizer.encode(step_tag, add_special_tokens=False)) == 1  # what the load-time check sees
    steps = 3
    completion = "<think>\nFirst.\n\nSecond.\n</think>\n\nSo 12."
    with pytest.raises(ValueError, match=rf"^the PRM tokenizer produced (\d+) step tags for {steps} steps; the step "
                                         rf"tag '{step_tag}' must tokenise to one token wherever it appears") as raised:
        scorer.score([PROBLEM], [completion])
    produced = int(raised.value.args[0].split()[4])
    assert produced == tags if tags is not None else produced > steps

    # Over-long, so the rows are truncated or windowed: each of those is checked too, not only the whole input.
    long = random_completion(random.Random(3), 40, 2)
    with pytest.raises(ValueError, match=r"^the PRM tokenizer produced \d+ step tags for \d+ steps"):
        scorer.encode(PROBLEM, long)


def test_window_overlap_is_a_quarter_of_max_length_by_default_and_sets_how_much_context(step_kinds, long_completion):
    path, options, _ = step_kinds["step_classifier"]
    default = load_scorer(path, max_length=MAX_LENGTH, truncation="windows", **options)
    assert default.window_overlap == MAX_LENGTH // 4
    explicit = load_scorer(path, max_length=MAX_LENGTH, truncation="windows", window_overlap=MAX_LENGTH // 4, **options)
    assert default.encode(PROBLEM, long_completion).rows == explicit.encode(PROBLEM, long_completion).rows

    def context_steps(overlap):
        scorer = load_scorer(path, max_length=MAX_LENGTH, truncation="windows", window_overlap=overlap, **options)
        encoded = scorer.encode(PROBLEM, long_completion)
        assert [i for window in encoded.steps for i in window] == list(range(42))
        assert all(len(row) <= MAX_LENGTH for row in encoded.rows)
        return [len(reads) - len(window) for reads, window in zip(encoded.reads, encoded.steps)]

    # No overlap: only the step just before each window's first, the context every window after the first gets.
    assert set(context_steps(0)[1:]) == {1}
    # A budget beyond the context: the windows take as many preceding steps as still leave room for a new one.
    wide = context_steps(10**6)
    assert max(wide) > 1 and wide[0] == 0


def windows_of(step_tokens, max_length, overlap, estimate=None):
    length_of = lambda start, end: 10 + sum(step_tokens[start:end])
    windows, dropped = plan_windows(len(step_tokens), length_of, max_length, overlap, estimate or step_tokens)
    assert all(length_of(w.context, w.end) <= max_length for w in windows)
    return [(w.context, w.first, w.end) for w in windows], dropped


def test_plan_windows_overlap_on_hand_made_steps():
    # Six steps of 4 tokens, a 10-token problem and room for 12 tokens of steps: 3 steps per row at most.
    # Overlap 0: one context step each, so a window after the first scores two new steps.
    assert windows_of([4] * 6, 22, overlap=0) == ([(0, 0, 3), (2, 3, 5), (4, 5, 6)], [])
    # The overlap counts every context token, the always-taken step just before included: 8 tokens are two steps,
    # which leave room for one new step per window.
    assert windows_of([4] * 6, 22, overlap=8) == ([(0, 0, 3), (1, 3, 4), (2, 4, 5), (3, 5, 6)], [])
    # 7 is short of a second whole step: as overlap 0.
    assert windows_of([4] * 6, 22, overlap=7) == windows_of([4] * 6, 22, overlap=0)


def test_plan_windows_shrinks_a_context_the_estimate_got_wrong():
    # The estimate says 1 token a step (what encode assumes when it cannot count tags), the real steps are 4: the
    # context chosen by the estimate is halved towards the new step until the row fits. At step 3 the estimate takes
    # steps 0..2 (26 tokens with step 3), halved to context 2 (18); at step 5 it takes 0..4, halved to 3 (22).
    assert windows_of([4] * 6, 22, overlap=8, estimate=[1] * 6) == ([(0, 0, 3), (2, 3, 5), (3, 5, 6)], [])


def test_plan_windows_stops_the_context_at_a_dropped_step():
    # Step 2 cannot fit with the problem alone and is dropped; the window after it starts afresh (3..6). For step 7
    # the context search stops at step 3 rather than reaching over the dropped step to step 0; steps 3..7 are 25
    # tokens, so it is halved to start at 5. (Reaching to 0 would have halved to 4 and scored only step 7.)
    assert windows_of([1, 1, 30] + [3] * 6, 22, overlap=100) == ([(0, 0, 2), (3, 3, 7), (5, 7, 9)], [2])
