"""Reference computations the tests compare against, written the plain way the model cards describe: one sample
at a time, no batching, no truncation, the full model's own forward."""

from functools import lru_cache

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from reasonflux_rl.prm.kinds.step_classifier_model import Qwen2ForProcessRewardModel

# The model card's system prompt, written out here so that a change to the implementation's default cannot move the
# reference with it.
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def reference_step_scores(path, problem, steps):
    """The model card's recipe, one sample at a time: chat template, <extra_0> after each step, softmax at tags."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = Qwen2ForProcessRewardModel.from_pretrained(path, dtype=torch.float32).eval()
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
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


@lru_cache(maxsize=4)
def _causal_lm(path):
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return tokenizer, model


def _value_head(path, model):
    head = torch.nn.Linear(model.config.hidden_size, 1)
    head.load_state_dict(torch.load(f"{path}/reward_head.pt", weights_only=True))
    return head


def reference_value_head_forward(path, input_ids, attention_mask):
    """ReasonFlux-PRM-1.5B's RewardModel.forward: the causal LM's decoder, last layer's hidden states, the row
    at ``attention_mask.sum(dim=1) - 1`` (so right padding only), reward head, sigmoid."""
    _, model = _causal_lm(path)
    head = _value_head(path, model)
    with torch.no_grad():
        output = model.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                             return_dict=True)
        hidden = output.hidden_states[-1]
        last = attention_mask.sum(dim=1) - 1
        return torch.sigmoid(head(hidden[torch.arange(hidden.size(0)), last]).squeeze(-1)).tolist()


def reference_value_head_score(path, problem, completion):
    """The ReasonFlux-PRM-1.5B card, one sample: tokenizer(problem + completion, truncation=True, max_length=2048)."""
    tokenizer, _ = _causal_lm(path)
    encoded = tokenizer(problem + completion, return_tensors="pt", padding=True, truncation=True, max_length=2048)
    [score] = reference_value_head_forward(path, encoded["input_ids"], encoded["attention_mask"])
    return score


def reference_token_logit_scores(path, problem, steps, step_tag, good_token, bad_token):
    """The Math-Shepherd card, one sample: f"{question} {output}" with " <tag>" ending each line-separated step;
    softmax over the (good, bad) logits at every tag position, the good one's probability."""
    tokenizer, model = _causal_lm(path)
    candidates = [tokenizer.encode(good_token, add_special_tokens=False)[0],
                  tokenizer.encode(bad_token, add_special_tokens=False)[0]]
    tag_id = tokenizer.encode(step_tag, add_special_tokens=False)[-1]
    output = "\n".join(f"{step} {step_tag}" for step in steps)
    input_ids = torch.tensor([tokenizer.encode(f"{problem} {output}")])
    with torch.no_grad():
        logits = model(input_ids).logits[:, :, candidates]
    scores = logits.softmax(dim=-1)[:, :, 0]
    return scores[input_ids == tag_id].tolist()


def reference_step_value_head_scores(path, problem, response, step_token="\n"):
    """Skywork-o1-Open-PRM's inference code, one sample. prepare_input: BOS + problem + "\n" tokenised, then each
    piece of response.split(step_token) tokenised on its own with the step token's id after it, that position
    flagged; the causal LM's last hidden states (output_hidden_states, [-1]); the value head v_head.summary; sigmoid
    (return_probs=True) at the flagged positions (derive_step_rewards)."""
    tokenizer, model = _causal_lm(path)
    weights = load_file(f"{path}/model.safetensors")
    head = torch.nn.Linear(model.config.hidden_size, 1)
    head.load_state_dict({"weight": weights["v_head.summary.weight"], "bias": weights["v_head.summary.bias"]})
    input_ids = tokenizer.encode(tokenizer.bos_token + problem + "\n")
    flags = [0] * len(input_ids)
    step_id = tokenizer.encode(step_token)[-1]
    for step in response.split(step_token):
        # Skywork's code handles an empty piece in two ways (a lone step token, or the end); the inputs here have none.
        assert step, "the reference takes responses without empty steps"
        step_ids = tokenizer.encode(step) + [step_id]
        input_ids += step_ids
        flags += [0] * (len(step_ids) - 1) + [1]
    with torch.no_grad():
        hidden = model(torch.tensor([input_ids]), output_hidden_states=True).hidden_states[-1]
        values = torch.sigmoid(head(hidden).squeeze(-1))[0]
    return values[torch.tensor(flags) == 1].tolist()
