"""Candidates for ``reasonflux-rl bon`` sampled from a policy (``--policy``): ``n`` completions per problem on the
policy's chat template ([`generate_candidates`]), by the sampler of [`reasonflux_rl.tools.sampling`]."""

from __future__ import annotations

from collections.abc import Sequence

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.tools.sampling import load_sampler
from reasonflux_rl.trajectory import THINK_OPEN


def _prefill(prompt: str) -> str:
    # A template that opens the thinking in the prompt (R1-distill) leaves "<think>" out of the completion; putting
    # it back makes each saved candidate a self-contained completion for the PRM, the judge and a later --input run.
    return THINK_OPEN + "\n" if prompt.rstrip().endswith(THINK_OPEN) else ""


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

    The transformers backend samples one problem at a time (``n`` sequences per ``generate`` call) after
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
    from tqdm.auto import tqdm

    if n < 1:
        raise ConfigError(f"--n={n} must be >= 1")
    sampler = load_sampler(policy, backend=backend, temperature=temperature, top_p=top_p,
                           max_new_tokens=max_new_tokens, prompts_per_batch=1, seed=seed, device=device)
    prompts = [sampler.chat_prompt(p) for p in problems]
    with tqdm(total=len(prompts), desc="generating", unit="problem", disable=not progress) as bar:
        texts = sampler.sample(prompts, n, seed=seed, on_batch=lambda done: bar.update(done // n))
    return [[_prefill(prompt) + text for text in candidates] for prompt, candidates in zip(prompts, texts)]
