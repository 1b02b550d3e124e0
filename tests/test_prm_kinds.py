"""Every PRM kind: detected (or refused) from the checkpoint, equal to its model card's one-sample recipe in every
batch layout, and independent of its batch."""

import random

import pytest
import torch
from reference import (
    reference_step_scores,
    reference_step_value_head_scores,
    reference_token_logit_scores,
    reference_value_head_forward,
    reference_value_head_score,
)
from test_prm_scorer import PROBLEM, random_completion

from reasonflux_rl.prm import PRMCheckpointError, inspect_checkpoint, load_scorer
from reasonflux_rl.prm.engine.base import resolve_attention, resolve_runtime
from reasonflux_rl.prm.engine.format import trajectory_steps
from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.rewards.formula import trajectory_reward
from reasonflux_rl.tiny import (
    TINY_TOKEN_LOGIT_TOKENS,
    write_tiny_step_value_head,
    write_tiny_token_logit,
    write_tiny_value_head,
)

KINDS = ["step_classifier", "value_head", "token_logit", "step_value_head"]
LAYOUTS = {"right": {"padding_side": "right"}, "left": {"padding_side": "left"}, "packed": {"packed": True}}


@pytest.fixture(scope="module")
def checkpoints(tiny_models, tmp_path_factory):
    return {
        "step_classifier": (tiny_models.prm, {}),
        "value_head": (write_tiny_value_head(tmp_path_factory.mktemp("value_head")), {}),
        "token_logit": (write_tiny_token_logit(tmp_path_factory.mktemp("token_logit")),
                        {"kind": "token_logit", **TINY_TOKEN_LOGIT_TOKENS}),
        "step_value_head": (write_tiny_step_value_head(tmp_path_factory.mktemp("step_value_head")), {}),
    }


@pytest.fixture(scope="module")
def completions():
    rng = random.Random(0)
    # Lengths from one step to a few hundred tokens, so batches mix lengths and pad.
    return [random_completion(rng, rng.randint(1, 14), rng.randint(1, 3)) for _ in range(6)]


def reference(kind, path, completion):
    if kind == "value_head":
        return [reference_value_head_score(path, PROBLEM, completion)]
    steps = trajectory_steps(completion)
    if kind == "step_classifier":
        return reference_step_scores(path, PROBLEM, steps)
    if kind == "step_value_head":
        return reference_step_value_head_scores(path, PROBLEM, "\n".join(steps))
    return reference_token_logit_scores(path, PROBLEM, steps, **TINY_TOKEN_LOGIT_TOKENS)


def scores_of(result):
    return [result.trajectory_score] if result.trajectory_score is not None else result.step_scores


@pytest.fixture(scope="module")
def references(checkpoints, completions):
    return {kind: [reference(kind, path, c) for c in completions] for kind, (path, _) in checkpoints.items()}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_scores_equal_the_model_card_recipe_in_every_batch_layout(checkpoints, completions, references, kind, layout):
    path, options = checkpoints[kind]
    # A budget that puts several samples of different lengths in one batch, and needs more than one batch.
    scorer = load_scorer(path, batch_tokens=1024, **options, **LAYOUTS[layout])
    assert scorer.kind == kind
    results = scorer.score([PROBLEM] * len(completions), completions)
    flat = []
    for result, expected in zip(results, references[kind]):
        assert len(scores_of(result)) == len(expected) > 0
        torch.testing.assert_close(torch.tensor(scores_of(result)), torch.tensor(expected), atol=1e-5, rtol=0)
        flat += expected
    # The tiny heads give scores that differ: equality above is not two constants agreeing.
    assert torch.tensor(flat).std() > 0.01


@pytest.mark.parametrize("kind", KINDS)
def test_sample_scores_do_not_depend_on_batch_or_order(checkpoints, completions, kind):
    path, options = checkpoints[kind]
    scorer = load_scorer(path, batch_tokens=2048, **options)
    alone = [scores_of(scorer.score([PROBLEM], [c])[0]) for c in completions]
    batched = [scores_of(r) for r in scorer.score([PROBLEM] * len(completions), completions)]
    order = [3, 0, 5, 1, 4, 2]
    shuffled = scorer.score([PROBLEM] * len(order), [completions[i] for i in order])
    for position, i in enumerate(order):
        torch.testing.assert_close(torch.tensor(scores_of(shuffled[position])), torch.tensor(alone[i]), atol=1e-5,
                                   rtol=0)
    for a, b in zip(alone, batched):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)


def test_value_head_left_and_right_padded_batches_match_one_at_a_time(checkpoints, completions):
    """The official forward reads `attention_mask.sum() - 1`, right only for right padding; ours is right for both."""
    path, _ = checkpoints["value_head"]
    alone = [reference_value_head_score(path, PROBLEM, c) for c in completions]
    scorer = load_scorer(path)
    for side in ("right", "left"):
        rows = [scorer.encode(PROBLEM, c).rows[0] for c in completions]
        batch = scorer.tokenizer.pad({"input_ids": rows}, padding_side=side, return_tensors="pt")
        scorer.padding_side = side
        ours = [r.trajectory_score for r in scorer.score([PROBLEM] * len(completions), completions)]
        torch.testing.assert_close(torch.tensor(ours), torch.tensor(alone), atol=1e-5, rtol=0)
        official = reference_value_head_forward(path, batch["input_ids"], batch["attention_mask"])
        if side == "right":
            torch.testing.assert_close(torch.tensor(official), torch.tensor(alone), atol=1e-5, rtol=0)
        else:  # the official indexing reads a padding position of every row shorter than the longest
            assert max(abs(a - b) for a, b in zip(official, alone)) > 1e-3


def test_value_head_keeps_problem_and_end_of_completion_past_max_length(checkpoints):
    path, _ = checkpoints["value_head"]
    scorer = load_scorer(path, max_length=64)
    completion = random_completion(random.Random(4), 30, 2)
    full = scorer.tokenizer(PROBLEM + completion)["input_ids"]
    problem_tokens = len(scorer.tokenizer(PROBLEM)["input_ids"])
    [row] = scorer.encode(PROBLEM, completion).rows
    assert len(full) > 200 and len(row) == 64
    assert row[:problem_tokens] == full[:problem_tokens] and row[problem_tokens:] == full[-(64 - problem_tokens):]
    [result] = scorer.score([PROBLEM], [completion])
    assert result.num_tokens == len(full) and result.dropped_tokens == len(full) - 64
    assert result.dropped_fraction == pytest.approx((len(full) - 64) / len(full))
    [expected] = reference_value_head_forward(path, torch.tensor([row]), torch.ones(1, 64, dtype=torch.long))
    assert result.trajectory_score == pytest.approx(expected, abs=1e-5)
    # An input that fits is read whole, as the model card does.
    [short] = scorer.score([PROBLEM], ["Short.\n\nDone."])
    assert short.dropped_tokens == 0 and short.trajectory_score == pytest.approx(
        reference_value_head_score(path, PROBLEM, "Short.\n\nDone."), abs=1e-5)


@pytest.mark.parametrize("parts", ["thinking", "response"])
def test_value_head_reads_the_selected_part(checkpoints, parts):
    path, _ = checkpoints["value_head"]
    completion = "<think>\nTry 3 x 4 = 12.\n</think>\n\nSo $\\boxed{12}$."
    part = {"thinking": "Try 3 x 4 = 12.", "response": "So $\\boxed{12}$."}[parts]
    [result] = load_scorer(path, parts=parts).score([PROBLEM], [completion])
    assert result.trajectory_score == pytest.approx(reference_value_head_score(path, PROBLEM, part), abs=1e-5)


def test_kinds_are_detected_from_the_checkpoint(checkpoints):
    assert inspect_checkpoint(checkpoints["step_classifier"][0]).kind == "step_classifier"
    assert inspect_checkpoint(checkpoints["value_head"][0]).kind == "value_head"
    assert inspect_checkpoint(checkpoints["token_logit"][0], kind="token_logit").kind == "token_logit"


def test_plain_causal_lm_is_refused_unless_named_token_logit(checkpoints):
    path, _ = checkpoints["token_logit"]
    with pytest.raises(PRMCheckpointError, match=r"^prm_name_or_path='[^']+': not a supported PRM .*weights hold an LM "
                                                 r"head of vocabulary size \(\d+\), not a 2-label step head.*name "
                                                 r"it with prm_kind='token_logit'"):
        load_scorer(path)
    with pytest.raises(ValueError, match="needs step_tag, good_token and bad_token"):
        load_scorer(path, kind="token_logit")
    with pytest.raises(ValueError, match=r"good token 'plus' is not a single token"):
        load_scorer(path, kind="token_logit", step_tag="ки", good_token="plus", bad_token="-")


def test_named_kind_that_the_checkpoint_does_not_hold_says_what_was_found(checkpoints):
    with pytest.raises(PRMCheckpointError, match=r"^prm_name_or_path='[^']+' \(prm_kind='token_logit'\): "
                                                 r"a token-logit PRM must be a causal LM.*2-label step head"):
        inspect_checkpoint(checkpoints["step_classifier"][0], kind="token_logit")
    with pytest.raises(PRMCheckpointError, match=r"^prm_name_or_path='[^']+' \(prm_kind='value_head'\): "
                                                 r"a value-head PRM needs reward_head.pt beside its weights, and "
                                                 r"there is none"):
        inspect_checkpoint(checkpoints["token_logit"][0], kind="value_head")
    with pytest.raises(PRMCheckpointError, match=r"^prm_name_or_path='[^']+' \(prm_kind='step_classifier'\): "
                                                 r"not a supported PRM \(architectures=.*\): weights hold only a "
                                                 r"decoder with tied"):
        inspect_checkpoint(checkpoints["value_head"][0], kind="step_classifier")
    with pytest.raises(PRMCheckpointError, match=r"is a value_head PRM, not a step classifier"):
        StepScorer.from_pretrained(checkpoints["value_head"][0])
    with pytest.raises(PRMCheckpointError, match=r"^prm_kind='reward' is not allowed"):
        inspect_checkpoint(checkpoints["value_head"][0], kind="reward")


class NotATensor:
    pass


@pytest.mark.parametrize(
    "state,message",
    [({"weight": torch.zeros(2, 64), "bias": torch.zeros(2)},
      r"^prm_name_or_path='[^']+': reward_head.pt holds \{'weight': \(2, 64\), 'bias': \(2,\)\}; a value head is "
      r"Linear\(hidden, 1\)"),
     ({"weight": torch.zeros(1, 64), "extra": NotATensor()},
      r"^prm_name_or_path='[^']+': .*cannot be read with torch.load\(weights_only=True\)")],
)
def test_bad_reward_head_is_refused(tmp_path, state, message):
    path = write_tiny_value_head(tmp_path)
    torch.save(state, path / "reward_head.pt")
    with pytest.raises(PRMCheckpointError, match=message):
        load_scorer(path)


def test_options_of_other_kinds_are_ignored_and_unknown_ones_refused(checkpoints):
    path, _ = checkpoints["value_head"]
    scorer = load_scorer(path, system_prompt="Be careful.", max_steps=3, step_tag="<extra_0>")
    assert scorer.kind == "value_head"
    with pytest.raises(TypeError, match=r"unknown options \['batch_size'\]"):
        load_scorer(path, batch_size=4)
    with pytest.raises(ValueError, match=r"truncation='windows' is not available for a value-head PRM"):
        load_scorer(path, truncation="windows")


def test_trajectory_prm_adds_alpha_times_its_score(checkpoints, completions):
    step_path, _ = checkpoints["step_classifier"]
    value_path, _ = checkpoints["value_head"]
    both = load_scorer(step_path, trajectory_prm=value_path)
    results = both.score([PROBLEM] * 3, completions[:3])
    steps = load_scorer(step_path).score([PROBLEM] * 3, completions[:3])
    values = load_scorer(value_path).score([PROBLEM] * 3, completions[:3])
    for r, s, v in zip(results, steps, values):
        assert r.step_scores == s.step_scores and r.trajectory_score == v.trajectory_score is not None
        mean = sum(s.step_scores) / len(s.step_scores)
        assert trajectory_reward(r.step_scores, r.trajectory_score, "mean", alpha=0.8) == pytest.approx(
            mean + 0.8 * v.trajectory_score)
        assert trajectory_reward(r.step_scores, r.trajectory_score, "mean") == pytest.approx(mean)
        assert trajectory_reward(v.step_scores, v.trajectory_score, "mean", alpha=0.8) == v.trajectory_score


def test_auto_attention_is_flash_attention_2_with_packing_only_where_it_can_run(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" else real(name))
    cuda = torch.device("cuda")
    assert resolve_attention("auto", cuda, torch.bfloat16) == "flash_attention_2"
    assert resolve_attention("auto", cuda, torch.float32) == "sdpa"
    assert resolve_attention("auto", torch.device("cpu"), torch.bfloat16) == "sdpa"
    assert resolve_runtime("cuda", "auto", "auto").packed is True
    assert resolve_runtime("cuda", "auto", "sdpa").packed is False
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name))
    assert resolve_attention("auto", cuda, torch.bfloat16) == "sdpa"
