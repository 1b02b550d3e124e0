"""`reasonflux-rl score`: scores equal the scorer's, bad rows are named, and an interrupted run resumes to exactly
the output of an uninterrupted one."""

import json
import random
import re

import pytest
from test_prm_scorer import PROBLEM, random_completion

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm import StepScores, load_scorer
from reasonflux_rl.prm.options import scorer_from_args
from reasonflux_rl.rewards.formula import trajectory_reward
from reasonflux_rl.tiny import TINY_TOKEN_LOGIT_TOKENS, write_tiny_token_logit, write_tiny_value_head
from reasonflux_rl.tools import score as score_cli

FLOAT_FIELDS = ("score", "step_scores", "trajectory_score", "dropped_fraction")


@pytest.fixture(scope="module")
def rows():
    rng = random.Random(7)
    return [{"id": f"r{i}", "question": f"{PROBLEM} ({i})", "answer": random_completion(rng, rng.randint(1, 9), 1)}
            for i in range(10)]


@pytest.fixture
def input_file(tmp_path, rows):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(prm, input_file, output, *extra):
    score_cli.main(["--prm", str(prm), "--input", str(input_file), "--output", str(output), "--problem-field",
                    "question", "--completion-field", "answer", "--keep-fields", "id", *extra])
    return [json.loads(line) for line in output.read_text().splitlines()]


def assert_same_rows(a, b):
    assert [r["index"] for r in a] == [r["index"] for r in b]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k not in FLOAT_FIELDS} == {k: v for k, v in y.items()
                                                                          if k not in FLOAT_FIELDS}
        assert x["score"] == pytest.approx(y["score"], abs=1e-6)
        assert x["step_scores"] == pytest.approx(y["step_scores"], abs=1e-6)


def test_output_rows_hold_the_scorers_scores_in_input_order(tiny_models, input_file, tmp_path, rows):
    out = run(tiny_models.prm, input_file, tmp_path / "out.jsonl", "--aggregation", "min", "--chunk-size", "4",
              "--batch-tokens", "1024")
    expected = load_scorer(tiny_models.prm).score([r["question"] for r in rows], [r["answer"] for r in rows])
    assert [r["index"] for r in out] == list(range(10)) and [r["id"] for r in out] == [r["id"] for r in rows]
    for row, result in zip(out, expected):
        assert row["step_scores"] == pytest.approx(result.step_scores, abs=1e-6)
        assert row["score"] == pytest.approx(min(result.step_scores), abs=1e-6)
        assert row["num_steps"] == result.num_steps and row["dropped_steps"] == 0
        assert row["step_indices"] == list(range(result.num_steps))
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text())["settings"]
    assert meta["aggregation"] == "min" and meta["prm"] == str(tiny_models.prm.resolve())


class CrashAfter:
    """Wraps a scorer: counts the rows it scores and raises on its `crash_at`-th call (a killed job)."""

    def __init__(self, scorer, crash_at=None):
        self.scorer, self.crash_at, self.calls, self.rows = scorer, crash_at, 0, 0

    def score(self, problems, completions):
        self.calls += 1
        if self.calls == self.crash_at:
            raise KeyboardInterrupt("killed")
        self.rows += len(problems)
        return self.scorer.score(problems, completions)


def test_interrupted_run_resumes_without_rescoring_or_losing_rows(tiny_models, input_file, tmp_path, monkeypatch):
    reference = run(tiny_models.prm, input_file, tmp_path / "whole.jsonl", "--chunk-size", "3", "--no-progress")

    wrappers = []

    def patched(args):
        wrappers.append(CrashAfter(scorer_from_args(args), crash_at=3 if not wrappers else None))
        return wrappers[-1]

    monkeypatch.setattr(score_cli, "scorer_from_args", patched)
    output = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run(tiny_models.prm, input_file, output, "--chunk-size", "3", "--no-progress")
    assert [json.loads(line)["index"] for line in output.read_text().splitlines()] == list(range(6))
    with open(output, "a") as handle:  # the kill landed in the middle of writing row 6
        handle.write('{"index": 6, "id": "r6", "score": 0.4')

    resumed = run(tiny_models.prm, input_file, output, "--chunk-size", "3")
    assert wrappers[1].rows == 4  # rows 6..9 only
    assert_same_rows(resumed, reference)

    # Run again: nothing left to do, nothing appended, no model loaded.
    run(tiny_models.prm, input_file, output, "--chunk-size", "3")
    assert len(wrappers) == 2 and len(output.read_text().splitlines()) == 10


def test_resume_with_other_settings_is_refused(tiny_models, input_file, tmp_path):
    output = tmp_path / "out.jsonl"
    run(tiny_models.prm, input_file, output, "--no-progress")
    with pytest.raises(ConfigError, match=r"written with other settings \(truncation: 'drop_oldest' then, 'windows' "
                                          r"now\)"):
        run(tiny_models.prm, input_file, output, "--truncation", "windows")


@pytest.mark.parametrize(
    "line,message",
    [('{"question": "1+1?"}', r"^1 bad row: row 2 \(line 4\): missing 'answer' \(before scoring"),
     ('{"question": "1+1?", "answer": 2}', r"^1 bad row: row 2 \(line 4\): 'answer' is a int, not a string"),
     ('{"question": "1+1?", "answer": "  "}', r"^1 bad row: row 2 \(line 4\): 'answer' is empty"),
     ('{"question": "1+1?", "answer": "2"', r"^1 bad row: row 2 \(line 4\): not valid JSON")],
)
def test_bad_row_is_named_before_anything_loads(tmp_path, line, message):
    path = tmp_path / "in.jsonl"
    good = '{"question": "a", "answer": "b", "id": "x"}\n'
    path.write_text(good + "\n" + good + line + "\n")
    with pytest.raises(ConfigError, match=message):
        run(tmp_path / "no-such-prm", path, tmp_path / "out.jsonl")


def test_skip_bad_rows_writes_them_with_their_error_and_reports_them(tiny_models, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    good = {"question": "1+1?", "answer": "1+1=2.\n\nSo 2.", "id": "g"}
    path.write_text("\n".join([json.dumps(good), '{"question": "x"}', json.dumps(good)]) + "\n")
    out = run(tiny_models.prm, path, tmp_path / "out.jsonl", "--on-bad-row", "skip", "--no-progress")
    assert [r["index"] for r in out] == [0, 1, 2]
    assert out[1] == {"index": 1, "error": "missing 'answer'"}
    assert len(out[0]["step_scores"]) == 2 and out[0]["step_scores"] == out[2]["step_scores"]
    assert "skipping 1 bad row: row 1 (line 2): missing 'answer'" in capsys.readouterr().err


def test_value_head_and_token_logit_through_the_cli(tiny_models, input_file, tmp_path, rows):
    value_head = write_tiny_value_head(tmp_path / "vh")
    out = run(value_head, input_file, tmp_path / "vh.jsonl", "--no-progress", "--max-length", "48")
    assert all(r["score"] == r["trajectory_score"] is not None and r["step_scores"] == [] for r in out)
    assert any(r["dropped_tokens"] > 0 for r in out)

    combined = run(tiny_models.prm, input_file, tmp_path / "both.jsonl", "--no-progress", "--trajectory-prm",
                   str(value_head), "--alpha", "0.5")
    for row in combined:
        assert row["score"] == pytest.approx(trajectory_reward(row["step_scores"], row["trajectory_score"], "mean",
                                                               0.5))
        assert row["trajectory_score"] is not None and row["step_scores"]

    token_logit = write_tiny_token_logit(tmp_path / "tl")
    tokens = TINY_TOKEN_LOGIT_TOKENS
    out = run(token_logit, input_file, tmp_path / "tl.jsonl", "--no-progress", "--kind", "token_logit",
              "--step-tag", tokens["step_tag"], "--good-token", tokens["good_token"], "--bad-token",
              tokens["bad_token"], "--truncation", "windows", "--max-length", "128")
    assert all(r["dropped_steps"] == 0 and r["step_indices"] == list(range(r["num_steps"])) for r in out)


def test_a_non_finite_score_is_an_error_in_strict_json_not_a_score(tmp_path, monkeypatch, capsys):
    class ScoreInText:  # the completion is its one step's score
        def score(self, problems, completions):
            return [StepScores([float(c)], num_steps=1, step_indices=[0]) for c in completions]

    monkeypatch.setattr(score_cli, "scorer_from_args", lambda args: ScoreInText())
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"question": "q", "answer": a, "id": a}) + "\n" for a in ("0.5", "nan", "-inf")))
    out = run("fake-prm", path, tmp_path / "out.jsonl", "--no-progress")
    for line in (tmp_path / "out.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=pytest.fail)
    assert [(r["score"], r["step_scores"], r.get("error")) for r in out] == [
        (0.5, [0.5], None), (None, [None], "the PRM gave a non-finite score"),
        (None, [None], "the PRM gave a non-finite score"),
    ]
    assert "no score for 2 bad rows: row 1 (line 2): the PRM gave a non-finite score | row 2 (line 3)" in (
        capsys.readouterr().err
    )


def test_success_prints_a_one_line_summary(tiny_models, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    good = {"question": "1+1?", "answer": "1+1=2.\n\nSo 2.", "id": "g"}
    path.write_text("\n".join([json.dumps(good), '{"question": "x"}', json.dumps(good)]) + "\n")
    output = tmp_path / "out.jsonl"
    run(tiny_models.prm, path, output, "--on-bad-row", "skip", "--no-progress")
    out = capsys.readouterr().out
    assert re.fullmatch(rf"scored 2 of 3 rows \(1 bad\) in \d+\.\d s; output: {re.escape(str(output))}\n", out)
    run(tiny_models.prm, path, output, "--on-bad-row", "skip", "--no-progress")  # all three already stored
    assert "(1 bad; 3 already stored) in " in capsys.readouterr().out


def test_a_bad_row_stops_the_run_saying_that_nothing_was_written(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2", "id": "a"}\n{"question": "1+1?", "id": "b"}\n')
    with pytest.raises(ConfigError) as error:
        run(tmp_path / "no-such-prm", path, tmp_path / "out.jsonl")
    message = str(error.value)
    assert "row 1 (line 2): missing 'answer' (before scoring, so nothing was written; pass --on-bad-row skip" in message
    assert "written with an 'error' field" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_a_failed_load_leaves_no_output_and_a_killed_run_says_what_it_left(tiny_models, input_file, tmp_path,
                                                                          monkeypatch, capsys):
    with pytest.raises(ConfigError, match="is not a local directory"):
        run(tmp_path / "no-such-prm", input_file, tmp_path / "new" / "out.jsonl", "--no-progress")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # neither the output, its settings nor new/

    output = tmp_path / "out.jsonl"

    monkeypatch.setattr(score_cli, "scorer_from_args", lambda args: CrashAfter(scorer_from_args(args), crash_at=3))
    with pytest.raises(KeyboardInterrupt):
        run(tiny_models.prm, input_file, output, "--chunk-size", "3", "--no-progress")
    err = capsys.readouterr().err
    assert f"6 of 10 rows are stored in {output}; run the same command again to resume after them" in err
    assert len(output.read_text().splitlines()) == 6


def _lines(path):
    return path.read_text().splitlines(keepends=True)


def duplicate_row(output, meta, input_file):
    output.write_text("".join(_lines(output) + [_lines(output)[3]]))


def corrupt_middle_line(output, meta, input_file):
    lines = _lines(output)
    lines[4] = '{"index": 4, "score": 0.5, "step_sc\n'  # complete (it ends in a newline), so not a torn tail
    output.write_text("".join(lines))


def middle_line_without_index(output, meta, input_file):
    lines = _lines(output)
    lines[4] = '{"row": 4, "score": 0.5}\n'
    output.write_text("".join(lines))


def middle_line_with_a_text_index(output, meta, input_file):
    lines = _lines(output)
    lines[4] = lines[4].replace('"index": 4', '"index": "4"')
    output.write_text("".join(lines))


def middle_line_with_a_boolean_index(output, meta, input_file):
    lines = _lines(output)
    lines[4] = lines[4].replace('"index": 4', '"index": true')  # JSON true is no row index, though bool is an int
    output.write_text("".join(lines))


def corrupt_middle_line_and_torn_tail(output, meta, input_file):
    corrupt_middle_line(output, meta, input_file)
    with open(output, "a") as handle:
        handle.write('{"index": 99, "sco')  # refused for its middle line, the torn tail must stay too


def delete_meta(output, meta, input_file):
    meta.unlink()


def older_version(output, meta, input_file):
    stored = json.loads(meta.read_text())
    meta.write_text(json.dumps({**stored, "version": 1}))


def meta_not_json(output, meta, input_file):
    meta.write_text('{"version": 2, "settings"')


def edit_input_row(output, meta, input_file):
    lines = _lines(input_file)
    lines[2] = lines[2].replace("(2)", "(two)")
    input_file.write_text("".join(lines))


@pytest.mark.parametrize(
    "damage,message",
    [
        (duplicate_row, r"out\.jsonl holds row index 3 twice \(line 11\); delete it to rescore"),
        (corrupt_middle_line, r"out\.jsonl line 5 is not a stored row \(.*\); delete it to rescore"),
        (middle_line_without_index, r"out\.jsonl line 5 is not a stored row \('index'\)"),
        (middle_line_with_a_text_index, r"out\.jsonl line 5 is not a stored row \(index '4' is not an integer\)"),
        (middle_line_with_a_boolean_index, r"out\.jsonl line 5 is not a stored row \(index True is not an integer\)"),
        (corrupt_middle_line_and_torn_tail, r"out\.jsonl line 5 is not a stored row"),
        (delete_meta, r"out\.jsonl exists but out\.jsonl\.meta\.json does not: cannot tell which settings wrote it"),
        (older_version, r"written with other settings \(store version: 1 then, 2 now\)"),
        (meta_not_json, r"out\.jsonl\.meta\.json is not a settings file written by reasonflux-rl"),
        (edit_input_row, r"written with an input whose rows have changed since"),
    ],
)
def test_a_store_that_cannot_be_trusted_is_refused_and_left_as_it_is(tiny_models, input_file, tmp_path, monkeypatch,
                                                                      damage, message):
    output, meta = tmp_path / "out.jsonl", tmp_path / "out.jsonl.meta.json"
    run(tiny_models.prm, input_file, output, "--no-progress")
    damage(output, meta, input_file)
    before = {path: path.read_bytes() for path in (output, meta) if path.exists()}
    # Refused before any model loads: resuming from it would mix rows of two runs, or score some twice.
    monkeypatch.setattr(score_cli, "scorer_from_args", lambda args: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError, match=message):
        run(tiny_models.prm, input_file, output, "--no-progress")
    # Neither rewritten nor deleted: whoever made it decides (the message says to delete it to rescore).
    assert {path: path.read_bytes() for path in (output, meta) if path.exists()} == before


def test_a_store_whose_only_line_is_torn_starts_over(tiny_models, input_file, tmp_path):
    output = tmp_path / "out.jsonl"
    reference = run(tiny_models.prm, input_file, tmp_path / "whole.jsonl", "--no-progress")
    # Killed while writing the first chunk, before its settings file was even there to compare: nothing is stored,
    # so there is nothing to trust or refuse.
    output.write_text('{"index": 0, "id": "r0", "sco')
    assert_same_rows(run(tiny_models.prm, input_file, output, "--no-progress"), reference)
    assert json.loads((tmp_path / "out.jsonl.meta.json").read_text())["version"] == 2
