"""prm label --method reasonflux: the paper's step targets (alignment, quality, coherence, softmax fusion) against
hand-computed values with stub encoders and judges, a judge that fails loudly, the local judge's prompt and answer
tokens, the judge behind an OpenAI-compatible server on loopback (logprobs, grades, slow, failing and malformed
answers), and the command end to end on tiny models (components written out, resumable, refusals)."""

import json
import math

import pytest
import torch

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm_training import label_command
from reasonflux_rl.prm_training.fields import LabelledPair
from reasonflux_rl.prm_training.reasonflux_targets import (
    LocalJudge,
    PairSteps,
    SentenceEncoder,
    StepQuery,
    fuse,
    reasonflux_targets,
)
from reasonflux_rl.tiny import write_tiny_models

VECTORS = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.0, 1.0], "b\n\nc": [0.6, 0.8], "x": [1.0, 0.0],
           "y": [0.8, 0.6], "n": [0.6, -0.8], "m": [-1.0, 0.0]}


def encode(texts):
    return torch.tensor([VECTORS[t] for t in texts])


class Judge:
    """Rates each step by a table, and keeps what it was asked."""

    def __init__(self, ratings=None):
        self.ratings = ratings or {}
        self.asked = []

    def rate(self, queries):
        self.asked += queries
        return [self.ratings.get(q.step, 0.5) for q in queries]


def targets(batch, judge=None, **options):
    return reasonflux_targets(batch, encode, judge or Judge(), **options)


def test_fusion_is_the_softmax_weighted_sum_of_the_scores_present():
    weights = [math.exp(0.2), math.exp(0.6), math.exp(1.0)]
    assert fuse([0.2, 0.6, 1.0]) == pytest.approx(sum(w * s for w, s in zip(weights, [0.2, 0.6, 1.0])) / sum(weights))
    assert fuse([None, 0.3, None]) == pytest.approx(0.3)
    assert fuse([None, None, None]) is None


def test_position_rule_merges_extra_thinking_steps_into_the_last_block():
    [row] = targets([PairSteps("p", ("a", "b", "c"), ("x", "y"))], negatives=0)
    # thinking a -> x (cos 1); b and c form one block "b\n\nc" matched with y: cos = 0.6*0.8 + 0.8*0.6 = 0.96.
    assert row.alignment == pytest.approx([1.0, 0.96, 0.96, 1.0, 0.96])


def test_best_rule_takes_the_most_similar_step_of_the_other_part_and_clips_negative_cosines():
    [row] = targets([PairSteps("p", ("a", "b", "m"), ("x", "y"))], match="best", negatives=0)
    # b: max(cos(b,x)=0, cos(b,y)=0.6); m: max(-1, -0.8) clipped to 0; x: max over a, b, m = 1; y: max(0.8, 0.6, -0.8).
    assert row.alignment == pytest.approx([1.0, 0.6, 0.0, 1.0, 0.8])


def test_a_response_step_no_thinking_step_reaches_has_no_alignment():
    [row] = targets([PairSteps("p", ("a",), ("x", "y"))], negatives=0)
    assert row.alignment[:2] == pytest.approx([1.0, 1.0]) and row.alignment[2] is None
    [alone] = targets([PairSteps("p", (), ("x", "y"))], negatives=0)
    assert alone.alignment == [None, None]


def test_coherence_is_the_contrastive_probability_against_other_rows_steps():
    batch = [PairSteps("p", ("a", "b"), ()), PairSteps("q", (), ("n",))]
    [row, _] = targets(batch, temperature=0.5, negatives=1)
    # Step b after a: sim(a, b) = 0 against the one negative n: sim(a, n) = 0.6.
    expected = math.exp(0 / 0.5) / (math.exp(0 / 0.5) + math.exp(0.6 / 0.5))
    assert row.coherence[0] is None and row.coherence[1] == pytest.approx(expected)


def test_coherence_negatives_are_drawn_from_other_rows_only_and_reproducibly():
    batch = [PairSteps("p", ("a", "b", "c"), ("x", "y")), PairSteps("q", ("n", "m"), ())]
    first = targets(batch, negatives=2, seed=3)
    assert first == targets(batch, negatives=2, seed=3)
    # Negatives from row 1 only (n, m) for row 0: a step with no other row to draw from has no coherence.
    assert targets(batch[:1], negatives=2)[0].coherence == [None] * 5


def test_the_judge_reads_the_problem_the_steps_before_and_the_response():
    judge = Judge({"b": 0.9})
    [row] = targets([PairSteps("p", ("a", "b"), ("x", "y"))], judge=judge, negatives=0)
    assert judge.asked[1] == StepQuery("p", ("a",), "b", "x\n\ny")
    assert judge.asked[3] == StepQuery("p", ("x",), "y", "x\n\ny")
    assert row.quality == [0.5, 0.9, 0.5, 0.5]
    assert row.fused == [pytest.approx(fuse([a, q, c])) for a, q, c in zip(row.alignment, row.quality, row.coherence)]


def test_parts_choose_which_steps_get_targets():
    judge = Judge()
    [row] = targets([PairSteps("p", ("a",), ("x", "y"))], judge=judge, parts="response", negatives=0)
    # Only the response steps are labelled (and judged); the thinking still gives them their alignment.
    assert [q.step for q in judge.asked] == ["x", "y"] and row.alignment == [1.0, None]
    assert row.fused == [pytest.approx(fuse([1.0, 0.5, None])), 0.5]


@pytest.mark.parametrize("ratings", [[0.5], [0.5, 0.5, 0.5, 1.5], [0.5, float("nan"), 0.5, 0.5], [None, 0.5, 0.5, 0.5]])
def test_a_judge_that_gives_no_probability_per_step_is_an_error_never_a_zero(ratings):
    class Broken:
        def rate(self, queries):
            return ratings

    with pytest.raises(RuntimeError, match="judge"):
        reasonflux_targets([PairSteps("p", ("a", "b"), ("x", "y"))], encode, Broken(), negatives=0)


def test_local_judge_prompt_keeps_braces_and_never_substitutes_inside_the_texts(tmp_path):
    policy = str(write_tiny_models(tmp_path / "tiny").policy)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("P: {problem}\nB: {before}\nS: {step}\nR: {response}\nboxed{} ok? ")
    judge = LocalJudge(policy, prompt=prompt, yes="1", no="0", device="cpu")
    text = judge.prompt(StepQuery("say {step}", (), "It is 2.", "\\boxed{2}"))
    assert "P: say {step}\nB: (none)\nS: It is 2.\nR: \\boxed{2}\nboxed{} ok?" in text
    ratings = judge.rate([StepQuery("1+1?", (), "It is 2.", "So 2."), StepQuery("1+1?", ("a",), "It is 3.", "3")])
    alone = judge.rate([StepQuery("1+1?", ("a",), "It is 3.", "3")])
    assert all(0 < r < 1 for r in ratings) and alone[0] == pytest.approx(ratings[1], abs=1e-5)  # padding-free


def test_local_judge_rates_in_length_sorted_batches_as_one_query_at_a_time_with_all_logits(tmp_path):
    # Batches are sorted by length and only the last logits computed: the ratings must come back in the queries'
    # order and equal the plain reference (one prompt per forward, the full logits, the last position's softmax).
    policy = str(write_tiny_models(tmp_path / "tiny").policy)
    judge = LocalJudge(policy, yes="1", no="0", device="cpu", batch_size=3)
    queries = [StepQuery("1+1?", ("a",) * k, f"Step {k}." * (1 + k % 3), "So 2.") for k in range(7)]
    yes, no = judge.answer_ids
    reference = []
    for query in queries:
        ids = judge.tokenizer(judge.prompt(query), return_tensors="pt", add_special_tokens=False)
        logits = judge.model(**ids).logits[0, -1, [yes, no]]
        reference.append(torch.softmax(logits, dim=-1)[0].item())
    assert judge.rate(queries) == pytest.approx(reference, abs=1e-5)
    assert len(set(round(r, 6) for r in reference)) > 1  # the queries differ, so would a misordering


def test_local_judge_refuses_answers_of_several_tokens_and_prompts_without_placeholders(tmp_path):
    policy = str(write_tiny_models(tmp_path / "tiny").policy)
    with pytest.raises(ConfigError, match="not one"):
        LocalJudge(policy, yes="definitely", no="0", device="cpu").rate([QUERY])
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("{problem} {step}")
    with pytest.raises(ConfigError, match=r"lacks \{before\}, \{response\}"):
        LocalJudge(policy, prompt=prompt, device="cpu")


def test_sentence_encoder_mean_pools_each_text_alone_whatever_its_batch(tmp_path):
    encoder = SentenceEncoder(str(write_tiny_models(tmp_path / "tiny").policy), device="cpu", batch_size=2)
    texts = ["Add 1 and 1.", "It is 2, since one and one make two.", "So 2."]
    together = encoder(texts)
    assert torch.allclose(together[1], encoder([texts[1]])[0], atol=1e-5)
    assert torch.allclose(together[2], encoder([texts[2]])[0], atol=1e-5)


# ----------------------------------------------------------------------------------------- the command

ROWS = [{"problem": f"{k}+1?", "completion": f"Add {k} and 1.\n\nIt is {k + 1}.\n</think>\n\nSo \\boxed{{{k + 1}}}.",
         "solution": str(k + 1)} for k in range(3)]


def _label(tmp_path, *extra, rows=ROWS):
    models = write_tiny_models(tmp_path / "tiny")
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "out.jsonl"
    label_command.main(["--input", str(source), "--output", str(output), "--method", "reasonflux", "--encoder",
                        str(models.policy), "--judge", str(models.policy), "--judge_yes", "1", "--judge_no", "0",
                        "--device", "cpu", "--coherence_negatives", "2", "--no_progress", "true",
                        "--outcome_num_workers", "1", *extra])
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_label_reasonflux_writes_fused_targets_and_each_component(tmp_path, capsys):
    rows = _label(tmp_path)
    said = capsys.readouterr().out
    assert "method reasonflux: 9 judge calls" in said and "9 step texts" in said
    for row in rows:
        pair = PairSteps.of(LabelledPair(0, row["problem"], row["completion"]))
        assert len(row["step_targets"]) == len(pair.thinking) + len(pair.response) == 3
        for k, target in enumerate(row["step_targets"]):
            scores = [row["step_alignment"][k], row["step_quality"][k], row["step_coherence"][k]]
            assert 0 <= target <= 1 and target == pytest.approx(fuse(scores))
        assert row["step_coherence"][0] is None and row["step_coherence"][1] is not None
        assert row["trajectory_target"] == 1.0
    # The same command again reads every row from the store: the same targets, nothing labelled anew.
    assert _label(tmp_path) == rows
    assert "3 stored before" in capsys.readouterr().out


def test_label_reasonflux_refusals(tmp_path):
    with pytest.raises(ConfigError, match="needs encoder"):
        label_command.PRMLabelArguments(input="in.jsonl", output="out.jsonl", method="reasonflux", judge="j")
    with pytest.raises(ConfigError, match="match='nearest'"):
        label_command.PRMLabelArguments(input="in.jsonl", output="out.jsonl", method="reasonflux", judge="j",
                                        encoder="e", match="nearest")
    with pytest.raises(ConfigError, match="encoder '/no/such' is not a local checkpoint"):
        _label(tmp_path, "--encoder", "/no/such")
    with pytest.raises(ConfigError, match="step_quality"):  # an input that already has a component column
        _label(tmp_path, rows=[{**ROWS[0], "step_quality": [1, 1, 1]}])


# ------------------------------------------------------------------------------- the judge behind a chat server


def chat_answer(content="Yes", top=None):
    """A /v1/chat/completions answer; ``top``: the first token's top logprobs as {token: probability}."""
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if top is not None:
        choice["logprobs"] = {"content": [{"token": content, "logprob": 0.0, "top_logprobs": [
            {"token": token, "logprob": math.log(p)} for token, p in top.items()]}]}
    return {"id": "x", "object": "chat.completion", "choices": [choice]}


def chat_judge(stub, **options):
    from reasonflux_rl.prm_training.chat_judge import ChatJudge

    return ChatJudge([stub.url], **{"retries": 2, "backoff": 0.0, "timeout": 60.0, "deadline": 240.0, **options})


QUERY = StepQuery("1+1?", ("Add.",), "It is 2.", "So 2.")
CHAT = ("POST", "/v1/chat/completions")


def test_chat_judge_rates_by_the_first_tokens_logprobs_of_yes_and_no():
    from health_stub import StubServer

    with StubServer(models=["judge-7b"]) as stub:
        stub.defaults[CHAT] = lambda request: (200, chat_answer(top={" Yes": 0.6, "No": 0.2, "Maybe": 0.2}))
        judge = chat_judge(stub)
        assert judge.rate([QUERY, QUERY]) == [pytest.approx(0.75), pytest.approx(0.75)]
        request = stub.sent(*CHAT)[0]
        assert request["model"] == "judge-7b" and request["max_tokens"] == 1 and request["logprobs"] is True
        assert request["temperature"] == 0.0 and request["top_logprobs"] == 20
        [message] = request["messages"]
        assert message["role"] == "user" and "Add." in message["content"] and "It is 2." in message["content"]
        judge.close()


def test_chat_judge_without_logprobs_moves_to_grades_once_in_auto_and_refuses_in_logprobs_mode():
    from health_stub import StubServer

    from reasonflux_rl.prm_training.chat_judge import JudgeServerError

    with StubServer() as stub:
        stub.defaults[CHAT] = lambda request: (200, chat_answer("7" if request["max_tokens"] > 1 else "Yes"))
        judge = chat_judge(stub, model="stub")
        assert judge.rate([QUERY] * 3) == [0.7, 0.7, 0.7] and judge.answer == "grade"
        # The first step was asked twice (logprobs, then a grade); the others once each, for a grade.
        asked = [r["max_tokens"] for r in stub.sent(*CHAT)]
        assert asked == [1, 8, 8, 8] and "0 (certainly wrong) to 10" in stub.sent(*CHAT)[1]["messages"][0]["content"]
        with pytest.raises(JudgeServerError, match="gives no logprobs"):
            chat_judge(stub, model="stub", answer="logprobs").rate([QUERY])
        judge.close()


def test_chat_judge_retries_failures_and_answers_without_a_grade_and_counts_them():
    from health_stub import StubServer

    with StubServer() as stub:
        stub.script[CHAT] = [(500, {"error": "boom"}), (200, b"not json"), (200, chat_answer("I think it is fine"))]
        stub.defaults[CHAT] = lambda request: (200, chat_answer("Grade: 9 of 10"))
        judge = chat_judge(stub, model="stub", answer="grade", retries=3, failures_to_cooldown=10)
        assert judge.rate([QUERY]) == [0.9]
        assert judge.pop_stats() == {"requests": 1, "retries": 3}


def test_chat_judge_never_turns_a_failure_into_a_rating():
    from health_stub import StubServer

    from reasonflux_rl.prm_training.chat_judge import JudgeServerError, JudgeUnavailableError

    with StubServer() as stub:
        stub.defaults[CHAT] = lambda request: (200, chat_answer("no idea"))
        with pytest.raises(JudgeUnavailableError, match="after 3 attempts: .*no grade from 0 to 10: 'no idea'"):
            chat_judge(stub, model="stub", answer="grade").rate([QUERY])
        stub.defaults[CHAT] = lambda request: (200, chat_answer(top={"Maybe": 0.9, "Perhaps": 0.1}))
        with pytest.raises(JudgeServerError, match=r"hold neither 'Yes' nor 'No'"):
            chat_judge(stub, model="stub").rate([QUERY])
        stub.defaults[CHAT] = lambda request: (200, {"choices": []})
        with pytest.raises(JudgeServerError, match="without choices"):
            chat_judge(stub, model="stub").rate([QUERY])
        stub.defaults[CHAT] = lambda request: (400, {"error": "bad request"})
        with pytest.raises(JudgeServerError, match="rejected the request: HTTP 400"):
            chat_judge(stub, model="stub").rate([QUERY])


def test_chat_judge_slow_answers_time_out_and_are_retried():
    import time as clock

    from health_stub import StubServer

    def slow_then_fine(request):
        if len(stub.sent(*CHAT)) == 1:
            clock.sleep(2.0)
        return 200, chat_answer("5")

    with StubServer() as stub:
        stub.defaults[CHAT] = slow_then_fine
        judge = chat_judge(stub, model="stub", answer="grade", timeout=0.5)
        assert judge.rate([QUERY]) == [0.5] and judge.pop_stats()["retries"] == 1


def test_chat_judge_answers_every_step_in_order_with_requests_in_flight_together():
    from health_stub import StubServer

    with StubServer() as stub:
        stub.defaults[CHAT] = lambda request: (200, chat_answer(
            request["messages"][0]["content"].split("The step to check:\n")[1][0]))
        queries = [StepQuery("p", (), f"{k} is the step", "r") for k in range(10)]
        judge = chat_judge(stub, model="stub", answer="grade", max_inflight=4)
        assert judge.rate(queries) == [k / 10 for k in range(10)]


def test_label_reasonflux_with_a_judge_behind_a_chat_server(tmp_path, capsys):
    from health_stub import StubServer

    with StubServer(models=["judge"]) as stub:
        stub.defaults[CHAT] = lambda request: (200, chat_answer(top={"Yes": 0.8, "No": 0.2}))
        models = write_tiny_models(tmp_path / "tiny")
        source = tmp_path / "in.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
        label_command.main(["--input", str(source), "--output", str(tmp_path / "out.jsonl"), "--method",
                            "reasonflux", "--encoder", str(models.policy), "--judge_urls", stub.url, "--device", "cpu",
                            "--no_progress", "true", "--outcome_num_workers", "1"])
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(q == pytest.approx(0.8) for row in rows for q in row["step_quality"])
    assert len(stub.sent(*CHAT)) == 9 and f"9 judge calls of {stub.url}" in capsys.readouterr().out


# ------------------------------------------------------------------------ the template-guided trajectory target


class PlanWriter:
    def __init__(self):
        self.prompts = []

    def write(self, prompts, max_tokens):
        self.prompts += prompts
        return [f"Plan {k}: add the numbers." for k in range(len(prompts))]


class GuidedPolicy:
    """Answers right ``right_of_4`` times in 4 when its prompt holds a plan, never without one."""

    def __init__(self, *args, **kwargs):
        self.prompts = []

    def chat_prompt(self, problem):
        return f"<user>{problem}<assistant><think>\n"

    def sample(self, prompts, n, *, seed=0, on_batch=None):
        self.prompts += prompts
        out = []
        for prompt in prompts:
            gold = prompt.split("+")[0][len("<user>"):]
            right = int(gold) + 1 if "Plan 1:" in prompt else -1  # row 1's plan works, row 0's and 2's do not
            out.append([f"Add.\n</think>\n\n\\boxed{{{right if k < 3 else 0}}}" for k in range(n)])
        return out


def outcome(texts, golds):
    return [float(t.endswith("{" + g + "}")) for t, g in zip(texts, golds)]


def test_template_target_is_the_fraction_of_guided_answers_judged_right():
    from reasonflux_rl.prm_training.template_target import template_targets

    pairs = [LabelledPair(k, row["problem"], row["completion"], gold=row["solution"]) for k, row in enumerate(ROWS)]
    writer, policy = PlanWriter(), GuidedPolicy()
    targets, templates = template_targets(pairs, writer, policy, outcome, rollouts=4)
    assert targets == [0.0, 0.75, 0.0] and templates[1] == "Plan 1: add the numbers."
    # The judge read each pair's problem, thinking and response; the policy each problem and its own template.
    assert "Add 1 and 1." in writer.prompts[1] and "So \\boxed{2}." in writer.prompts[1]
    assert "1+1?\n\nFollow this plan:\nPlan 1: add the numbers." in policy.prompts[1]


def test_template_target_refuses_a_writer_that_skips_rows():
    from reasonflux_rl.prm_training.template_target import template_targets

    class Short(PlanWriter):
        def write(self, prompts, max_tokens):
            return super().write(prompts, max_tokens)[:-1]

    pairs = [LabelledPair(k, row["problem"], row["completion"], gold=row["solution"]) for k, row in enumerate(ROWS)]
    with pytest.raises(RuntimeError, match="2 templates for 3 rows"):
        template_targets(pairs, Short(), GuidedPolicy(), outcome, rollouts=2)


def test_label_with_the_template_target_says_its_cost_and_writes_each_template(tmp_path, monkeypatch, capsys):
    from health_stub import StubServer

    monkeypatch.setattr("reasonflux_rl.tools.sampling.load_sampler", GuidedPolicy)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({**r, "labels": [1, 1, 1]}) + "\n" for r in ROWS))
    plans = iter(f"Plan {k}: add the numbers." for k in range(3))
    with StubServer(models=["judge"]) as stub:
        stub.defaults[CHAT] = lambda request: (200, chat_answer(next(plans)))
        label_command.main(["--input", str(source), "--output", str(tmp_path / "out.jsonl"), "--trajectory_target",
                            "template", "--template_rollouts", "4", "--policy", "stub", "--judge_urls", stub.url,
                            "--judge_max_inflight", "1", "--no_progress", "true", "--outcome_num_workers", "1"])
    said = capsys.readouterr().out
    assert "trajectory target template: 3 templates written by" in said and "3 x 4 = 12 answers of stub" in said
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["trajectory_target"] for r in rows] == [0.0, 0.75, 0.0]
    assert [r["trajectory_template"] for r in rows] == [f"Plan {k}: add the numbers." for k in range(3)]
    assert all(r["step_targets"] == [1.0, 1.0, 1.0] for r in rows)  # given step targets, untouched


@pytest.mark.parametrize("argv,message", [
    (["--trajectory_target", "template", "--judge_urls", "http://127.0.0.1:9"], "needs policy"),
    (["--trajectory_target", "template", "--policy", "p"], "needs one judge to write the templates"),
])
def test_template_target_refusals(tmp_path, argv, message):
    with pytest.raises(ConfigError, match=message):
        label_command.parse_arguments(["--input", "in.jsonl", "--output", "out.jsonl", *argv])


def test_label_with_the_template_target_on_the_tiny_models(tmp_path):
    # Random weights: the templates are noise and the answers wrong; what runs is the real writer and sampler.
    models = write_tiny_models(tmp_path / "tiny")
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({**r, "labels": [1, 1, 1]}) + "\n" for r in ROWS))
    label_command.main(["--input", str(source), "--output", str(tmp_path / "out.jsonl"), "--trajectory_target",
                        "template", "--template_rollouts", "2", "--template_max_tokens", "6", "--max_new_tokens", "6",
                        "--policy", str(models.policy), "--judge", str(models.policy), "--backend", "transformers",
                        "--device", "cpu", "--no_progress", "true", "--outcome_num_workers", "1"])
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(r["trajectory_target"] in (0.0, 0.5, 1.0) and isinstance(r["trajectory_template"], str) for r in rows)
