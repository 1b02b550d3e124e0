"""`reasonflux-rl tiny-models` writes checkpoints that the real loading code opens like hub checkpoints."""

import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reasonflux_rl.prm import load_scorer
from reasonflux_rl.prm.checkpoint import STEP_CLASSIFIER, inspect_checkpoint, read_weight_shapes
from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.tiny import TINY_TOKEN_LOGIT_TOKENS


def test_tiny_models_cli_writes_loadable_checkpoints(tmp_path):
    cli = Path(sys.executable).with_name("reasonflux-rl")
    proc = subprocess.run([str(cli), "tiny-models", "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    policy, prm = tmp_path / "policy", tmp_path / "prm"

    tokenizer = AutoTokenizer.from_pretrained(policy)
    for tag in ("<think>", "</think>", "<extra_0>"):
        assert len(tokenizer.encode(tag, add_special_tokens=False)) == 1, tag
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "1+1?"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    # TRL decodes completions skipping special tokens: the think tags must survive that.
    ids = tokenizer.encode("<think>\nx\n</think>\n\ny", add_special_tokens=False)
    assert "</think>" in tokenizer.decode(ids, skip_special_tokens=True)

    model = AutoModelForCausalLM.from_pretrained(policy)
    assert model(torch.tensor([[1, 2, 3]])).logits.shape[-1] == len(tokenizer)

    info = inspect_checkpoint(prm)
    assert info.kind == STEP_CLASSIFIER and info.architectures == ("Qwen2ForProcessRewardModel",)
    shapes = read_weight_shapes(prm)
    assert shapes["score.0.weight"] == (64, 64) and shapes["score.2.weight"] == (2, 64)
    assert any(name.startswith("model.layers.") for name in shapes)
    [result] = StepScorer.from_pretrained(prm).score(["1+1?"], ["One.\n\nTwo."])
    assert len(result.step_scores) == 2


    # A tiny PRM of every other kind, each detected (or, the token-logit one, loaded as named) by the real code.
    assert inspect_checkpoint(tmp_path / "prm-value-head").kind == "value_head"
    assert inspect_checkpoint(tmp_path / "prm-step-value-head").kind == "step_value_head"
    token_logit = load_scorer(tmp_path / "prm-token-logit", kind="token_logit", **TINY_TOKEN_LOGIT_TOKENS)
    assert len(token_logit.score(["1+1?"], ["One.\n\nTwo."])[0].step_scores) == 2
    assert "prm-token-logit: " + str(tmp_path / "prm-token-logit") + "  (token logit: --kind token_logit " \
        "--step-tag ки --good-token + --bad-token -)" in proc.stdout.splitlines()
