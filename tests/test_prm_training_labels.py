"""prm label: the layouts it reads, the targets of each method against hand-computed ones, its bad rows, the cost
line, and a killed run that resumes to the same labels."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm_training import label_command
from reasonflux_rl.prm_training.fields import LabelledPair, TrajectoryFields, detect_fields, labelled_pair
from reasonflux_rl.prm_training.labels import PolicyCompleter, judged_text, mc_targets, step_prefixes

THINKING = "Try 1+1=3.\n\nWait, 1+1=2."
RESPONSE = "1+1=2, so \\boxed{2}."
COMPLETION = f"{THINKING}\n</think>\n\n{RESPONSE}"


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_label(*args: str, capsys=None):
    label_command.main([*args, "--no_progress", "true", "--outcome_num_workers", "1"])
    return capsys.readouterr() if capsys else None


def read_output(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ layouts


def test_openthoughts_metadata_layout_is_read_without_flags():
    row = {"problem": "1+1?", "deepseek_reasoning": THINKING, "deepseek_solution": RESPONSE,
           "ground_truth_solution": "The sum is $\\boxed{2}$.", "domain": "math", "source": "x"}
    fields = detect_fields(row)
    pair = labelled_pair(4, row, fields)
    assert (fields.thinking, fields.response, fields.gold) == ("deepseek_reasoning", "deepseek_solution",
                                                               "ground_truth_solution")
    # The scorer's steps: the thinking's paragraphs, then the response's.
    assert pair.steps == ("Try 1+1=3.", "Wait, 1+1=2.", RESPONSE)
    assert pair.completion == COMPLETION and pair.gold == "The sum is $\\boxed{2}$."


def test_trl_stepwise_layout_joins_the_steps_into_a_response_and_reads_the_bool_labels():
    row = {"prompt": "1+1?", "completions": ["1+1=3.", "No: 1+1=2."], "labels": [False, True]}
    pair = labelled_pair(0, row, detect_fields(row, step_targets="auto"))
    assert pair.problem == "1+1?" and pair.steps == ("1+1=3.", "No: 1+1=2.")
    assert pair.step_targets == (0.0, 1.0)


def test_named_fields_win_and_an_unknown_layout_is_a_clear_error():
    fields = detect_fields(["q", "trace", "answer_text", "gold"], problem="q", thinking="trace",
                           response="answer_text", gold="gold")
    assert fields.text_fields() == ("q", "trace", "answer_text")
    with pytest.raises(ConfigError, match="cannot tell which fields hold the trajectory"):
        detect_fields(["question", "text"])
    with pytest.raises(ConfigError, match="no step targets in the input"):
        detect_fields(["problem", "completion"], step_targets="auto")


@pytest.mark.parametrize("targets,reason", [
    ([1.0, 0.0], "'labels' has 2 targets for 3 steps"),
    ([1.0, float("nan"), 0.0], "'labels' step 1 is NaN"),
    ([1.0, 1.5, 0.0], "'labels' step 1 is 1.5, outside [0, 1]"),
    ([1.0, "yes", 0.0], "'labels' step 1 is a str, not a number"),
    ("1, 0, 1", "'labels' is a str, not a list of step targets"),
])
def test_step_targets_that_do_not_fit_the_steps_make_a_bad_row(targets, reason):
    fields = TrajectoryFields(completion="completion", step_targets="labels")
    result = labelled_pair(0, {"problem": "1+1?", "completion": COMPLETION, "labels": targets}, fields)
    assert isinstance(result, str) and reason in result


def test_a_null_step_target_is_no_target_and_a_missing_gold_is_named_where_it_is_needed():
    fields = TrajectoryFields(completion="completion", step_targets="labels", gold="solution")
    pair = labelled_pair(0, {"problem": "1+1?", "completion": COMPLETION, "labels": [None, 1, 1]}, fields)
    assert pair.step_targets == (None, 1.0, 1.0)
    missing = labelled_pair(0, {"problem": "1+1?", "completion": COMPLETION, "labels": [1, 1, 1]}, fields,
                            need_gold=True)
    assert missing == "no gold answer in 'solution'"


# --------------------------------------------------------------------------------------------------- mc


class FixedCompleter:
    """Continuations fixed per prefix: the k-th prefix (in call order) gets ``answers[k]`` as boxed answers."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def continuations(self, problems, prefixes, n):
        self.calls.append((list(problems), list(prefixes), n))
        return [[f"\n</think>\n\n\\boxed{{{a}}}" for a in answers[:n]] for answers in self.answers[: len(prefixes)]]


def boxed_judge(texts, golds):
    return [float(t.rstrip().endswith(f"\\boxed{{{g}}}")) for t, g in zip(texts, golds)]


def test_mc_targets_are_the_fraction_of_right_continuations_from_each_prefix():
    pair = labelled_pair(0, {"problem": "1+1?", "completion": COMPLETION, "solution": "2"},
                         TrajectoryFields(completion="completion", gold="solution"))
    completer = FixedCompleter([[3, 3, 2, 3], [2, 2, 2, 3]])
    # Three steps: two prefixes get rollouts (1/4 and 3/4 right); the last step is the row's own outcome.
    assert mc_targets([pair], [1.0], completer, boxed_judge, rollouts=4) == [[0.25, 0.75, 1.0]]
    assert mc_targets([pair], [0.0], completer, boxed_judge, rollouts=4, hard=True) == [[1.0, 1.0, 0.0]]
    problems, prefixes, n = completer.calls[0]
    assert prefixes == ["Try 1+1=3.\n\n", "Try 1+1=3.\n\nWait, 1+1=2.\n\n"] and problems == ["1+1?"] * 2 and n == 4


def test_mc_with_parts_response_continues_only_inside_the_response():
    completion = f"{THINKING}\n</think>\n\nSo 1+1=2.\n\nThus \\boxed{{2}}."
    pair = LabelledPair(0, "1+1?", completion, steps=("So 1+1=2.", "Thus \\boxed{2}."), gold="2")
    [prefix] = step_prefixes(pair, parts="response")
    assert prefix.text == f"{THINKING}\n</think>\n\nSo 1+1=2.\n\n"
    assert mc_targets([pair], [1.0], FixedCompleter([[2, 5]]), boxed_judge, rollouts=2, parts="response") == [
        [0.5, 1.0]]


def test_a_rollout_that_never_closes_its_thinking_is_judged_wrong():
    pair = LabelledPair(0, "1+1?", COMPLETION, gold="2")
    # The completion starts without <think> (the template pre-filled it): the judge reads the rollout as thinking.
    assert judged_text(pair, "Try 1+1=3.\n\nthe answer is \\boxed{2}", False).startswith("<think>\n")
    plain = LabelledPair(0, "1+1?", "So \\boxed{2}.", gold="2")
    assert judged_text(plain, "So \\boxed{2}.", False) == "So \\boxed{2}."


def test_the_policy_completer_writes_the_think_tag_once(tiny_models):
    from reasonflux_rl.tools.sampling import load_sampler

    completer = PolicyCompleter(load_sampler(str(tiny_models.policy), backend="transformers", max_new_tokens=2))
    prompt = completer.prompt("1+1?", "<think>\nTry.\n\n")
    assert prompt.count("<think>") == 1 and prompt.endswith("<think>\nTry.\n\n")


def test_the_sampler_batches_prompts_by_length_and_answers_each_in_its_place(tiny_models):
    import torch

    from reasonflux_rl.tools.sampling import load_sampler

    sampler = load_sampler(str(tiny_models.policy), backend="transformers", max_new_tokens=2, prompts_per_batch=2)
    batches = []

    def echo(input_ids, attention_mask, num_return_sequences, **kwargs):
        # Each continuation repeats its prompt's last real token: what comes back tells whose it is.
        batches.append(attention_mask.sum(dim=1).tolist())
        last = input_ids[:, -1:].repeat_interleave(num_return_sequences, dim=0)
        return torch.cat([input_ids.repeat_interleave(num_return_sequences, dim=0), last, last], dim=1)

    sampler.model.generate = echo
    prompts = ["a b c d e f g h 7", "1", "a b c d 5", "x 3"]
    out = sampler.sample(prompts, 2)
    tokenizer = sampler.tokenizer
    expected = [tokenizer.decode(tokenizer(p, add_special_tokens=False)["input_ids"][-1:]) * 2 for p in prompts]
    assert out == [[e, e] for e in expected]
    assert batches[0] == sorted(batches[0]) and max(batches[0]) <= min(batches[1])  # short prompts first


# ----------------------------------------------------------------------------------------- the command


def lab_rows(count, seed=0):
    import random

    from reasonflux_rl.lab.task import problems, write

    rng = random.Random(seed)
    rows = []
    for problem in rng.sample(problems("train"), count):
        written = write(problem, 0.4, rng)
        rows.append({"problem": problem.text, "completion": written.completion, "solution": str(problem.answer),
                     "labels": list(written.labels)})
    return rows


def test_given_labels_keep_the_rows_and_add_the_targets(tmp_path, capsys):
    rows = lab_rows(6)
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = run_label("--input", str(data), "--output", str(tmp_path / "out.jsonl"), capsys=capsys)
    assert "prm label: 6 rows" in out.out and "method given" in out.out
    labelled = read_output(tmp_path / "out.jsonl")
    for row, result in zip(rows, labelled):
        assert {k: result[k] for k in row} == row
        assert result["step_targets"] == [float(x) for x in row["labels"]]
        # The trajectory target is the row's own outcome: its boxed answer against the gold.
        assert result["trajectory_target"] == float(f"\\boxed{{{row['solution']}}}" in row["completion"])


def test_bad_rows_stop_the_run_before_anything_is_labelled_or_are_left_out(tmp_path, capsys):
    rows = lab_rows(3)
    rows[1]["labels"] = rows[1]["labels"][:-1]
    rows[2]["solution"] = "no math here"
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with pytest.raises(ConfigError, match=r"row 1 \(line 2\): 'labels' has \d targets for \d steps"):
        run_label("--input", str(data), "--output", str(out))
    assert not out.exists() and not (tmp_path / "out.labels.jsonl").exists()
    run_label("--input", str(data), "--output", str(out), "--on_bad_row", "skip")
    err = capsys.readouterr().err
    assert "row 2 (line 3): the gold answer cannot be parsed" in err
    assert [r["problem"] for r in read_output(out)] == [rows[0]["problem"]]


@pytest.mark.parametrize("argv,message", [
    (["--method", "mc"], "method='mc' needs policy"),
    (["--method", "reasonflux"], "method='reasonflux' needs encoder: the sentence encoder"),
    (["--method", "reasonflux", "--encoder", "/no/such/encoder", "--judge", "/no/such/judge"],
     "encoder '/no/such/encoder' is not a local checkpoint"),
    (["--method", "mc", "--policy", "/no/such/policy"], "policy '/no/such/policy' is not a local checkpoint"),
    (["--output", "out.txt"], "use a .jsonl or .parquet file"),
])
def test_bad_options_are_one_line_errors(tmp_path, argv, message):
    data = write_jsonl(tmp_path / "in.jsonl", lab_rows(2))
    base = ["--input", str(data), "--output", str(tmp_path / "out.jsonl")]
    with pytest.raises(ConfigError) as err:
        run_label(*base, *argv)
    assert message in str(err.value)


class StubSampler:
    """A policy whose continuation of a prefix depends only on the prefix and the seed of the call: right when the
    seed and the prefix length are both even."""

    def __init__(self, *args, **kwargs):
        self.calls = 0

    def chat_prompt(self, problem):
        return f"<|user|>{problem}<|assistant|><think>\n"

    def sample(self, prompts, n, *, seed=0, on_batch=None):
        self.calls += 1
        out = [[("\n</think>\n\nThe answer is $\\boxed{%s}$." % (GOLD if (seed + len(p) + k) % 2 == 0 else "x"))
                for k in range(n)] for p in prompts]
        if on_batch:
            on_batch(n * len(prompts))
        return out


GOLD = "7"


def mc_rows(count):
    return [{"problem": f"Problem {i}?", "completion": f"Step a{i}.\n\nStep b.\n</think>\n\n\\boxed{{{GOLD}}}",
             "solution": GOLD} for i in range(count)]


def test_mc_prints_its_cost_first_and_labels_every_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("reasonflux_rl.tools.sampling.load_sampler", StubSampler)
    data = write_jsonl(tmp_path / "in.jsonl", mc_rows(3))
    out = run_label("--input", str(data), "--output", str(tmp_path / "out.jsonl"), "--method", "mc", "--policy",
                    "stub", "--rollouts", "4", capsys=capsys)
    first = out.out.splitlines()[0]
    # 3 rows x 3 steps; the last step of each row is its outcome: 2 prefixes x 3 rows x 4 rollouts.
    assert first.startswith("prm label: 3 rows, 9 steps") and "6 step prefixes x 4 rollouts = 24 continuations" in first
    for row in read_output(tmp_path / "out.jsonl"):
        assert len(row["step_targets"]) == 3 and row["step_targets"][-1] == 1.0 == row["trajectory_target"]
        # Half of each prefix's rollouts are right (k alternates parity).
        assert row["step_targets"][:2] == [0.5, 0.5]


def test_a_killed_mc_run_resumes_to_the_labels_of_an_uninterrupted_one(tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "in.jsonl", mc_rows(5))
    argv = ["--input", str(data), "--method", "mc", "--policy", "stub", "--rollouts", "3", "--chunk_size", "2"]

    class DiesOnThirdChunk(StubSampler):
        def sample(self, prompts, n, *, seed=0, on_batch=None):
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().sample(prompts, n, seed=seed, on_batch=on_batch)

    monkeypatch.setattr("reasonflux_rl.tools.sampling.load_sampler", StubSampler)
    run_label(*argv, "--output", str(tmp_path / "whole.jsonl"))
    monkeypatch.setattr("reasonflux_rl.tools.sampling.load_sampler", DiesOnThirdChunk)
    with pytest.raises(KeyboardInterrupt):
        run_label(*argv, "--output", str(tmp_path / "cut.jsonl"))
    stored = (tmp_path / "cut.labels.jsonl").read_text().splitlines()
    assert len(stored) == 4 and not (tmp_path / "cut.jsonl").exists()
    monkeypatch.setattr("reasonflux_rl.tools.sampling.load_sampler", StubSampler)
    run_label(*argv, "--output", str(tmp_path / "cut.jsonl"))
    assert read_output(tmp_path / "cut.jsonl") == read_output(tmp_path / "whole.jsonl")
    # Changed settings, or golds edited in place, are refused rather than mixed into the stored labels.
    with pytest.raises(ConfigError, match="rollouts: 3 then, 4 now"):
        run_label(*argv[:-4], "--rollouts", "4", "--chunk_size", "2", "--output", str(tmp_path / "cut.jsonl"))
    rows = mc_rows(5)
    rows[4]["solution"] = "8"
    write_jsonl(data, rows)
    with pytest.raises(ConfigError, match="an input whose rows have changed since"):
        run_label(*argv, "--output", str(tmp_path / "cut.jsonl"))


def test_mc_on_the_lab_policy_runs_as_the_docs_write_it(tmp_path):
    """Real generation through transformers: the lab's warm-start policy continues the lab's solutions."""
    data = write_jsonl(tmp_path / "in.jsonl", [{k: v for k, v in r.items() if k != "labels"} for r in lab_rows(2)])
    out = tmp_path / "mc.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "reasonflux_rl.cli", "prm", "label", "--input", str(data), "--output", str(out),
         "--method", "mc", "--policy", "reasonflux_rl/lab/assets/policy", "--rollouts", "4", "--max_new_tokens", "64",
         "--backend", "transformers", "--outcome_num_workers", "1", "--no_progress", "true"],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    labelled = read_output(out)
    assert all(len(r["step_targets"]) == r["completion"].count("Step ") + 1 for r in labelled)
    assert all(t in (0.0, 0.25, 0.5, 0.75, 1.0) for r in labelled for t in r["step_targets"])
