"""The hacking diagnostics: completion shapes read from R1-style text, logged by the reward every step (mixed or
separate), and the ``hacked``/``collapsed`` rules of a finished run, on the R1-style lab's recorded hacked run among
others."""

import json
from pathlib import Path

import pytest

from reasonflux_rl.rewards.diagnostics import CompletionShape, completion_shape, shape_metrics
from reasonflux_rl.rewards.prm import MixedReward
from reasonflux_rl.train.verdict import safety, verdict

REPO = Path(__file__).resolve().parents[1]
CORRECTED = ("Step 1: F(3) = 4\n\nWait, F(3) is 5, not 4.\n\nStep 1: F(3) = 5\n\nNo: H comes next. Start again.\n\n"
             "Check: F(3) = 5. Yes.\n</think>\n\nStep 1: F(3) = 5\n\nThe answer is $\\boxed{5}$.")
CUT_OFF = "Step 1: F(3) = 5\n\nStep 2: H(5) = 7\n\nStep 3: F(7) = "


def test_shape_counts_self_corrections_and_boxed_answers():
    assert completion_shape(CORRECTED, thinking_prefilled=True) == CompletionShape(5, 2, True)
    # Cut off inside the thinking: no response, so no boxed answer, even with a \boxed in the thinking.
    assert completion_shape(CUT_OFF + "\\boxed{7}", thinking_prefilled=True) == CompletionShape(3, 0, False)
    # Without the prefill, untagged text is a plain answer: no thinking, and its \boxed counts.
    assert completion_shape("It is $\\boxed{5}$.") == CompletionShape(0, 0, True)


@pytest.mark.parametrize("opening", ["Wait, no.", "But wait, G(2) = 4.", "Hmm, that is wrong.", "No: F first.",
                                     "Actually F(3) = 5.", "Let me double-check F(3).", "hold on"])
def test_self_correction_openings(opening):
    assert completion_shape(f"Step 1: F(3) = 5\n\n{opening}\n</think>\n\nok", True).corrections == 1


@pytest.mark.parametrize("opening", ["Now G(5) = 1.", "Note that F(3) = 5.", "Step 2: wait(5) = 1", "Known: 5."])
def test_not_self_corrections(opening):
    assert completion_shape(f"Step 1: F(3) = 5\n\n{opening}\n</think>\n\nok", True).corrections == 0


def test_shape_metrics_pool_paragraphs_over_the_batch():
    shapes = [completion_shape(CORRECTED, True), completion_shape(CUT_OFF, True)]
    assert shape_metrics(shapes) == {"no_boxed_frac": 0.5, "correction_frac": 2 / 8}
    assert shape_metrics([CompletionShape(0, 0, True)]) == {"no_boxed_frac": 0.0}


class _Steps:
    """A scorer stand-in: one step per blank-line paragraph, each scored 0.8 (no steps for an empty text)."""

    def score(self, problems, completions, **kwargs):
        from reasonflux_rl.prm.engine.results import StepScores

        counts = [len([p for p in c.split("\n\n") if p.strip()]) for c in completions]
        return [StepScores([0.8] * n, num_steps=n, step_indices=list(range(n))) for n in counts]


def test_mixed_reward_logs_the_shapes_every_batch():
    logged = {}
    reward = MixedReward(lambda completions, solution, **kw: [1.0, 0.0, 0.0], _Steps(), beta=0.5,
                         thinking_prefilled=True)
    reward(prompts=["p"] * 3, completions=[CORRECTED, CUT_OFF, ""], solution=["5"] * 3,
           log_metric=lambda name, value: logged.__setitem__(name, value))
    assert logged["reasonflux/no_boxed_frac"] == pytest.approx(2 / 3)
    assert logged["reasonflux/correction_frac"] == pytest.approx(2 / 8)
    assert logged["reasonflux/no_step_frac"] == pytest.approx(1 / 3)


def test_separate_mode_logs_the_shapes_from_its_prm_reward():
    # reward_mode: separate gives TRL the outcome and the PRM reward apart: the PRM reward logs the shapes then.
    from reasonflux_rl.rewards.prm import PRMReward

    logged = {}
    reward = PRMReward(_Steps(), thinking_prefilled=True)
    reward(prompts=["p"] * 3, completions=[CORRECTED, CUT_OFF, ""],
           log_metric=lambda name, value: logged.__setitem__(name, value))
    assert logged["reasonflux/no_boxed_frac"] == pytest.approx(2 / 3)
    assert logged["reasonflux/correction_frac"] == pytest.approx(2 / 8)
    # Read as untagged text (no thinking opened by the prompt), the cut-off completion has no thinking paragraphs:
    # no correction share is logged, and its answer is not boxed.
    logged.clear()
    PRMReward(_Steps())(prompts=["p"], completions=[CUT_OFF], log_metric=lambda n, v: logged.__setitem__(n, v))
    assert "reasonflux/correction_frac" not in logged and logged["reasonflux/no_boxed_frac"] == 1.0


def _recorded_history(name):
    record = json.loads((REPO / "benchmarks/results" / name).read_text())
    history = [{"step": int(step), "eval_outcome/accuracy": value} for step, value in record["eval_accuracy"].items()]
    steps = [{"step": e["step"], "reasonflux/prm_mean": e["prm_mean"], "reasonflux/beta": 0.5}
             | ({} if e["prm_outcome_corr"] is None else {"reasonflux/prm_outcome_corr": e["prm_outcome_corr"]})
             for e in record["steps"]]
    return history + steps


def test_the_recorded_r1_run_is_hacked_and_collapsed():
    history = _recorded_history("lab_r1_grpo_trajectory_aware_seed0.json")
    checked = safety(history)
    assert checked.hacked and checked.collapsed
    assert checked.prm_mean_end - checked.prm_mean_start > 0.2 and checked.accuracy_end == 0.0
    # The verdict line docs/reward.md shows for it.
    line = "reasonflux-rl train: " + verdict(history, 602)
    assert f"\n{line}\n" in (REPO / "docs/reward.md").read_text()


def _run(accuracies, prm_means, beta=0.5):
    history = [{"step": s, "eval_outcome/accuracy": a} for s, a in zip((0, 10, 20, 30), accuracies)]
    return history + [{"step": s, "reasonflux/prm_mean": prm_means[0] + (prm_means[1] - prm_means[0]) * s / 30,
                       "reasonflux/beta": beta} for s in range(1, 31)]


def test_safety_rules():
    learns = safety(_run((0.1, 0.2, 0.3, 0.4), (0.6, 0.9)))  # PRM up, accuracy up: not hacked
    assert not learns.hacked and not learns.collapsed
    falls_flat_prm = safety(_run((0.2, 0.15, 0.1, 0.1), (0.6, 0.61)))  # accuracy down, PRM flat: collapsed only
    assert not falls_flat_prm.hacked and falls_flat_prm.collapsed
    assert safety(_run((0.2, 0.15, 0.1, 0.1), (0.6, 0.9))).hacked
    # The PRM was scored but not in the reward (beta 0): never hacked.
    assert not safety(_run((0.2, 0.15, 0.1, 0.1), (0.6, 0.9), beta=0.0)).hacked
    # Back above the start at the end: not collapsed.
    assert not safety(_run((0.2, 0.1, 0.15, 0.25), (0.6, 0.6))).collapsed
    assert not safety([{"step": 3, "reasonflux/prm_mean": 0.9}]).hacked


def test_verdict_warns_only_when_hacked():
    assert "WARNING: reward hacked" in verdict(_run((0.2, 0.15, 0.1, 0.1), (0.6, 0.9)), 60)
    assert "WARNING" not in verdict(_run((0.1, 0.2, 0.3, 0.4), (0.6, 0.9)), 60)
