"""`reasonflux-rl bon`: each method's accuracy equals a hand computation; bad rows reported; generation works."""

import importlib.util
import json

import pytest
from jsonl_helpers import write_jsonl
from PIL import Image

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm import load_scorer
from reasonflux_rl.prm.kinds.step_classifier import StepScores
from reasonflux_rl.tools import bon
from reasonflux_rl.tools.bon import best_of_n, main, resolve_backend


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
    # weighted majority, n=2: "5" 0.9 over "7" 0.2 -> 0 -> 0; "3" 0.6 over "2" 0.3 -> candidate 1 -> 0; no votes -> 0.
    #      n=4: "5" 1.0 ties "7" 1.0 -> the earlier group, "5" -> 0; "3" 1.4 -> 0; "9" 0 (unscored) + 0.95 -> 2 -> 0.
    table = best_of_n(correct, scores, keys, ns=[1, 2, 4])
    expected = [
        {"n": 1, "prm": 1 / 3, "majority": 1 / 3, "weighted_majority": 1 / 3, "random": 1 / 3, "oracle": 1 / 3},
        {"n": 2, "prm": 0.0, "majority": 1 / 3, "weighted_majority": 0.0, "random": 1 / 3, "oracle": 2 / 3},
        {"n": 4, "prm": 1 / 3, "majority": 0.0, "weighted_majority": 0.0, "random": 5 / 12, "oracle": 1.0},
    ]
    assert table == [pytest.approx(row) for row in expected]


# Candidates with known PRM scores (the fake PRM reads the score after "%%") and real answers for the real judge.
# Built so that at N=4 the PRM pick, majority vote, random pick and always-the-first-candidate all score differently,
# and swapping the PRM scores of problems A and B changes the PRM's accuracy.
HAND_MADE = [
    {  # row 0, problem A, reference 1/2
        "problem": "Half of 1?", "solution": "$\\frac{1}{2}$",
        "candidates": [
            "</think>\n\\boxed{0.4} %%0.3",  # wrong; key 2/5
            "</think>\n\\boxed{\\dfrac{1}{2}} %%0.9",  # right; key 1/2
            "</think>\n\\boxed{0.5} %%0.5",  # right; 0.5 votes with 1/2
            "</think>\n\\boxed{\\frac12} %%0.2",  # right; key 1/2
        ],
    },
    # row 1: a reference math-verify cannot parse; its single candidate must not cut the others to N=1.
    {"problem": "2+2?", "solution": "hello world", "candidates": ["</think>\n\\boxed{4} %%0.5"]},
    {  # row 2, problem B, reference 6
        "problem": "3+3?", "solution": "6",
        "candidates": [
            "<think>\nAdd.\n</think>\n\n\\boxed{6} %%0.95",  # right
            "</think>\n\\boxed{5} %%0.6",  # wrong
            "<think>\nNever closed, \\boxed{6} %%0.7",  # wrong: the thinking is cut; no vote
            "</think>\n\\boxed{5} %%0.1",  # wrong
        ],
    },
    {"problem": "1+1?", "solution": "2", "candidates": ["</think>\n\\boxed{2}", 7]},  # row 3: non-string candidate
    {"problem": "1+1?", "candidates": ["</think>\n\\boxed{2}"]},  # row 4: no reference
    {"problem": "1+1?", "solution": "2", "candidates": []},  # row 5: no candidates
    {  # row 6, problem C, reference 10 (an integer); candidates past N=4 are never judged nor scored
        "problem": "5+5?", "solution": 10,
        "candidates": [
            "</think>\n\\boxed{7} %%0.6",  # wrong
            "</think>\n\\boxed{10} %%0.2",  # right
            "</think>\n\\boxed{\\frac{20}{2}} %%0.85",  # right; votes with 10
            "</think>\n\\boxed{8} %%0.5",  # wrong
            "</think>\n\\boxed{7} %%0.99",  # cut
            "</think>\n\\boxed{7} %%0.98",  # cut
        ],
    },
]
# N=1: every method takes candidate 0: A 0, B 1, C 0.
# N=2: A: prm 1 (0.9), majority 2/5-1/2 tie -> candidate 0 -> 0. B: prm 0 (0.95) -> 1, majority tie -> 1.
#      C: prm 0 (0.6) -> 0, majority tie -> 0. Random 1/2 each; oracle 1 each.
# N=4: A: prm 1 -> 1, majority 1/2 x3 -> candidate 1 -> 1, random 3/4. B: prm 0 -> 1, majority 5 x2 -> candidate 1
#      -> 0, random 1/4. C: prm 2 (0.85) -> 1, majority 10 x2 -> candidate 1 -> 1, random 2/4. Oracle 1 each.
# Weighted majority, N=2: A "1/2" 0.9 over "2/5" 0.3 -> 1; B "6" 0.95 over "5" 0.6 -> 1; C "7" 0.6 over "10" 0.2 -> 0.
#      N=4: A "1/2" 1.6 -> 1; B "6" 0.95 over "5" 0.7 (the cut candidate does not vote) -> 1; C "10" 1.05 -> 1.
HAND_TABLE = [
    {"n": 1, "prm": 1 / 3, "majority": 1 / 3, "weighted_majority": 1 / 3, "random": 1 / 3, "oracle": 1 / 3},
    {"n": 2, "prm": 2 / 3, "majority": 1 / 3, "weighted_majority": 2 / 3, "random": 1 / 2, "oracle": 1.0},
    {"n": 4, "prm": 1.0, "majority": 2 / 3, "weighted_majority": 1.0, "random": 1 / 2, "oracle": 1.0},
]
HAND_SCORES = [[0.3, 0.9, 0.5, 0.2], [0.95, 0.6, 0.7, 0.1], [0.6, 0.2, 0.85, 0.5]]
HAND_CORRECT = [[0, 1, 1, 1], [1, 0, 0, 0], [0, 1, 1, 0]]


def test_the_hand_made_table_tells_the_methods_apart():
    first_candidate = HAND_TABLE[0]["prm"]
    at_4 = [HAND_TABLE[2][m] for m in ("prm", "majority", "random")] + [first_candidate]
    assert len(set(at_4)) == 4
    keys = [["2/5", "1/2", "1/2", "1/2"], ["6", "5", None, "5"], ["7", "10", "10", "8"]]
    swapped = [HAND_SCORES[1], HAND_SCORES[0], HAND_SCORES[2]]
    assert best_of_n(HAND_CORRECT, swapped, keys, ns=[4])[0]["prm"] != HAND_TABLE[2]["prm"]


class KnownScores:
    def __init__(self, crash_on=None):
        self.completions, self.calls, self.crash_on = [], 0, crash_on

    def score(self, problems, completions):
        self.calls += 1
        if self.calls == self.crash_on:
            raise KeyboardInterrupt("killed")
        self.completions += completions
        return [StepScores([float(c.rsplit("%%", 1)[1])], num_steps=1) for c in completions]


@pytest.fixture
def known(monkeypatch):
    scorer = KnownScores()
    monkeypatch.setattr(bon, "scorer_from_args", lambda args: scorer)
    return scorer


def run_bon(data, out, *extra):
    main(["--input", str(data), "--prm", "fake", "--output", str(out), "--ns", "1,2,4,8", "--workers", "1",
          "--on-bad-row", "skip", *extra])
    return json.loads(out.read_text())


def test_bon_with_the_real_judge_matches_hand_computation(known, tmp_path, capsys):
    data = write_jsonl(tmp_path / "bon.jsonl", HAND_MADE)
    result = run_bon(data, tmp_path / "bon.json")
    assert result["table"] == [pytest.approx(row) for row in HAND_TABLE]
    assert result["ns"] == [1, 2, 4] and result["ns_skipped"] == [8]
    assert [b["row"] for b in result["bad_rows"]] == [1, 3, 4, 5]
    assert "cannot parse the reference answer 'hello world'" in result["bad_rows"][0]["reason"]
    assert result["bad_rows"][0]["line"] == 2
    assert result["rows"] == 7 == result["problems"] + len(result["bad_rows"])
    assert [p["row"] for p in result["per_problem"]] == [0, 2, 6]
    assert [p["prm_scores"] for p in result["per_problem"]] == HAND_SCORES
    assert [p["correct"] for p in result["per_problem"]] == HAND_CORRECT
    assert [p["answers"] for p in result["per_problem"]] == [
        ["2/5", "1/2", "1/2", "1/2"], ["6", "5", None, "5"], ["7", "10", "10", "8"]
    ]
    # The PRM scored the good problems' first four candidates, nothing else.
    assert known.completions == [c for i in (0, 2, 6) for c in HAND_MADE[i]["candidates"][:4]]
    assert "skipping 3 bad rows" in capsys.readouterr().err
    png = tmp_path / "bon.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 400


def killed_in_second_chunk(monkeypatch, tmp_path):
    """A bon run over HAND_MADE in chunks of 5 candidates, killed while scoring the second: its input and scorer."""
    data = write_jsonl(tmp_path / "bon.jsonl", HAND_MADE)
    crashing = KnownScores(crash_on=2)
    monkeypatch.setattr(bon, "scorer_from_args", lambda args: crashing)
    with pytest.raises(KeyboardInterrupt):
        run_bon(data, tmp_path / "bon.json", "--chunk-size", "5", "--no-plot")
    return data, crashing


def rerun(monkeypatch, data, tmp_path):
    """The same bon run started again: the scorer it used and its result."""
    resumed = KnownScores()
    monkeypatch.setattr(bon, "scorer_from_args", lambda args: resumed)
    return resumed, run_bon(data, tmp_path / "bon.json", "--chunk-size", "5", "--no-plot")


def test_bon_resumes_from_its_prm_cache_without_rescoring(monkeypatch, tmp_path):
    data, crashing = killed_in_second_chunk(monkeypatch, tmp_path)
    assert len(crashing.completions) == 5 and not (tmp_path / "bon.json").exists()

    resumed, result = rerun(monkeypatch, data, tmp_path)
    assert crashing.completions + resumed.completions == [c for i in (0, 2, 6) for c in HAND_MADE[i]["candidates"][:4]]
    assert result["table"] == [pytest.approx(row) for row in HAND_TABLE]
    assert [p["prm_scores"] for p in result["per_problem"]] == HAND_SCORES
    with pytest.raises(ConfigError, match=r"other settings \(parts: 'both' then, 'response' now\)"):
        run_bon(data, tmp_path / "bon.json", "--parts", "response", "--no-plot")


def test_bad_rows_stop_bon_before_judging_with_their_row_numbers(known, tmp_path):
    data = write_jsonl(tmp_path / "bon.jsonl", HAND_MADE)
    with pytest.raises(ConfigError) as error:
        main(["--input", str(data), "--prm", "fake", "--output", str(tmp_path / "b.json"), "--no-plot"])
    assert str(error.value).startswith(
        "3 bad rows: row 3 (line 4): candidate 1 of 'candidates' is a int, not a string | "
        "row 4 (line 5): missing 'solution' | row 5 (line 6): 'candidates' is an empty list"
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


def test_candidates_of_a_prefilling_template_point_to_bons_flag(known, tmp_path, capsys, caplog):
    data = write_jsonl(tmp_path / "bon.jsonl", [HAND_MADE[0]])  # "</think>" without "<think>": a pre-filled template
    run_bon(data, tmp_path / "bon.json", "--no-plot")
    said = capsys.readouterr().err + caplog.text
    assert "pass --thinking-prefilled to score, select and bon" in said
    assert said.count("close a thinking they never opened") == 1

    caplog.clear()
    run_bon(data, tmp_path / "again.json", "--no-plot", "--thinking-prefilled")
    assert "never opened" not in capsys.readouterr().err + caplog.text



ALL_SCORED = [c for i in (0, 2, 6) for c in HAND_MADE[i]["candidates"][:4]]  # the 12 candidates bon scores


def test_bon_cuts_a_torn_cache_line_and_rescores_only_that_candidate(monkeypatch, tmp_path):
    data, _ = killed_in_second_chunk(monkeypatch, tmp_path)
    cache = tmp_path / "bon.prm-cache.jsonl"
    # The kill landed in the middle of writing candidate 5's record.
    with open(cache, "a") as handle:
        handle.write('{"index": 5, "step_scores": [0.')

    resumed, result = rerun(monkeypatch, data, tmp_path)
    assert resumed.completions == ALL_SCORED[5:]  # from the torn one on, each once
    assert [p["prm_scores"] for p in result["per_problem"]] == HAND_SCORES
    assert result["table"] == [pytest.approx(row) for row in HAND_TABLE]
    assert [json.loads(line)["index"] for line in cache.read_text().splitlines()] == list(range(12))


def test_bon_keeps_its_prm_scores_where_cache_says(known, tmp_path):
    data = write_jsonl(tmp_path / "bon.jsonl", HAND_MADE)
    cache = tmp_path / "caches" / "hand.jsonl"  # in a folder that does not exist yet
    result = run_bon(data, tmp_path / "bon.json", "--cache", str(cache), "--no-plot")
    assert result["cache"] == str(cache)
    assert [json.loads(line)["step_scores"][0] for line in cache.read_text().splitlines()] == [
        s for row in HAND_SCORES for s in row]
    assert (tmp_path / "caches" / "hand.jsonl.meta.json").exists()
    assert not (tmp_path / "bon.prm-cache.jsonl").exists()

    # The same --cache from another output: everything is read back, nothing scored.
    again = run_bon(data, tmp_path / "other.json", "--cache", str(cache), "--no-plot")
    assert known.calls == 1 and again["table"] == result["table"]
    # Without --cache the default beside the output is a fresh cache: all twelve are scored again.
    run_bon(data, tmp_path / "third.json", "--no-plot")
    assert known.completions == ALL_SCORED * 2 and (tmp_path / "third.prm-cache.jsonl").exists()


class CountingScorer:
    """The real tiny PRM behind a counter, crashing on its `crash_on`-th call (a killed job)."""

    def __init__(self, scorer, crash_on=None):
        self.scorer, self.crash_on, self.calls, self.completions = scorer, crash_on, 0, []

    def score(self, problems, completions):
        self.calls += 1
        if self.calls == self.crash_on:
            raise KeyboardInterrupt("killed")
        self.completions += completions
        return self.scorer.score(problems, completions)


def test_an_interrupted_policy_run_resumes_from_its_cache(tiny_models, tmp_path, monkeypatch):
    problems = [{"problem": f"{a}+{a}?", "solution": str(2 * a)} for a in (1, 2, 3)]
    data = write_jsonl(tmp_path / "problems.jsonl", problems)
    out = tmp_path / "bon.json"
    command = ["--input", str(data), "--prm", str(tiny_models.prm), "--output", str(out), "--policy",
               str(tiny_models.policy), "--n", "2", "--backend", "transformers", "--max-new-tokens", "6",
               "--workers", "1", "--no-plot", "--no-progress", "--chunk-size", "2"]
    real = bon.scorer_from_args
    scorers = []

    def patched(args):
        scorers.append(CountingScorer(real(args), crash_on=2 if not scorers else None))
        return scorers[-1]

    monkeypatch.setattr(bon, "scorer_from_args", patched)
    with pytest.raises(KeyboardInterrupt):
        main(command)
    saved = [json.loads(line) for line in (tmp_path / "bon.candidates.jsonl").read_text().splitlines()]
    candidates = [c for row in saved for c in row["candidates"]]
    assert scorers[0].completions == candidates[:2] and not out.exists()

    # The same command samples the same candidates (same seed), so the cache of the first run holds for them.
    main(command)
    assert scorers[1].completions == candidates[2:]
    assert [json.loads(line)["index"] for line in (tmp_path / "bon.prm-cache.jsonl").read_text().splitlines()] == [
        0, 1, 2, 3, 4, 5]
    result = json.loads(out.read_text())
    first = load_scorer(tiny_models.prm).score([p["problem"] for p in problems for _ in range(2)], candidates)
    assert [s for p in result["per_problem"] for s in p["prm_scores"]] == pytest.approx(
        [sum(r.step_scores) / len(r.step_scores) for r in first], abs=1e-6)

    # The saved candidates as --input (no --policy) make the same pairs: the same cache, nothing rescored.
    main(["--input", str(tmp_path / "bon.candidates.jsonl"), "--prm", str(tiny_models.prm), "--output", str(out),
          "--workers", "1", "--no-plot", "--no-progress"])
    assert len(scorers) == 2 and json.loads(out.read_text())["table"] == result["table"]
