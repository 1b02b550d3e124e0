"""The PRM objective against hand-computed values, and the rows and batches it is computed on: the scorer's own
encoding, truncation windows, the token budget."""

import math
import random

import pytest
import torch

from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.prm_training.encoding import TokenBudgetBatchSampler, collate_rows, encode_pair
from reasonflux_rl.prm_training.fields import LabelledPair
from reasonflux_rl.prm_training.objective import Objective

NAN = float("nan")


def logit_for(p):
    """Head logits whose softmax gives P(label 1) = p."""
    return [0.0, math.log(p / (1 - p))]


def batch_of(probabilities, rows, scored, step_targets, trajectory_targets):
    logits = torch.tensor([logit_for(p) for p in probabilities])
    return logits, {
        "read_row": torch.tensor(rows), "scored": torch.tensor(scored),
        "step_targets": torch.tensor(step_targets), "trajectory_target": torch.tensor(trajectory_targets),
    }


def mse(p, t):
    return (p - t) ** 2


def bce(p, t):
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


@pytest.mark.parametrize("loss,fn", [("mse", mse), ("bce", bce)])
def test_row_losses_are_the_papers_objective_computed_by_hand(loss, fn):
    # Row 0: three reads, the middle one has no target; trajectory target 0 read at its last step tag (p=0.6).
    # Row 1: one context read (not scored) and one scored read; no trajectory target.
    probabilities = [0.9, 0.3, 0.6, 0.2, 0.7]
    logits, batch = batch_of(probabilities, [0, 0, 0, 1, 1], [True, True, True, False, True],
                             [1.0, NAN, 0.5, 0.0, 1.0], [0.0, NAN])
    objective = Objective(loss, lambda_step=0.7, lambda_final=0.4)
    expected_0 = 0.7 * (fn(0.9, 1.0) + fn(0.6, 0.5)) / 2 + 0.4 * fn(0.6, 0.0)
    expected_1 = 0.7 * fn(0.7, 1.0)
    assert objective.row_losses(logits, batch).tolist() == pytest.approx([expected_0, expected_1], rel=1e-5)


def test_the_mean_trajectory_read_averages_the_scored_steps_of_the_row():
    logits, batch = batch_of([0.9, 0.3, 0.6, 0.2, 0.7], [0, 0, 0, 1, 1], [True, True, True, False, True],
                             [NAN] * 5, [1.0, 0.0])
    objective = Objective(lambda_step=1.0, lambda_final=1.0, trajectory_read="mean")
    mean_0, mean_1 = (0.9 + 0.3 + 0.6) / 3, 0.7  # the context read of row 1 is not its step
    assert objective.row_losses(logits, batch).tolist() == pytest.approx([mse(mean_0, 1.0), mse(mean_1, 0.0)],
                                                                         rel=1e-5)
    bce_objective = Objective("bce", trajectory_read="mean")
    assert bce_objective.row_losses(logits, batch).tolist() == pytest.approx([bce(mean_0, 1.0), bce(mean_1, 0.0)],
                                                                             rel=1e-5)


def test_a_row_without_any_target_adds_nothing_and_gradients_reach_only_targeted_reads():
    logits, batch = batch_of([0.4, 0.8, 0.5], [0, 1, 1], [True, True, True], [NAN, 1.0, NAN], [NAN, NAN])
    logits.requires_grad_(True)
    losses = Objective().row_losses(logits, batch)
    assert losses[0].item() == 0.0
    losses.sum().backward()
    assert logits.grad[0].abs().sum() == 0 and logits.grad[2].abs().sum() == 0 and logits.grad[1].abs().sum() > 0


@pytest.mark.parametrize("bad", [{"loss": "l1"}, {"trajectory_read": "first"}, {"lambda_step": 0, "lambda_final": 0},
                                 {"lambda_final": -1}])
def test_bad_objective_settings_are_refused(bad):
    with pytest.raises(ValueError):
        Objective(**bad)


# ----------------------------------------------------------------------------------------------- rows


@pytest.fixture(scope="module")
def scorer(tiny_models):
    return StepScorer.from_pretrained(tiny_models.prm, system_prompt=None)


def pair_with(steps, targets, trajectory=1.0, row=0):
    completion = "\n\n".join(steps[:-1]) + "\n</think>\n\n" + steps[-1]
    return LabelledPair(row, "1+1?", completion, steps=tuple(steps), step_targets=tuple(targets),
                        trajectory_target=trajectory)


def test_a_training_row_is_what_the_scorer_encodes_with_one_target_per_tag(scorer):
    pair = pair_with(["Add one.", "Get 2.", "So 2."], [1.0, None, 0.0])
    [row], dropped = encode_pair(scorer, pair)
    encoded = scorer.encode(pair.problem, pair.completion)
    assert row.input_ids == encoded.rows[0] and row.reads == encoded.reads[0] and dropped == 0
    assert [row.input_ids[k] for k in row.reads] == [scorer.tag_id] * 3
    assert row.step_index == [0, 1, 2] and row.scored == [True] * 3
    assert row.step_targets[0] == 1.0 and math.isnan(row.step_targets[1]) and row.step_targets[2] == 0.0
    assert row.trajectory_target == 1.0


def test_windows_give_context_steps_no_target_and_the_trajectory_target_to_the_last_window(tiny_models):
    scorer = StepScorer.from_pretrained(tiny_models.prm, system_prompt=None, max_length=48, truncation="windows",
                                        window_overlap=12)
    steps = [f"Step {k}: add {k} to the running total." for k in range(8)]
    pair = pair_with(steps, [k / 10 for k in range(8)])
    rows, dropped = encode_pair(scorer, pair)
    assert len(rows) > 1 and dropped == 0
    scored = [(k, t) for r in rows for k, s, t in zip(r.step_index, r.scored, r.step_targets) if s]
    assert scored == [(k, k / 10) for k in range(8)]  # every step scored once, with its own target
    assert all(math.isnan(t) for r in rows for s, t in zip(r.scored, r.step_targets) if not s)
    assert [not math.isnan(r.trajectory_target) for r in rows] == [False] * (len(rows) - 1) + [True]


def test_a_batch_reads_each_rows_tags_in_order(scorer):
    rows = encode_pair(scorer, pair_with(["A.", "B."], [1.0, 0.0]))[0] + encode_pair(
        scorer, pair_with(["Longer first step here.", "C.", "D."], [0.0, 1.0, 1.0], row=1))[0]
    batch = collate_rows(rows, pad_id=scorer.pad_id)
    flat = batch["input_ids"].reshape(-1)
    assert flat[batch["read_index"]].tolist() == [scorer.tag_id] * 5
    assert batch["read_row"].tolist() == [0, 0, 1, 1, 1] and batch["example"].tolist() == [0, 1]
    assert batch["step_targets"].tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    # Right padding with explicit positions, as the scorer batches: position k is the k-th real token.
    assert batch["position_ids"][0, : len(rows[0].input_ids)].tolist() == list(range(len(rows[0].input_ids)))


# --------------------------------------------------------------------------------------------- batches


def test_batches_keep_the_budget_and_hold_every_row_once_each_epoch():
    rng = random.Random(0)
    lengths = [rng.randint(20, 900) for _ in range(500)]
    sampler = TokenBudgetBatchSampler(lengths, batch_tokens=4096, seed=3)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(k for b in batches for k in b) == list(range(500))
        assert all(len(b) == 1 or max(lengths[k] for k in b) * len(b) <= 4096 for b in batches)
        epochs.append(batches)
    assert epochs[0] != epochs[1] != epochs[2]  # the rows meet other rows each epoch
    again = TokenBudgetBatchSampler(lengths, batch_tokens=4096, seed=3)
    again.set_epoch(1)
    assert list(again) == epochs[1]  # every rank plans the same batches


def test_length_pools_pad_far_less_than_random_batches_of_as_many_rows():
    rng = random.Random(1)
    lengths = [int(rng.lognormvariate(6, 0.8)) + 10 for _ in range(2000)]
    batches = list(TokenBudgetBatchSampler(lengths, 16384, seed=0))
    padded = sum(max(lengths[k] for k in b) * len(b) for b in batches)
    order = list(range(2000))
    rng.shuffle(order)
    size = round(2000 / len(batches))  # what a fixed-size batch of the same count holds
    random_padded = sum(max(lengths[k] for k in order[i:i + size]) * len(order[i:i + size])
                        for i in range(0, 2000, size))
    assert padded < 0.6 * random_padded and padded < 1.2 * sum(lengths)


def test_evaluation_batches_are_sorted_longest_first_and_fixed():
    sampler = TokenBudgetBatchSampler([5, 50, 7, 40], batch_tokens=100, shuffle=False)
    sampler.set_epoch(2)
    assert list(sampler) == [[1, 3], [2, 0]]
