"""`reasonflux-rl bon`: each method's accuracy equals a hand computation; bad rows reported; generation works."""

import importlib.util
import json

import pytest
from PIL import Image

from reasonflux_rl import select
from reasonflux_rl.bon import best_of_n, main, resolve_backend
from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.scorer import StepScores


def test_best_of_n_arithmetic_matches_hand_computation():
    correct = [[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    scores = [[0.9, 0.2, 0.8, 0.1], [0.3, 0.6, 0.6, 0.2], [None, 0.4, None, 0.95]]
    keys = [["5", "7", "7", "5"], ["2", "3", "3", "3"], [None, None, "9", "9"]]
    # n=1: every method is candidate 0: (0 + 1 + 0) / 3.
    # n=2: prm picks 0, 1, 1 -> 0, 0, 0. majority: 1-1 ties -> group of candidate 0 -> 0, 1; no votes -> 0 -> 0.
    #      random: (1/2 + 1/2 + 0) / 3. oracle: 1, 1, 0.
    # n=4: prm picks 0, 1 (0.6 tie: the earlier, wrong one, not 2), 3 -> 0, 0, 1. majority: 2-2 tie -> "5" (first
    #      at 0) -> 0; "3" x3 -> candidate 1 -> 0; "9" x2 -> its first member, candidate 2 -> 0.
    #      random: (2/4 + 2/4 + 1/4) / 3. oracle: 1, 1, 1.
    table = best_of_n(correct, scores, keys, ns=[1, 2, 4])
    expected = [
        {"n": 1, "prm": 1 / 3, "majority": 1 / 3, "random": 1 / 3, "oracle": 1 / 3},
        {"n": 2, "prm": 0.0, "majority": 1 / 3, "random": 1 / 3, "oracle": 2 / 3},
        {"n": 4, "prm": 1 / 3, "majority": 0.0, "random": 5 / 12, "oracle": 1.0},
    ]
    assert table == [pytest.approx(row) for row in expected]


# Candidates with known PRM scores (the fake PRM reads the score after "%%") and real answers for the real judge.
HAND_MADE = [
    {  # row 0, reference 1/2
        "problem": "Half of 1?", "solution": "$\\frac{1}{2}$",
        "candidates": [
            "</think>\n\\boxed{0.4} %%0.9",  # wrong; key 2/5
            "</think>\n\\boxed{\\dfrac{1}{2}} %%0.95",  # right; key 1/2
            "</think>\n\\boxed{0.5} %%0.3",  # right; 0.5 votes with 1/2
            "</think>\n\\boxed{\\frac12} %%0.2",  # right; key 1/2
        ],
    },
    {"problem": "2+2?", "solution": "hello world", "candidates": ["</think>\n\\boxed{4} %%0.5"]},  # row 1: bad gold
    {  # row 2, reference 6
        "problem": "3+3?", "solution": "6",
        "candidates": [
            "<think>\nAdd.\n</think>\n\n\\boxed{6} %%0.1",  # right
            "</think>\n\\boxed{5} %%0.8",  # wrong
            "<think>\nNever closed, \\boxed{6} %%0.99",  # wrong: the thinking is cut; no vote
            "</think>\n\\boxed{5} %%0.4",  # wrong
        ],
    },
    {"problem": "1+1?", "solution": "2", "candidates": ["</think>\n\\boxed{2}", 7]},  # row 3: non-string candidate
    {"problem": "1+1?", "candidates": ["</think>\n\\boxed{2}"]},  # row 4: no reference
    {"problem": "1+1?", "solution": "2", "candidates": []},  # row 5: no candidates
]
# Row 0: n=1 -> 0. n=2 -> prm 1 (0.95), majority tie 2/5 vs 1/2 -> candidate 0 -> 0, random 1/2, oracle 1.
#        n=4 -> prm 1, majority 1/2 x3 -> candidate 1 -> 1, random 3/4, oracle 1.
# Row 2: n=1 -> 1. n=2 -> prm candidate 1 -> 0, majority tie -> candidate 0 -> 1, random 1/2, oracle 1.
#        n=4 -> prm candidate 2 (0.99) -> 0, majority 5 x2 -> candidate 1 -> 0, random 1/4, oracle 1.
HAND_TABLE = [
    {"n": 1, "prm": 0.5, "majority": 0.5, "random": 0.5, "oracle": 0.5},
    {"n": 2, "prm": 0.5, "majority": 0.5, "random": 0.5, "oracle": 1.0},
    {"n": 4, "prm": 0.5, "majority": 0.5, "random": 0.5, "oracle": 1.0},
]


class KnownScores:
    def __init__(self):
        self.completions = []

    def score(self, problems, completions):
        self.completions += completions
        return [StepScores([float(c.rsplit("%%", 1)[1])], num_steps=1) for c in completions]


@pytest.fixture
def known(monkeypatch):
    scorer = KnownScores()
    monkeypatch.setattr(select, "_load_scorer", lambda args: scorer)
    return scorer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_bon_with_the_real_judge_matches_hand_computation(known, tmp_path, capsys):
    data = write_jsonl(tmp_path / "bon.jsonl", HAND_MADE)
    out = tmp_path / "bon.json"
    main(["--input", str(data), "--prm", "fake", "--output", str(out), "--ns", "1,2,4,8",
          "--workers", "1", "--on-bad-row", "skip"])
    result = json.loads(out.read_text())
    assert result["table"] == [pytest.approx(row) for row in HAND_TABLE]
    assert result["ns"] == [1, 2, 4] and result["ns_skipped"] == [8]
    assert [b["row"] for b in result["bad_rows"]] == [1, 3, 4, 5]
    assert "cannot parse the reference answer 'hello world'" in result["bad_rows"][0]["reason"]
    assert result["rows"] == 6 == result["problems"] + len(result["bad_rows"])
    assert [p["correct"] for p in result["per_problem"]] == [[0, 1, 1, 1], [1, 0, 0, 0]]
    assert result["per_problem"][0]["answers"] == ["2/5", "1/2", "1/2", "1/2"]
    assert result["per_problem"][1]["answers"] == ["6", "5", None, "5"]
    assert len(known.completions) == 8  # the PRM scored only the good problems' candidates
    assert "skipping 3 bad rows" in capsys.readouterr().err
    png = tmp_path / "bon.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 400


def test_bad_rows_stop_bon_before_judging_with_their_row_numbers(known, tmp_path):
    data = write_jsonl(tmp_path / "bon.jsonl", HAND_MADE)
    with pytest.raises(ConfigError) as error:
        main(["--input", str(data), "--prm", "fake", "--output", str(tmp_path / "b.json"), "--no-plot"])
    assert str(error.value).startswith(
        "3 bad rows: row 3: candidate 1 of 'candidates' is a int, not a string | row 4: missing 'solution' | "
        "row 5: 'candidates' is an empty list"
    )
    assert known.completions == [] and not (tmp_path / "b.json").exists()


def test_bon_samples_candidates_from_a_policy_and_saves_them(tiny_models, tmp_path):
    problems = [{"problem": "1+1?", "solution": "2"}, {"problem": "2+3?", "solution": "5"}]
    data = write_jsonl(tmp_path / "problems.jsonl", problems)
    out = tmp_path / "bon.json"
    main(["--input", str(data), "--prm", str(tiny_models.prm), "--output", str(out),
          "--policy", str(tiny_models.policy), "--n", "2", "--backend", "transformers", "--max-new-tokens", "6",
          "--workers", "1", "--no-plot"])
    result = json.loads(out.read_text())
    assert result["ns"] == [1, 2] and result["ns_skipped"] == [4, 8, 16]
    saved = [json.loads(line) for line in (tmp_path / "bon.candidates.jsonl").read_text().splitlines()]
    assert [(r["problem"], r["solution"], len(r["candidates"])) for r in saved] == [("1+1?", "2", 2), ("2+3?", "5", 2)]
    # The tiny template pre-fills "<think>\n"; the saved candidates carry it, so they stand alone as --input.
    assert all(c.startswith("<think>\n") for r in saved for c in r["candidates"])
    assert [len(p["prm_scores"]) for p in result["per_problem"]] == [2, 2]
    for row in result["table"]:
        assert row["oracle"] >= max(row["prm"], row["majority"], row["random"])


def test_vllm_backend_is_checked_by_import(monkeypatch):
    assert resolve_backend("transformers") == "transformers"
    real_find_spec = importlib.util.find_spec
    fake_find_spec = lambda name, *a: None if name == "vllm" else real_find_spec(name, *a)
    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    assert resolve_backend("auto") == "transformers"
    with pytest.raises(ConfigError, match="vllm cannot be imported"):
        resolve_backend("vllm")
