"""Candidates for ``reasonflux-rl bon`` sampled from a policy (``--policy``): ``n`` completions per problem on the
policy's chat template, with transformers or, when it is installed, vLLM ([`generate_candidates`])."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.trajectory import THINK_OPEN

BACKENDS: tuple[str, ...] = ("auto", "transformers", "vllm")


def resolve_backend(backend: str) -> str:
    """``auto`` is vLLM when it can be imported, else transformers; asking for vLLM without it is an error.

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon_generate import resolve_backend
    >>> resolve_backend("transformers")
    'transformers'

    ```
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend={backend!r} is not one of {BACKENDS}")
    has_vllm = importlib.util.find_spec("vllm") is not None
    if backend == "auto":
        return "vllm" if has_vllm else "transformers"
    if backend == "vllm" and not has_vllm:
        raise ConfigError("--backend vllm: vllm cannot be imported; pip install vllm, or use --backend transformers")
    return backend


def _prefill(prompt: str) -> str:
    # A template that opens the thinking in the prompt (R1-distill) leaves "<think>" out of the completion; putting
    # it back makes each saved candidate a self-contained completion for the PRM, the judge and a later --input run.
    return THINK_OPEN + "\n" if prompt.rstrip().endswith(THINK_OPEN) else ""


def _chat_prompts(tokenizer: Any, problems: Sequence[str], policy: str) -> list[str]:
    if not tokenizer.chat_template:
        raise ConfigError(f"policy {policy!r} has no chat template; generation prompts are built with it")
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in problems
    ]


def _generate_transformers(policy: str, problems: Sequence[str], n: int, options: Mapping[str, Any]) -> list[list[str]]:
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(options["device"] or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = AutoTokenizer.from_pretrained(policy)
    prompts = _chat_prompts(tokenizer, problems, policy)
    model = AutoModelForCausalLM.from_pretrained(policy, dtype="auto").to(device).eval()
    torch.manual_seed(options["seed"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for prompt in tqdm(prompts, desc="generating", unit="problem", disable=not options["progress"]):
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(device)
        with torch.inference_mode():
            ids = model.generate(
                **inputs,
                do_sample=True,
                temperature=options["temperature"],
                top_p=options["top_p"],
                max_new_tokens=options["max_new_tokens"],
                num_return_sequences=n,
                pad_token_id=pad,
            )
        texts = tokenizer.batch_decode(ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        out.append([_prefill(prompt) + text for text in texts])
    return out


def _generate_vllm(  # pragma: no cover
    policy: str, problems: Sequence[str], n: int, options: Mapping[str, Any]
) -> list[list[str]]:
    # Untested: vLLM is not installed where the tests run. Kept to the one documented LLM.generate call.
    from vllm import LLM, SamplingParams

    llm = LLM(model=policy, seed=options["seed"])
    prompts = _chat_prompts(llm.get_tokenizer(), problems, policy)
    params = SamplingParams(
        n=n, temperature=options["temperature"], top_p=options["top_p"], max_tokens=options["max_new_tokens"],
        seed=options["seed"],
    )
    results = llm.generate(prompts, params)
    return [[_prefill(p) + o.text for o in r.outputs] for p, r in zip(prompts, results)]


def generate_candidates(
    policy: str,
    problems: Sequence[str],
    n: int,
    *,
    backend: str = "auto",
    max_new_tokens: int = 4096,
    temperature: float = 0.6,
    top_p: float = 0.95,
    seed: int = 0,
    device: str | None = None,
    progress: bool = False,
) -> list[list[str]]:
    """Sample ``n`` completions per problem from ``policy`` (a local checkpoint) on its chat template.

    The transformers backend samples one problem at a time (``num_return_sequences=n``) after
    ``torch.manual_seed(seed)``; vLLM, when installed, samples all problems in one call. A template that pre-fills
    ``<think>`` gets it put back at the start of each completion.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.tools.bon_generate import generate_candidates
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> policy = str(write_tiny_models(tempfile.mkdtemp()).policy)
    >>> out = generate_candidates(policy, ["1+1?"], 3, backend="transformers", max_new_tokens=4)
    >>> len(out), len(out[0]), out[0][0].startswith("<think>\\n")
    (1, 3, True)

    ```
    """
    if n < 1:
        raise ConfigError(f"--n={n} must be >= 1")
    options = {
        "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed,
        "device": device, "progress": progress,
    }
    generate = _generate_vllm if resolve_backend(backend) == "vllm" else _generate_transformers
    return generate(policy, problems, n, options)
