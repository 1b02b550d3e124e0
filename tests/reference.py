"""Reference computations the tests compare against, written the plain way the model cards describe."""

import torch
from transformers import AutoTokenizer

from reasonflux_rl.prm.format import DEFAULT_SYSTEM_PROMPT
from reasonflux_rl.prm.model import Qwen2ForProcessRewardModel


def reference_step_scores(path, problem, steps):
    """The model card's recipe, one sample at a time: chat template, <extra_0> after each step, softmax at tags."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = Qwen2ForProcessRewardModel.from_pretrained(path, dtype=torch.float32).eval()
    messages = [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": problem},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    input_ids = tokenizer.encode(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=input_ids)
    probabilities = torch.softmax(logits, dim=-1)
    mask = input_ids == tokenizer.convert_tokens_to_ids("<extra_0>")
    return probabilities[mask][:, 1].tolist()
