"""Outcome reward: the judgement table, input handling, metrics and format reward.

Pool robustness (timeouts, killed workers, threads, event loops) is in test_outcome_pool.py.
"""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.rewards import outcome, verify_pool
from reasonflux_rl.rewards.outcome import OutcomeReward, format_reward, outcome_reward
from reasonflux_rl.rewards.verify_pool import default_num_workers

R1 = "<think>\nLet me work it out.\n\nChecking again.\n</think>\n\nSo the answer is $\\boxed{%s}$."
DISTILL = "Working (the R1-distill template pre-filled <think>).\n</think>\n\nThe answer is $\\boxed{%s}$."

# (gold, completion, expected). Every expectation was checked by hand against math-verify 0.9 and is
# mathematically right; equivalences math-verify gets wrong are not asserted here.
CASES = [
    # equivalent forms that must match
    ("$\\frac{1}{2}$", R1 % "0.5", 1.0),
    ("$\\frac12$", R1 % "\\frac{1}{2}", 1.0),
    ("$\\frac{3}{4}$", R1 % "\\dfrac{3}{4}", 1.0),
    ("$\\frac{1}{2}$", R1 % "\\tfrac{1}{2}", 1.0),
    ("$\\frac{1}{2}$", R1 % "1/2", 1.0),
    ("$-\\frac{1}{2}$", R1 % "-0.5", 1.0),
    ("$\\frac{7}{2}$", R1 % "3\\frac{1}{2}", 1.0),
    ("$0.1$", R1 % "\\frac{1}{10}", 1.0),
    ("$[1,2)$", R1 % "[1,2)", 1.0),
    ("$(-\\infty, 3]$", R1 % "(-\\infty,3]", 1.0),
    ("$\\{1,2\\}$", R1 % "\\{2,1\\}", 1.0),
    ("$\\{2,3\\}$", R1 % "3, 2", 1.0),
    ("$2\\sqrt{2}$", R1 % "\\sqrt{8}", 1.0),
    ("$\\frac{\\sqrt{2}}{2}$", R1 % "\\frac{1}{\\sqrt{2}}", 1.0),
    ("$30^\\circ$", R1 % "30", 1.0),
    ("$45^{\\circ}$", R1 % "45^\\circ", 1.0),
    ("$10$", R1 % "10\\text{ cm}", 1.0),
    ("$10$", R1 % "10 \\text{ dollars}", 1.0),
    ("$5$", R1 % "\\$5", 1.0),
    ("$3$", R1 % "x=3", 1.0),
    ("$x=3$", R1 % "x=3", 1.0),
    ("$50\\%$", R1 % "50\\%", 1.0),
    ("$\\frac{3}{4}$", R1 % "75\\%", 1.0),
    ("$1000$", R1 % "1,000", 1.0),
    ("$2^{10}$", R1 % "1024", 1.0),
    ("$1.5\\times10^{3}$", R1 % "1500", 1.0),
    ("$12$", R1 % "12.0", 1.0),
    ("$x^2+2x+1$", R1 % "(x+1)^2", 1.0),
    ("$a+b$", R1 % "b+a", 1.0),
    ("$\\sin^2 x + \\cos^2 x$", R1 % "1", 1.0),
    ("$\\left( 3, \\frac{\\pi}{2} \\right)$", R1 % "\\left(3, \\frac{\\pi}{2}\\right)", 1.0),
    ("$\\begin{pmatrix}1\\\\2\\end{pmatrix}$", R1 % "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 1.0),
    ("$\\text{(B)}$", R1 % "B", 1.0),
    ("$5$", "</think>\nThe final answer is $5$.", 1.0),  # anchored, no box
    # near misses that must not match
    ("$(1,2)$", R1 % "[1,2]", 0.0),
    ("$[1,2)$", R1 % "(1,2]", 0.0),
    ("$\\{1,2\\}$", R1 % "\\{1,2,3\\}", 0.0),
    ("$\\frac13$", R1 % "0.333", 0.0),
    ("$0.5$", R1 % "0.50001", 0.0),
    ("$-3$", R1 % "3", 0.0),
    ("$\\pi$", R1 % "3.14", 0.0),
    ("$2\\sqrt{2}$", R1 % "\\sqrt{2}", 0.0),
    ("$x^2+2x+1$", R1 % "(x-1)^2", 0.0),
    ("$100$", R1 % "1000", 0.0),
    ("$\\frac{1}{2}$", R1 % "\\frac{2}{1}", 0.0),
    ("$x=3$", R1 % "y=3", 0.0),
    ("$B$", R1 % "C", 0.0),
    ("$\\begin{pmatrix}1\\\\2\\end{pmatrix}$", R1 % "\\begin{pmatrix}2\\\\1\\end{pmatrix}", 0.0),
    # gold that cannot be judged: None, never 0
    ("no math here", R1 % "1", None),
    ("", R1 % "1", None),
    ("no math here", "<think>\ntruncated", None),
    # where the answer is taken from
    ("$4$", DISTILL % "4", 1.0),
    ("$4$", DISTILL % "5", 0.0),
    ("$4$", "\\boxed{4}", 1.0),  # no think tags: the whole text is the response
    ("$4$", "<think>\nIt is \\boxed{4}, I think, but the length limit hit", 0.0),  # truncated
    ("$4$", "<think>\nIt is \\boxed{4}.\n</think>\n\nI am not sure.", 0.0),  # answer only inside thinking
    ("$4$", "<think>\nMaybe \\boxed{5}.\n</think>\n\nNo: \\boxed{4}.", 1.0),  # thinking's answer is ignored
    ("$4$", "<think>\nMaybe \\boxed{4}.\n</think>\n\nNo: \\boxed{5}.", 0.0),
    ("$4$", "<think>\na\n</think>\nb\n</think>\n\\boxed{4}", 1.0),  # split at the LAST </think>
    ("$4$", "</think>\n\nThe answer is four.", 0.0),  # no box, no anchor
    ("$4$", "</think>\n\\boxed{}", 0.0),
    ("$4$", "</think>\n\\boxed{3} or \\boxed{4}", 0.0),  # hedging with several boxes is not rewarded
    ("$3$", "</think>\n\\boxed{3} or \\boxed{4}", 0.0),
    ("$\\{3,4\\}$", "</think>\n\\boxed{3} and \\boxed{4}", 1.0),
]


@pytest.fixture(scope="module")
def reward():
    # Nothing here tests timeouts (test_outcome_pool.py does): a limit no item reaches on a loaded machine, so that
    # a slow sympy item is judged, not scored 0.0 as a timeout.
    with OutcomeReward(num_workers=2, timeout_seconds=60.0) as reward:
        yield reward


@pytest.mark.parametrize(("gold", "completion", "expected"), CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_judgement_table(reward, gold, completion, expected):
    assert reward.score([completion], [gold]) == [expected]


@pytest.mark.parametrize("shorthand", ["\\frac12", "\\sqrt 2 / 2 + \\frac12 - \\sqrt 2 / 2"])
def test_unbraced_operator_shorthand_in_answer_is_read(reward, shorthand):
    # TRL's answer config (no malformed_operators) cannot parse these and would score a right answer 0.
    assert reward.score([R1 % shorthand], ["$\\frac{1}{2}$"]) == [1.0]


def test_whole_table_in_one_batch_is_ordered_and_deterministic(reward):
    golds = [gold for gold, _, _ in CASES]
    completions = [completion for _, completion, _ in CASES]
    expected = [want for _, _, want in CASES]
    assert reward.score(completions, golds) == expected
    assert reward.score(completions[::-1], golds[::-1]) == expected[::-1]


def test_conversational_and_plain_completions_agree(reward):
    golds = [gold for gold, _, _ in CASES]
    plain = [completion for _, completion, _ in CASES]
    chat = [[{"role": "assistant", "content": completion}] for completion in plain]
    assert reward(chat, solution=golds) == reward(plain, solution=golds) == [want for _, _, want in CASES]


def test_gold_column_is_configurable():
    reward = OutcomeReward(num_workers=1, gold_column="answer")
    with pytest.raises(ValueError, match="'answer'"):
        reward(["\\boxed{1}"], solution=["1"])
    with reward:
        assert reward(["\\boxed{1}"], answer=["1"], prompts=["p"]) == [1.0]


def test_truncated_thinking_is_judged_when_closing_is_not_required(reward):
    truncated = "<think>\nSo it is $\\boxed{4}$ and then I kept going until the limit"
    lenient = OutcomeReward(num_workers=1, require_closed_thinking=False)
    with lenient:
        assert lenient.score([truncated, "<think>\n\\boxed{5}"], ["4", "4"]) == [1.0, 0.0]
    assert reward.score([truncated], ["4"]) == [0.0]


def test_metrics_and_extra_columns(reward):
    metrics, extra = {}, {}
    completions = [
        R1 % "4",  # right
        R1 % "5",  # wrong
        "<think>\n\\boxed{4} cut off",  # truncated
        "<think>\nalso cut off",  # truncated, and its gold is unparseable
        R1 % "1",  # gold unparseable
    ]
    golds = ["4", "4", "4", "not a number", "not a number"]
    scores = reward.score(completions, golds, metrics.__setitem__, log_extra=extra.__setitem__)
    assert scores == [1.0, 0.0, 0.0, None, None]
    assert metrics["outcome/accuracy"] == pytest.approx(1 / 3)
    assert metrics["outcome/gold_unparseable"] == 2
    assert metrics["outcome/truncated"] == 2
    assert metrics["outcome/timeouts"] == 0
    assert metrics["outcome/worker_restarts"] == 0
    assert metrics["outcome/worker_failures"] == 0
    assert 0 < metrics["outcome/max_item_seconds"] < reward.timeout_seconds  # no item timed out
    assert extra["answer_parsed"][:3] == ["[4, '4']", "[5, '5']", "[truncated]"]
    assert extra["gold_parsed"][0] == "[4, '4']" and extra["gold_parsed"][4] == "[unparseable]"


def test_trl_calling_convention_logs_through_kwargs(reward):
    metrics, columns = [], []
    scores = reward(
        prompts=["1+1?"],
        completions=[[{"role": "assistant", "content": "</think>\n\\boxed{2}"}]],
        completion_ids=[[1, 2, 3]],
        trainer_state=None,
        log_metric=lambda name, value: metrics.append(name),
        log_extra=lambda name, values: columns.append(name),
        solution=["2"],
    )
    assert scores == [1.0]
    assert {"outcome/accuracy", "outcome/timeouts", "outcome/worker_restarts", "outcome/truncated"} <= set(metrics)
    assert columns == ["gold_parsed", "answer_parsed"]


def test_bad_input_is_rejected(reward):
    with pytest.raises(ValueError, match="3 completions but 2 gold"):
        reward.score(["a", "b", "c"], ["1", "2"])
    with pytest.raises(TypeError, match="row 1: a gold answer must be a str or a number, got list"):
        reward.score(["\\boxed{1}", "\\boxed{2}"], ["1", ["2"]])
    with pytest.raises(TypeError, match="row 0: .* got bool"):
        reward.score(["\\boxed{1}"], [True])
    with pytest.raises(TypeError, match="a completion must be a string or a conversational list .* got dict"):
        reward([{"not": "a message list"}], solution=["1"])
    assert reward.score([], []) == []


def test_reward_name_and_pickling(reward):
    assert reward.__name__ == "outcome"
    clone = pickle.loads(pickle.dumps(reward))
    assert (clone.timeout_seconds, clone.num_workers) == (reward.timeout_seconds, reward.num_workers)
    assert clone._pool is None  # the pool is not shipped; it starts on first use
    with clone:
        assert clone.score(["\\boxed{2}"], ["2"]) == [1.0]


def test_module_level_reward_function():
    completions = [[{"role": "assistant", "content": "</think>\n\\boxed{\\dfrac{3}{4}}"}]] * 2
    assert outcome_reward(completions, solution=["$0.75$", "$0.7$"]) == [1.0, 0.0]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>\nwork\n</think>\n\n$\\boxed{4}$", 1.0),
        ("work (template pre-filled <think>)\n</think>\n\\boxed{x^{2}}", 1.0),
        ([{"role": "assistant", "content": "work\n</think>\n\\boxed{4}"}], 1.0),
        ("<think>\nwork\n</think>\n\nIt is 4.", 0.0),  # no box
        ("<think>\nwork \\boxed{4}\n</think>\n\nIt is 4.", 0.0),  # box only inside thinking
        ("<think>\nwork \\boxed{4}", 0.0),  # never closed
        ("\\boxed{4}", 0.0),  # no thinking at all
        ("<think>\na\n</think>\n</think>\n\\boxed{4}", 0.0),  # closed twice
        ("<think>\n<think>\na\n</think>\n\\boxed{4}", 0.0),  # opened twice
        ("</think> <think>\\boxed{4}", 0.0),  # opened after closing
        ("<think>\na\n</think>\n\\boxed{}", 0.0),  # empty box
        ("<think>\na\n</think>\n\\boxed{4", 0.0),  # unbalanced box
    ],
)
def test_format_reward(completion, expected):
    assert format_reward([completion]) == [expected]


def test_completion_without_close_tag_is_truncated_when_the_prompt_opened_thinking(reward):
    completion = "Let me see, 2 + 2 is \\boxed{4} and then"
    assert reward.score([completion], ["$4$"]) == [1.0]  # no tags and no pre-fill: a plain answer
    with OutcomeReward(num_workers=1, thinking_prefilled=True) as prefilled:
        assert prefilled.score([completion, "It is 4.\n</think>\n\\boxed{4}"], ["$4$"] * 2) == [0.0, 1.0]


def test_r1_distill_style_template_is_detected(tiny_models, tmp_path):
    from transformers import AutoTokenizer

    from reasonflux_rl.train.launch import thinking_prefilled_by

    assert thinking_prefilled_by(str(tiny_models.policy)) is True
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.policy)
    tokenizer.chat_template = tokenizer.chat_template.replace("<think>\\n", "")
    tokenizer.save_pretrained(tmp_path)
    assert thinking_prefilled_by(str(tmp_path)) is False


def test_numeric_golds_are_written_out_and_missing_golds_are_unparseable(reward):
    # Datasets read from CSV/parquet hold numbers, and missing answers as None or NaN.
    rows = [
        (12, "\\boxed{12}", 1.0),
        (12, "\\boxed{13}", 0.0),
        (np.int64(-7), "\\boxed{-7}", 1.0),
        (0.5, "\\boxed{\\frac{1}{2}}", 1.0),
        (3.0, "\\boxed{3}", 1.0),
        (np.float64(0.25), "\\boxed{0.25}", 1.0),
        (1.5e-05, "\\boxed{0.000015}", 1.0),
        (1e-05, "\\boxed{1}", 0.0),  # repr would give "1e-05", which math-verify reads as 1
        (2e20, "\\boxed{2 \\times 10^{20}}", 1.0),
        (None, "\\boxed{1}", None),
        (float("nan"), "\\boxed{1}", None),
        (np.nan, "<think>\ncut off", None),
        ("", "\\boxed{1}", None),
        ("   ", "\\boxed{1}", None),
    ]
    metrics: dict = {}
    scores = reward.score([r[1] for r in rows], [r[0] for r in rows], metrics.__setitem__)
    assert scores == [r[2] for r in rows]
    assert metrics["outcome/gold_unparseable"] == 5
    assert reward(["\\boxed{12}"], solution=[12]) == [1.0]


def test_default_worker_count_shares_the_cores_among_the_ranks_of_the_node(monkeypatch):
    monkeypatch.setattr(verify_pool.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_num_workers() == 16
    assert OutcomeReward().num_workers == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert OutcomeReward().num_workers == 2
    assert OutcomeReward(num_workers=5).num_workers == 5
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert default_num_workers() == 5
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert default_num_workers() == 1
    assert default_num_workers({"LOCAL_WORLD_SIZE": "not a number"}) == 16


@pytest.fixture
def fresh_module_reward(monkeypatch):
    """The module-level reward is created on first call; give each test its own and close it after."""
    for name in list(outcome.os.environ):
        if name.startswith("REASONFLUX_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(outcome, "_default_reward", None)
    yield
    if outcome._default_reward is not None:
        outcome._default_reward.close()


def test_module_level_reward_reads_the_reasonflux_environment(monkeypatch, fresh_module_reward):
    monkeypatch.setenv("REASONFLUX_THINKING_PREFILLED", "true")
    monkeypatch.setenv("REASONFLUX_OUTCOME_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("REASONFLUX_OUTCOME_NUM_WORKERS", "1")
    monkeypatch.setenv("REASONFLUX_SOLUTION_COLUMN", "answer")
    # PRM settings belong to the mixed reward: a PRM path that does not exist, or none with beta > 0, is not our
    # concern.
    monkeypatch.setenv("REASONFLUX_PRM_BETA", "0.9")
    # Pre-filled thinking: a completion without </think> was cut off, and scores 0 although its box is right.
    completions = ["2 + 2 is \\boxed{4} and then", "2 + 2\n</think>\n\\boxed{4}"]
    assert outcome_reward(completions, answer=["4", "4"]) == [0.0, 1.0]
    reward = outcome._default_reward
    assert (reward.thinking_prefilled, reward.timeout_seconds, reward.num_workers) == (True, 2.5, 1)
    assert reward.gold_column == "answer" and reward.require_closed_thinking is True


def test_module_level_reward_defaults_and_bad_environment(monkeypatch, fresh_module_reward):
    monkeypatch.setenv("REASONFLUX_OUTCOME_NUM_WORKERS", "1")
    assert outcome_reward(["2 + 2 is \\boxed{4}"], solution=["4"]) == [1.0]  # not pre-filled: a plain answer
    assert outcome._default_reward.thinking_prefilled is False
    monkeypatch.setattr(outcome, "_default_reward", None)
    monkeypatch.setenv("REASONFLUX_OUTCOME_TIMEOUT_SECONDS", "0")
    with pytest.raises(ConfigError, match="outcome_timeout_seconds=0.0 must be positive"):
        outcome_reward(["\\boxed{4}"], solution=["4"])


def test_one_build_from_reward_arguments():
    """build_reward and the environment both build the outcome reward with OutcomeReward.from_args."""
    from reasonflux_rl.rewards.config import RewardArguments

    settings = {
        "thinking_prefilled": True,
        "require_closed_thinking": False,
        "timeout_seconds": 2.5,
        "num_workers": 3,
        "gold_column": "answer",
    }
    args = RewardArguments(
        prm_beta=0,
        thinking_prefilled=True,
        outcome_require_closed_thinking=False,
        outcome_timeout_seconds=2.5,
        outcome_num_workers=3,
        solution_column="answer",
    )
    assert OutcomeReward.from_args(args).__getstate__() == settings
    environ = {
        "REASONFLUX_THINKING_PREFILLED": "true",
        "REASONFLUX_OUTCOME_REQUIRE_CLOSED_THINKING": "false",
        "REASONFLUX_OUTCOME_TIMEOUT_SECONDS": "2.5",
        "REASONFLUX_OUTCOME_NUM_WORKERS": "3",
        "REASONFLUX_SOLUTION_COLUMN": "answer",
    }
    assert outcome.outcome_reward_from_env(environ).__getstate__() == settings
    assert OutcomeReward.from_args(RewardArguments(prm_beta=0)).thinking_prefilled is False  # None: not pre-filled


def test_r1_distill_completions_without_prefill_warn_once(caplog):
    distill = "Working it out.\n</think>\n\nThe answer is $\\boxed{4}$."
    with caplog.at_level(logging.WARNING, logger="reasonflux_rl.rewards.outcome"):
        with OutcomeReward(num_workers=1) as reward:
            assert reward.score([R1 % "4", "\\boxed{4}", "<think>\ncut"], ["4"] * 3) == [1.0, 1.0, 0.0]
            assert not caplog.records  # R1 form, plain and truncated R1: no sign of a pre-filled template
            reward.score([R1 % "4", distill], ["4", "4"])
            reward.score([distill], ["4"])
        with OutcomeReward(num_workers=1, thinking_prefilled=True) as prefilled:
            prefilled.score([distill], ["4"])
    [record] = caplog.records
    assert "truncated completions" in record.getMessage() and "thinking_prefilled" in record.getMessage()
