"""Sample continuations of prompts from a policy, with transformers or, when it is installed, vLLM's offline engine:
``bon``'s candidates and ``prm label --method mc``'s rollouts from step prefixes.

[`load_sampler`] opens a local policy checkpoint once (a path that holds none is a one-line error); its
``sample(prompts, n)`` returns ``n`` continuations of each prompt. The transformers sampler generates
``prompts_per_batch`` left-padded prompts per ``generate`` call (``n`` sequences each) after
``torch.manual_seed(seed)``; vLLM samples every prompt in one call.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from reasonflux_rl.errors import ConfigError

BACKENDS: tuple[str, ...] = ("auto", "transformers", "vllm")


def resolve_backend(backend: str) -> str:
    """``auto`` is vLLM when it can be imported, else transformers; asking for vLLM without it is an error.

    Example:
    ```python
    >>> from reasonflux_rl.tools.sampling import resolve_backend
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


class Sampler(Protocol):
    """What a loaded policy offers: its chat template, and ``n`` sampled continuations of each prompt."""

    def chat_prompt(self, problem: str) -> str:
        """The generation prompt of ``problem`` on the policy's chat template."""
        ...

    def sample(self, prompts: Sequence[str], n: int, *, seed: int = 0,
               on_batch: Callable[[int], None] | None = None) -> list[list[str]]:
        """``n`` continuations of each prompt; ``on_batch(k)`` after each ``k`` continuations are done."""
        ...


def check_policy(policy: str) -> None:
    """A clear error unless ``policy`` is a local checkpoint directory (with a ``config.json``): before any long work.

    Example:
    ```python
    >>> from reasonflux_rl.tools.sampling import check_policy
    >>> check_policy("/no/such/policy")
    Traceback (most recent call last):
    ...
    reasonflux_rl.errors.ConfigError: policy '/no/such/policy' is not a local checkpoint directory with a config.json

    ```
    """
    path = Path(policy)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ConfigError(f"policy {policy!r} is not a local checkpoint directory with a config.json")


def _chat_prompt(tokenizer: Any, problem: str, policy: str) -> str:
    if not tokenizer.chat_template:
        raise ConfigError(f"policy {policy!r} has no chat template; generation prompts are built with it")
    return tokenizer.apply_chat_template([{"role": "user", "content": problem}], tokenize=False,
                                         add_generation_prompt=True)


class TransformersSampler:
    """A policy sampled with transformers' ``generate`` (see the module docstring).

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.tools.sampling import TransformersSampler
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> sampler = TransformersSampler(str(write_tiny_models(tempfile.mkdtemp()).policy), max_new_tokens=4)
    >>> out = sampler.sample([sampler.chat_prompt("1+1?"), sampler.chat_prompt("2+2?")], 3)
    >>> len(out), len(out[0]), sampler.chat_prompt("1+1?").endswith("<think>\\n")
    (2, 3, True)

    ```
    """

    def __init__(self, policy: str, *, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 512,
                 prompts_per_batch: int = 16, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_policy(policy)
        if prompts_per_batch < 1:
            raise ConfigError(f"prompts_per_batch={prompts_per_batch} must be >= 1")
        self.policy = policy
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(policy)
            self.model = AutoModelForCausalLM.from_pretrained(policy, dtype="auto").to(self.device).eval()
        except (OSError, ValueError) as err:
            raise ConfigError(f"policy {policy!r} cannot be loaded as a causal LM: {str(err).splitlines()[0]}") from None
        self.tokenizer.padding_side = "left"
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (
            self.tokenizer.eos_token_id)
        self.options = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
        self.prompts_per_batch = prompts_per_batch

    def chat_prompt(self, problem: str) -> str:
        """The generation prompt of ``problem`` on the policy's chat template."""
        return _chat_prompt(self.tokenizer, problem, self.policy)

    def sample(self, prompts: Sequence[str], n: int, *, seed: int = 0,
               on_batch: Callable[[int], None] | None = None) -> list[list[str]]:
        """``n`` continuations of each prompt, ``prompts_per_batch`` prompts per ``generate`` call, in the order of
        the prompts' lengths: a batch generates until its longest continuation ends, and prompts of similar length
        (step prefixes of the same depth) tend to need continuations of similar length."""
        import torch

        torch.manual_seed(seed)
        order = sorted(range(len(prompts)), key=lambda k: len(prompts[k]))
        out: list[list[str]] = [[] for _ in prompts]
        for start in range(0, len(prompts), self.prompts_per_batch):
            rows = order[start : start + self.prompts_per_batch]
            batch = [prompts[k] for k in rows]
            inputs = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                ids = self.model.generate(**inputs, do_sample=True, top_k=None, num_return_sequences=n,
                                          pad_token_id=self.pad_id, **self.options)
            texts = self.tokenizer.batch_decode(ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for k, row in enumerate(rows):
                out[row] = texts[k * n : (k + 1) * n]
            if on_batch is not None:
                on_batch(len(texts))
        return out


class VLLMSampler:  # pragma: no cover
    """A policy sampled with vLLM's offline engine (``LLM.generate``), every prompt in one call.

    Untested here: vLLM is not installed where the tests run. Kept to the one documented ``LLM.generate`` call.
    """

    def __init__(self, policy: str, *, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 512,
                 seed: int = 0) -> None:
        from vllm import LLM

        check_policy(policy)
        self.policy = policy
        self.llm = LLM(model=policy, seed=seed)
        self.options = {"temperature": temperature, "top_p": top_p, "max_tokens": max_new_tokens}

    def chat_prompt(self, problem: str) -> str:
        return _chat_prompt(self.llm.get_tokenizer(), problem, self.policy)

    def sample(self, prompts: Sequence[str], n: int, *, seed: int = 0,
               on_batch: Callable[[int], None] | None = None) -> list[list[str]]:
        from vllm import SamplingParams

        results = self.llm.generate(list(prompts), SamplingParams(n=n, seed=seed, **self.options))
        if on_batch is not None:
            on_batch(n * len(prompts))
        return [[o.text for o in r.outputs] for r in results]


def load_sampler(policy: str, *, backend: str = "auto", temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int = 512, prompts_per_batch: int = 16, seed: int = 0,
                 device: str | None = None) -> Sampler:
    """The policy in ``policy`` (a local checkpoint) ready to sample, on the backend [`resolve_backend`] picks.

    Example:
    ```python
    >>> from reasonflux_rl.tools.sampling import load_sampler
    >>> try:
    ...     load_sampler("/no/such/policy", backend="transformers")
    ... except ValueError as err:
    ...     print(err)
    policy '/no/such/policy' is not a local checkpoint directory with a config.json

    ```
    """
    if resolve_backend(backend) == "vllm":  # pragma: no cover - vLLM is not installed where the tests run
        return VLLMSampler(policy, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    return TransformersSampler(policy, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                               prompts_per_batch=prompts_per_batch, device=device)
