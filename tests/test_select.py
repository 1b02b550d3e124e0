"""`reasonflux-rl select`: exact top-k with ties by row, resumable cache, bad rows reported, overlap, valid PNG."""

import json
import random
import sys

import pytest
from jsonl_helpers import read_jsonl, write_jsonl
from PIL import Image

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.kinds.step_classifier import StepScorer, StepScores
from reasonflux_rl.rewards.formula import aggregate
from reasonflux_rl.tools import selection as select
from reasonflux_rl.tools.overlap import overlap_coefficient, source_overlap
from reasonflux_rl.tools.selection import main, select_top

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class FakeScorer:
    """A PRM whose step scores are written in the completion: "s=0.5,0.25" scores two steps 0.5 and 0.25."""

    def __init__(self):
        self.calls = []

    def score(self, problems, completions):
        self.calls.append(list(completions))
        out = []
        for completion in completions:
            spec = completion.rsplit("s=", 1)[1] if "s=" in completion else ""
            steps = [float(x) for x in spec.split(",") if x]
            out.append(StepScores(steps, num_steps=len(steps)))
        return out

    @property
    def scored(self):
        return sum(len(call) for call in self.calls)


@pytest.fixture
def fake(monkeypatch):
    scorer = FakeScorer()
    monkeypatch.setattr(select, "scorer_from_args", lambda args: scorer)
    return scorer


def run(tmp_path, input_path, *extra, output="sel.jsonl"):
    out = tmp_path / output
    main(["--input", str(input_path), "--prm", "fake-prm", "--output", str(out), *extra])
    return out


def random_completion(rng):
    words = ["so", "then", "12", "we", "multiply", "3", "4", "check", "wait", "+", "="]
    step = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(2, 12)))
    thinking = "\n\n".join(step() for _ in range(rng.randint(1, 5)))
    return f"<think>\n{thinking}\n</think>\n\nSo $\\boxed{{{rng.randint(1, 20)}}}$."


def tiny_rows(n=12, seed=0):
    rng = random.Random(seed)
    return [
        {"problem": f"What is {i} + {i}?", "completion": random_completion(rng), "model": ["R1", "QwQ"][i % 2]}
        for i in range(n)
    ]


def test_selection_is_exactly_the_top_k_of_the_tiny_prm(tiny_models, tmp_path):
    rows = tiny_rows()
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "sel.jsonl"
    main(["--input", str(data), "--prm", str(tiny_models.prm), "--top-k", "5", "--source-field", "model",
          "--output", str(out), "--chunk-size", "4"])

    scorer = StepScorer.from_pretrained(tiny_models.prm)
    alone = {i: aggregate(scorer.score([r["problem"]], [r["completion"]])[0].step_scores) for i, r in enumerate(rows)}
    expected = sorted(alone, key=lambda i: (-alone[i], i))[:5]
    assert alone[expected[-1]] - alone[sorted(alone, key=lambda i: -alone[i])[5]] > 1e-4  # a clear boundary
    selected = read_jsonl(out)
    assert [r["row_index"] for r in selected] == expected
    for r in selected:
        assert r["prm_score"] == pytest.approx(alone[r["row_index"]], abs=1e-5)
        assert r["problem"] == rows[r["row_index"]]["problem"] and r["model"] == rows[r["row_index"]]["model"]
        assert r["prm_score"] == pytest.approx(sum(r["prm_step_scores"]) / len(r["prm_step_scores"]))

    summary = json.loads((tmp_path / "sel.summary.json").read_text())
    assert summary["rows"] == 12 and summary["scored"] == 12 and summary["bad_rows"] == []
    assert summary["selection"]["selected"] == 5
    assert summary["selection"]["threshold"] == pytest.approx(alone[expected[-1]], abs=1e-5)
    by_source = {s: [alone[i] for i in alone if rows[i]["model"] == s] for s in ("R1", "QwQ")}
    assert summary["overlap"]["value"] == pytest.approx(source_overlap(by_source).value)
    assert sum(s["selected"] for s in summary["sources"].values()) == 5
    png = tmp_path / "sel.scores.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.size[0] > 400 and image.size[1] > 300


def test_ties_go_to_the_earlier_row_and_fraction_floors(fake, tmp_path):
    scores = ["0.5", "0.9", "0.5", "0.7", "0.5", "0.9", "0.1"]
    data = write_jsonl(tmp_path / "d.jsonl", [{"problem": "p", "completion": f"s={s}"} for s in scores])
    out = run(tmp_path, data, "--top-k", "4", "--no-plot")
    # 0.9 at rows 1 and 5, then 0.7 at row 3, then the first of the three 0.5s (rows 0, 2, 4).
    assert [r["row_index"] for r in read_jsonl(out)] == [1, 5, 3, 0]
    out = run(tmp_path, data, "--top-fraction", "0.5", "--no-plot", output="half.jsonl")
    assert [r["row_index"] for r in read_jsonl(out)] == [1, 5, 3]  # floor(0.5 * 7) = 3


def test_aggregation_changes_the_ranking_without_rescoring(fake, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [
        {"problem": "p", "completion": "s=0.9,0.1"},  # mean 0.5, min 0.1
        {"problem": "p", "completion": "s=0.4,0.4"},  # mean 0.4, min 0.4
    ])
    assert [r["row_index"] for r in read_jsonl(run(tmp_path, data, "--top-k", "1", "--no-plot"))] == [0]
    assert fake.scored == 2
    out = run(tmp_path, data, "--top-k", "1", "--no-plot", "--aggregation", "min")
    assert [r["row_index"] for r in read_jsonl(out)] == [1] and read_jsonl(out)[0]["prm_score"] == 0.4
    assert fake.scored == 2  # the step scores came from the cache


def test_balanced_selection_fills_equal_shares_then_spreads_what_a_small_source_leaves():
    scores = {0: 0.9, 1: 0.8, 2: 0.7, 3: 0.6, 4: 0.5, 5: 0.95, 6: 0.4, 7: 0.3, 8: 0.2, 9: 0.1}
    sources = {0: "A", 1: "A", 2: "A", 3: "A", 4: "A", 5: "B", 6: "C", 7: "C", 8: "C", 9: "C"}
    # k=7: shares of 2; B has one row, so the 1 + 2 slots left are shared by A and C: A 3, B 1, C 3.
    assert select_top(scores, 7, sources) == [5, 0, 1, 2, 6, 7, 8]
    # k=4: shares of 1 (A: 0, B: 5, C: 6); the slot left goes to the best next row, A's 1 (0.8) over C's 7 (0.3).
    assert select_top(scores, 4, sources) == [5, 0, 1, 6]
    assert select_top(scores, 4) == [5, 0, 1, 2]


def test_balanced_selection_from_the_command_line(fake, tmp_path):
    rows = [{"problem": "p", "completion": f"s={s}", "m": m} for s, m in
            [(0.9, "A"), (0.8, "A"), (0.7, "A"), (0.2, "B"), (0.1, "B")]]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = run(tmp_path, data, "--top-k", "4", "--source-field", "m", "--balance-sources")
    assert [r["row_index"] for r in read_jsonl(out)] == [0, 1, 3, 4]
    summary = json.loads((tmp_path / "sel.summary.json").read_text())
    assert summary["sources"]["A"]["threshold"] == 0.8 and summary["sources"]["B"]["threshold"] == 0.1
    # 10 bins: A's scores fall in bins 9, 8, 7; B's in 2, 1: no shared bin.
    assert summary["overlap"]["value"] == 0.0 and summary["overlap"]["pairs"] == {"A | B": 0.0}


def test_overlap_coefficient_on_hand_made_distributions():
    a = [0.05, 0.05, 0.55, 0.55]  # bins 0 and 5 of 10, half each
    b = [0.55, 0.55, 0.55, 0.95]  # bin 5: 3/4, bin 9: 1/4
    c = [0.95, 0.95]  # bin 9 only
    assert overlap_coefficient(a, b, bins=10) == pytest.approx(0.5)  # min(1/2, 3/4)
    assert overlap_coefficient(b, c, bins=10) == pytest.approx(0.25)  # min(1/4, 1)
    assert overlap_coefficient(a, c, bins=10) == 0.0
    assert overlap_coefficient(a, list(reversed(a)), bins=10) == pytest.approx(1.0)
    both = source_overlap({"a": a, "b": b, "c": c}, bins=10)
    assert both.value == pytest.approx((0.5 + 0.25 + 0.0) / 3)
    assert set(both.pairs) == {"a | b", "a | c", "b | c"}
    wide = source_overlap({"a": [0.0, 1.5], "b": [1.5]}, bins=3)  # scores past 1 widen the bins to [0, 1.5]
    assert wide.bounds == (0.0, 1.5) and wide.value == pytest.approx(0.5)


class SimulatedCrash(BaseException):
    pass


class CrashingScorer:
    """Passes calls to a real scorer and dies on call number `crash_on` (counting from 1)."""

    def __init__(self, scorer, crash_on=None):
        self.scorer, self.crash_on, self.completions = scorer, crash_on, []

    def score(self, problems, completions):
        if self.crash_on is not None and len(self.completions) + 1 == self.crash_on:
            raise SimulatedCrash
        self.completions.append(list(completions))
        return self.scorer.score(problems, completions)


def test_resume_after_a_crash_gives_the_uninterrupted_output(tiny_models, tmp_path, monkeypatch):
    rows = tiny_rows(n=11, seed=1)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    real = StepScorer.from_pretrained(tiny_models.prm)
    args = ["--input", str(data), "--prm", str(tiny_models.prm), "--top-k", "6", "--chunk-size", "3", "--no-plot"]

    clean_dir, crash_dir = tmp_path / "clean", tmp_path / "crash"
    monkeypatch.setattr(select, "scorer_from_args", lambda a: CrashingScorer(real))
    main(args + ["--output", str(clean_dir / "sel.jsonl")])

    crashing = CrashingScorer(real, crash_on=3)
    monkeypatch.setattr(select, "scorer_from_args", lambda a: crashing)
    with pytest.raises(SimulatedCrash):
        main(args + ["--output", str(crash_dir / "sel.jsonl")])
    # No output, no temporary file: the cache and its settings only.
    assert sorted(p.name for p in crash_dir.iterdir()) == ["sel.prm-cache.jsonl", "sel.prm-cache.jsonl.meta.json"]
    cache = crash_dir / "sel.prm-cache.jsonl"
    assert [json.loads(line)["index"] for line in cache.read_text().splitlines()] == [0, 1, 2, 3, 4, 5]
    with open(cache, "a") as handle:
        handle.write('{"index": 6, "step_scores": [0.1')  # killed mid-write

    resumed = CrashingScorer(real)
    monkeypatch.setattr(select, "scorer_from_args", lambda a: resumed)
    main(args + ["--output", str(crash_dir / "sel.jsonl")])
    assert [c for call in resumed.completions for c in call] == [r["completion"] for r in rows[6:]]
    assert (crash_dir / "sel.jsonl").read_bytes() == (clean_dir / "sel.jsonl").read_bytes()
    cached_rows = [json.loads(line)["index"] for line in cache.read_text().splitlines()]
    assert cached_rows == list(range(11))  # each row once, the torn line gone


def test_a_cache_from_other_settings_or_another_input_is_refused(fake, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"problem": "p", "completion": f"s=0.{i}"} for i in range(1, 4)])
    run(tmp_path, data, "--top-k", "1", "--no-plot")
    with pytest.raises(ConfigError, match=r"written with other settings \(parts: 'both' then, 'thinking' now\)"):
        run(tmp_path, data, "--top-k", "1", "--no-plot", "--parts", "thinking")
    write_jsonl(data, [{"problem": "p", "completion": f"s=0.{i}"} for i in range(2, 5)])
    with pytest.raises(ConfigError, match="an input whose rows have changed"):
        run(tmp_path, data, "--top-k", "1", "--no-plot")
    assert fake.scored == 3  # refused before any scoring


BAD_ROWS = [
    {"problem": "ok", "completion": "s=0.5", "src": "A"},  # row 0
    {"completion": "s=0.5", "src": "A"},  # row 1: missing problem
    {"problem": "p", "completion": 42, "src": "A"},  # row 2: non-string completion
    {"problem": "p", "completion": "   ", "src": "B"},  # row 3: empty completion
    '{"problem": "p", "completion": ',  # row 4: torn JSON
    "",  # a blank line is not a row
    "[1, 2]",  # row 5: not an object
    {"problem": "p", "completion": "s=0.7", "src": ["A"]},  # row 6: list source
    {"problem": "p", "completion": "no scores"},  # row 7: missing source
    {"problem": "p", "completion": "s=", "src": "B"},  # row 8: the PRM scores no step
    {"problem": "ok too", "completion": "s=0.6", "src": "B"},  # row 9
]


def test_bad_rows_stop_the_run_with_their_row_numbers(fake, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", BAD_ROWS)
    with pytest.raises(ConfigError) as error:
        run(tmp_path, data, "--top-k", "1", "--source-field", "src", "--no-plot")
    message = str(error.value)
    assert message.startswith("7 bad rows: row 1 (line 2): missing 'problem' | row 2 (line 3): 'completion' is a int")
    for row, line in ((3, 4), (4, 5), (5, 7), (6, 8), (7, 9)):
        assert f"row {row} (line {line}): " in message
    assert "row 4 (line 5): not valid JSON" in message and "--on-bad-row skip" in message
    assert fake.scored == 0


def test_skipped_bad_rows_are_all_reported_and_none_is_selected(fake, tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", BAD_ROWS)
    out = run(tmp_path, data, "--top-k", "5", "--source-field", "src", "--on-bad-row", "skip", "--no-plot")
    summary = json.loads((tmp_path / "sel.summary.json").read_text())
    assert [b["row"] for b in summary["bad_rows"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert summary["bad_rows"][-1]["reason"] == "the PRM scored none of its 0 steps"
    assert summary["rows"] == 10 == summary["scored"] + len(summary["bad_rows"])
    assert [r["row_index"] for r in read_jsonl(out)] == [9, 0]
    assert "skipping 7 bad rows" in capsys.readouterr().err


def test_separate_thinking_and_response_fields_reach_the_scorer_joined(fake, tmp_path):
    rows = [
        {"q": "1+1?", "trace": "Add.\n\nIt is 2.", "answer": "s=0.5"},
        {"q": "1+1?", "trace": "", "answer": "s=0.25"},
        {"q": "1+1?", "trace": "", "answer": " "},  # row 2: nothing to score
        {"q": "1+1?", "trace": "x", "answer": "</think> s=0.5"},  # row 3: would be split at the wrong place
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = run(tmp_path, data, "--top-k", "2", "--problem-field", "q", "--thinking-field", "trace",
              "--response-field", "answer", "--on-bad-row", "skip", "--no-plot")
    assert fake.calls == [["Add.\n\nIt is 2.\n</think>\n\ns=0.5", "\n</think>\n\ns=0.25"]]
    assert [r["row_index"] for r in read_jsonl(out)] == [0, 1]
    bad = json.loads((tmp_path / "sel.summary.json").read_text())["bad_rows"]
    assert [b["row"] for b in bad] == [2, 3] and "contains '</think>'" in bad[1]["reason"]


def test_a_misspelt_field_or_a_clashing_column_is_refused_before_work(fake, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"question": "p", "completion": "s=0.5"}])
    with pytest.raises(ConfigError, match="field 'problem' is in no input row"):
        run(tmp_path, data, "--top-k", "1", "--no-plot")
    data = write_jsonl(tmp_path / "d.jsonl", [{"problem": "p", "completion": "s=0.5", "prm_score": 1}])
    with pytest.raises(ConfigError, match=r"already has column\(s\) \['prm_score'\]"):
        run(tmp_path, data, "--top-k", "1", "--no-plot")


@pytest.mark.parametrize("output", ["sel.parquet", "sel_dir"])
def test_parquet_and_save_to_disk_outputs_hold_the_jsonl_rows(fake, tmp_path, output):
    from datasets import load_dataset, load_from_disk

    rows = [{"problem": f"p{i}", "completion": f"s=0.{i}", "n": i} for i in range(1, 6)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    expected = read_jsonl(run(tmp_path, data, "--top-k", "3", "--no-plot"))
    out = run(tmp_path, data, "--top-k", "3", "--no-plot", output=output)
    out = run(tmp_path, data, "--top-k", "2", "--no-plot", output=output)  # replaces the previous output
    table = load_dataset("parquet", data_files=str(out), split="train") if out.suffix else load_from_disk(str(out))
    assert table.to_list() == expected[:2]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_a_missing_matplotlib_stops_the_run_before_scoring(fake, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # what an uninstalled package looks like to import
    data = write_jsonl(tmp_path / "d.jsonl", [{"problem": "p", "completion": "s=0.5"}])
    with pytest.raises(ConfigError, match=r'pip install "reasonflux-rl\[plots\]"'):
        run(tmp_path, data, "--top-k", "1")
    assert fake.scored == 0
    run(tmp_path, data, "--top-k", "1", "--no-plot")  # --no-plot needs no matplotlib
    assert fake.scored == 1


@pytest.mark.parametrize("kind", ["parquet", "save_to_disk"])
def test_parquet_and_saved_dataset_inputs_report_null_values_as_bad_rows(fake, tmp_path, kind):
    from datasets import Dataset, load_from_disk

    table = Dataset.from_list([
        {"problem": "a", "completion": "s=0.2", "m": 1},
        {"problem": "b", "completion": None, "m": 2},  # row 1: a null in a string column
        {"problem": "c", "completion": "s=0.9", "m": 3},
    ])
    data = tmp_path / "d.parquet" if kind == "parquet" else tmp_path / "saved"
    table.to_parquet(str(data)) if kind == "parquet" else table.save_to_disk(str(data))
    out = run(tmp_path, data, "--top-k", "1", "--source-field", "m", "--on-bad-row", "skip", "--no-plot",
              output="sel_dir")
    selected = load_from_disk(str(out))
    assert selected.to_list()[0] | {"prm_step_scores": None} == {
        "problem": "c", "completion": "s=0.9", "m": 3, "row_index": 2, "prm_score": 0.9, "prm_step_scores": None,
        "prm_num_steps": 1, "prm_dropped_steps": 0,
    }
    assert selected.features["m"] == table.features["m"]  # the input's column types are kept
    summary = json.loads((tmp_path / "sel_dir.summary.json").read_text())
    assert summary["bad_rows"] == [{"row": 1, "reason": "missing 'completion'", "line": None}]
    assert sorted(summary["sources"]) == ["1", "3"]  # integer sources become labels


def test_a_non_finite_score_is_a_bad_row_never_selected(fake, tmp_path):
    rows = [{"problem": "p", "completion": f"s={s}"} for s in ("nan", "0.8", "inf", "0.5", "0.9,nan")]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(ConfigError, match=r"^3 bad rows: row 0 \(line 1\): the PRM gave a non-finite score \| row 2 "
                                          r"\(line 3\): .* \| row 4 .*after scoring; the scores are cached in "):
        run(tmp_path, data, "--top-k", "1", "--no-plot")
    out = run(tmp_path, data, "--top-k", "1", "--aggregation", "min", "--no-plot", "--on-bad-row", "skip")
    assert [r["row_index"] for r in read_jsonl(out)] == [1]
    summary = json.loads((tmp_path / "sel.summary.json").read_text())
    assert [(b["row"], b["reason"]) for b in summary["bad_rows"]] == [
        (row, "the PRM gave a non-finite score") for row in (0, 2, 4)
    ]
    assert summary["scored"] == 2 and fake.scored == 5
    for line in (tmp_path / "sel.prm-cache.jsonl").read_text().splitlines():  # strict JSON: no NaN in the cache
        json.loads(line, parse_constant=pytest.fail)


@pytest.mark.parametrize(
    "option,change",
    [
        (["--kind", "step_classifier"], "kind: 'auto' then, 'step_classifier' now"),
        (["--dtype", "float64"], "dtype: '\\w+' then, 'float64' now"),
        (["--system-prompt", ""], "system_prompt: 'Please reason .*' then, None now"),
        (["--step-tag", "<x>"], "step_tag: None then, '<x>' now"),
        (["--truncation", "windows"], "truncation: 'drop_oldest' then, 'windows' now"),
        (["--window-overlap", "8"], "window_overlap: None then, 8 now"),
        (["--max-length", "64"], "max_length: None then, 64 now"),
        (["--max-steps", "3"], "max_steps: None then, 3 now"),
        (["--trajectory-prm", "vh"], "trajectory_prm: None then, 'vh' now"),
    ],
)
def test_every_setting_that_changes_a_score_guards_the_cache(fake, tmp_path, option, change):
    data = write_jsonl(tmp_path / "d.jsonl", [{"problem": "p", "completion": f"s=0.{i}"} for i in range(1, 4)])
    run(tmp_path, data, "--top-k", "1", "--no-plot")
    with pytest.raises(ConfigError, match=rf"written with other settings \({change}\); rerun with the same"):
        run(tmp_path, data, "--top-k", "1", "--no-plot", *option)
    # What only changes where and how fast the PRM runs, or how its step scores are combined, reuses the cache.
    run(tmp_path, data, "--top-k", "1", "--no-plot", "--batch-tokens", "128", "--chunk-size", "1", "--alpha", "0.5")
    assert fake.scored == 3


def test_a_parquet_output_that_cannot_hold_the_rows_points_to_jsonl_and_keeps_the_scores(fake, tmp_path):
    rows = [{"problem": "p", "completion": "s=0.9", "meta": 1}, {"problem": "p", "completion": "s=0.8", "meta": "x"}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(ConfigError, match=r"cannot write '.*sel\.parquet' as parquet: .*; write a \.jsonl output "
                                          r"instead \(the scores are cached in .*sel\.prm-cache\.jsonl"):
        run(tmp_path, data, "--top-k", "2", "--no-plot", output="sel.parquet")
    out = run(tmp_path, data, "--top-k", "2", "--no-plot", output="sel.jsonl")  # the same cache
    assert [r["meta"] for r in read_jsonl(out)] == [1, "x"] and fake.scored == 2


@pytest.mark.parametrize("output", ["sel.parquet", "sel_dir"])
def test_a_column_only_later_rows_have_reaches_parquet_and_saved_outputs(fake, tmp_path, output):
    from datasets import load_dataset, load_from_disk

    rows = [{"problem": "p", "completion": "s=0.9"}, {"problem": "q", "completion": "s=0.8", "note": "late"}]
    out = run(tmp_path, write_jsonl(tmp_path / "d.jsonl", rows), "--top-k", "2", "--no-plot", output=output)
    table = load_dataset("parquet", data_files=str(out), split="train") if out.suffix else load_from_disk(str(out))
    assert table.column_names[:3] == ["problem", "completion", "row_index"] and table["note"] == [None, "late"]
