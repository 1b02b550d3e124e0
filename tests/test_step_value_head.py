"""The step value-head kind (Skywork-o1-Open-PRM layout) end to end: recognised from its weights, loaded without
remote code from safetensors or a pickled state dict, scored through every command and in training, refused where
it cannot run (PRM servers) and where the checkpoint is not that layout. Its parity with Skywork's one-sample
procedure in every batch layout is in test_prm_kinds.py, its truncation in test_prm_truncation.py."""

import json
import random

import pytest
import torch
from jsonl_helpers import read_jsonl, write_jsonl
from reference import reference_step_value_head_scores
from safetensors.torch import load_file, save_file
from test_prm_scorer import PROBLEM, random_completion

from reasonflux_rl import cli
from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm import PRMCheckpointError, inspect_checkpoint, load_scorer
from reasonflux_rl.prm.engine.format import trajectory_steps
from reasonflux_rl.prm.placement.remote import inspect_served_checkpoint
from reasonflux_rl.rewards.config import RewardArguments
from reasonflux_rl.tiny import write_tiny_step_value_head
from reasonflux_rl.tools import bon
from reasonflux_rl.tools import score as score_cli
from reasonflux_rl.tools.selection import main as select_main
from reasonflux_rl.train.launch import main as train_main

REFUSED = r"a step value-head PRM cannot be scored on PRM servers \(prm_server_urls\): vLLM serves the Skywork"


@pytest.fixture(scope="module")
def skywork(tmp_path_factory):
    return write_tiny_step_value_head(tmp_path_factory.mktemp("skywork"))


@pytest.fixture(scope="module")
def rows():
    rng = random.Random(17)
    return [{"problem": f"{PROBLEM} ({i})", "completion": random_completion(rng, rng.randint(1, 6), 1)}
            for i in range(6)]


def reference(path, problem, completion):
    return reference_step_value_head_scores(path, problem, "\n".join(trajectory_steps(completion)))


def rewrite(path, change):
    """Apply ``change`` to the tensors of ``path``'s model.safetensors and save them back."""
    weights = load_file(path / "model.safetensors")
    change(weights)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})


def test_score_command_gives_one_score_per_step_equal_to_skywork_procedure(skywork, rows, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    score_cli.main(["--prm", str(skywork), "--input", str(data), "--output", str(tmp_path / "out.jsonl"),
                    "--no-progress"])
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r["index"] for r in out] == list(range(len(rows)))
    for row, given in zip(out, rows):
        expected = reference(skywork, given["problem"], given["completion"])
        assert row["num_steps"] == len(trajectory_steps(given["completion"])) == len(row["step_scores"])
        assert row["step_scores"] == pytest.approx(expected, abs=1e-5)
        assert row["score"] == pytest.approx(sum(expected) / len(expected), abs=1e-5)
    assert torch.tensor([s for r in out for s in r["step_scores"]]).std() > 0.01


def test_auto_recognises_the_layout_and_naming_it_loads_the_same(skywork, rows):
    info = inspect_checkpoint(skywork)
    assert (info.kind, info.architectures) == ("step_value_head", ("Qwen2ForPrmModel",))
    problems, completions = [r["problem"] for r in rows], [r["completion"] for r in rows]
    auto = load_scorer(skywork).score(problems, completions)
    named = load_scorer(skywork, kind="step_value_head").score(problems, completions)
    assert [r.step_scores for r in auto] == [r.step_scores for r in named]
    # Steps are located in the completion, as dense credit needs them.
    assert all(len(r.step_spans) == len(r.step_scores) for r in auto)
    # The checkpoint's LM head is not loaded: no score reads it.
    assert not any("lm_head" in name for name, _ in load_scorer(skywork).model.named_parameters())


def test_a_pickled_state_dict_alone_is_read_with_weights_only(skywork, rows, tmp_path):
    # Skywork's main branch ships pytorch_model.bin only (a safetensors copy lives in a pull-request revision).
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for file in skywork.iterdir():
        if file.name != "model.safetensors":
            (pickled / file.name).write_bytes(file.read_bytes())
    torch.save(load_file(skywork / "model.safetensors"), pickled / "pytorch_model.bin")
    assert inspect_checkpoint(pickled).kind == "step_value_head"
    problems, completions = [r["problem"] for r in rows], [r["completion"] for r in rows]
    flat = lambda path: [s for r in load_scorer(path).score(problems, completions) for s in r.step_scores]
    assert flat(pickled) == pytest.approx(flat(skywork), abs=1e-6)

    # A pickle that is more than tensors is refused, never unpickled.
    torch.save({"v_head.summary.weight": torch.zeros(1, 64), "config": object()}, pickled / "pytorch_model.bin")
    with pytest.raises(PRMCheckpointError, match=r"cannot be read with torch.load\(weights_only=True, mmap=True\)"):
        inspect_checkpoint(pickled)


def test_remote_code_the_config_names_is_never_imported(skywork, tmp_path):
    # The hub config maps the architecture to its own modeling file; loading must not need (or run) it.
    path = tmp_path / "with_code"
    path.mkdir()
    for file in skywork.iterdir():
        (path / file.name).write_bytes(file.read_bytes())
    marker = tmp_path / "imported"
    (path / "modeling_qwen2_rm.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError('remote')\n")
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_qwen2_rm.Qwen2ForPrmModel"}
    (path / "config.json").write_text(json.dumps(config))
    [result] = load_scorer(path).score([PROBLEM], ["Three fours.\n\nSo 12."])
    assert len(result.step_scores) == 2 and not marker.exists()


def test_bf16_decoder_keeps_a_float32_head_and_stays_near_fp32(skywork, rows):
    problems, completions = [r["problem"] for r in rows], [r["completion"] for r in rows]
    bf16 = load_scorer(skywork, dtype="bfloat16")
    assert bf16.model.model.dtype == torch.bfloat16 and bf16.model.v_head.summary.weight.dtype == torch.float32
    low = [s for r in bf16.score(problems, completions) for s in r.step_scores]
    full = [s for r in load_scorer(skywork).score(problems, completions) for s in r.step_scores]
    assert max(abs(a - b) for a, b in zip(low, full)) < 0.05


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda w: w.update({"v_head.summary.weight": torch.zeros(2, 64)}),
         r"a value head \{'v_head.summary.bias': \(1,\), 'v_head.summary.weight': \(2, 64\)\}; a step value head is "
         r"v_head.summary = Linear\(hidden, 1\): weight \(1, 64\) and bias \(1,\)"),
        (lambda w: w.pop("lm_head.weight"),
         r"v_head.summary.weight but no LM head \(lm_head.weight, or tied embeddings\)"),
    ],
    ids=["two-output head", "no LM head"],
)
def test_a_broken_layout_is_refused_with_what_was_found(tmp_path, change, message):
    path = write_tiny_step_value_head(tmp_path)
    rewrite(path, change)
    with pytest.raises(PRMCheckpointError, match=r"^prm_name_or_path='[^']+': " + message):
        load_scorer(path)


def test_naming_another_kind_says_which_kind_it_is(skywork, tiny_models):
    with pytest.raises(PRMCheckpointError, match=r"a token-logit PRM must be a causal LM.*so it is a step_value_head "
                                                 r"PRM \(Skywork-o1-Open-PRM layout\)"):
        inspect_checkpoint(skywork, kind="token_logit")
    with pytest.raises(PRMCheckpointError, match=r"\(prm_kind='step_value_head'\): a step value-head PRM holds "
                                                 r"v_head.summary.weight in its weights, and there is none \(its "
                                                 r"weights hold a 2-label step head"):
        inspect_checkpoint(tiny_models.prm, kind="step_value_head")


def test_a_tokenizer_without_bos_is_refused(tmp_path):
    path = write_tiny_step_value_head(tmp_path)
    settings = json.loads((path / "tokenizer_config.json").read_text())
    settings["bos_token"] = None
    (path / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(PRMCheckpointError, match=r"input starts with the tokenizer's BOS token .* this tokenizer has "
                                                 r"none"):
        load_scorer(path)


def test_prm_servers_are_refused_for_the_kind_at_config_time(skywork, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^prm_kind='step_value_head': " + REFUSED):
        RewardArguments(prm_name_or_path=str(skywork), prm_server_urls=["http://prm:8001"], prm_kind="step_value_head")
    # Told by its weights, or (weights left on the servers) by its architecture name, before any server is asked.
    with pytest.raises(ConfigError, match=r"^prm_name_or_path='[^']+': " + REFUSED):
        load_scorer(skywork, server_urls=["http://127.0.0.1:9"])
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    for file in skywork.iterdir():
        if file.suffix != ".safetensors":
            (config_only / file.name).write_bytes(file.read_bytes())
    with pytest.raises(ConfigError, match=r"^prm_name_or_path='[^']+': " + REFUSED):
        inspect_served_checkpoint(config_only)
    # The commands refuse the flags with a one-line error before reading any input.
    with pytest.raises(SystemExit) as done:
        cli.main(["score", "--prm", str(skywork), "--kind", "step_value_head", "--server-url", "http://prm:8001",
                  "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "out.jsonl")])
    assert done.value.code == 2
    assert "reasonflux-rl score: error: --kind='step_value_head': a step value-head PRM cannot be scored" in (
        capsys.readouterr().err)


def test_select_and_bon_rank_by_its_scores(skywork, rows, tmp_path):
    scorer = load_scorer(skywork)
    mean = {i: sum(s) / len(s) for i, s in enumerate(
        r.step_scores for r in scorer.score([r["problem"] for r in rows], [r["completion"] for r in rows]))}
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    select_main(["--input", str(data), "--prm", str(skywork), "--top-k", "3", "--output", str(tmp_path / "sel.jsonl"),
                 "--no-plot"])
    selected = read_jsonl(tmp_path / "sel.jsonl")
    assert [r["row_index"] for r in selected] == sorted(mean, key=lambda i: (-mean[i], i))[:3]

    problems = [{"problem": rows[0]["problem"], "solution": "12",
                 "candidates": [rows[k]["completion"] + "\n\nSo \\boxed{12}." for k in range(4)]}]
    bon.main(["--input", str(write_jsonl(tmp_path / "bon.jsonl", problems)), "--prm", str(skywork), "--output",
              str(tmp_path / "bon.json"), "--ns", "1,2,4", "--workers", "1", "--no-plot"])
    [per_problem] = json.loads((tmp_path / "bon.json").read_text())["per_problem"]
    expected = [r.step_scores for r in scorer.score([rows[0]["problem"]] * 4, problems[0]["candidates"])]
    assert per_problem["prm_scores"] == pytest.approx([sum(s) / len(s) for s in expected], abs=1e-5)


def test_training_with_dense_credit_reads_its_step_scores(skywork, tiny_models, tmp_path):
    train_main([
        "--model_name_or_path", str(tiny_models.policy), "--prm_name_or_path", str(skywork), "--prm_credit",
        "suffix_sum", "--output_dir", str(tmp_path), "--use_cpu", "--report_to", "none", "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "12",
        "--logging_steps", "1", "--save_strategy", "no", "--outcome_num_workers", "1", "--dtype", "float32",
    ])
    history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    steps = [row for row in history if "loss" in row]
    assert len(steps) == 2
    for row in steps:
        assert 0.0 < row["reasonflux/prm_mean"] < 1.0
        assert row["reasonflux/step_tokens_mean"] > 0
