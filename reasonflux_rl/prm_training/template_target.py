"""ReasonFlux-PRM's template-guided trajectory target (arXiv 2506.18896, sec. 4.2), as ``prm label
--trajectory_target template`` makes it.

For each trajectory-response pair: a judge writes the high-level template of its reasoning (``template_prompt``,
default [`TEMPLATE_PROMPT`], filled with the problem, the thinking and the response); the policy answers the problem
``rollouts`` times with the template in its prompt ([`GUIDED_PROMPT`]: the problem, then the plan); the target is the
fraction of those answers the package's outcome reward judges right against the gold. A template that leads the
policy to the answer marks a trajectory whose reasoning generalises, whether or not its own answer was right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from reasonflux_rl.prm_training.fields import LabelledPair
from reasonflux_rl.prm_training.labels import Judge, judged_text
from reasonflux_rl.prm_training.reasonflux_targets import fill, read_prompt
from reasonflux_rl.trajectory import split_trajectory

TEMPLATE_PROMPT = Path(__file__).with_name("template_prompt.txt")
GUIDED_PROMPT = Path(__file__).with_name("template_guided_prompt.txt")


class Writer(Protocol):
    """Writes text: ``write(prompts, max_tokens)`` gives one answer per prompt (a user message), greedily."""

    def write(self, prompts: Sequence[str], max_tokens: int) -> list[str]:
        ...


class Sampler(Protocol):
    """A policy: its generation prompt of a problem, and ``n`` samples of each prompt."""

    def chat_prompt(self, problem: str) -> str:
        ...

    def sample(self, prompts: Sequence[str], n: int, *, seed: int = 0,
               on_batch: Callable[[int], None] | None = None) -> list[list[str]]:
        ...


def template_targets(pairs: Sequence[LabelledPair], writer: Writer, sampler: Sampler, judge: Judge, *,
                     rollouts: int, template_prompt: str | Path = TEMPLATE_PROMPT,
                     guided_prompt: str | Path = GUIDED_PROMPT, max_template_tokens: int = 512, seed: int = 0,
                     thinking_prefilled: bool = False) -> tuple[list[float], list[str]]:
    """Each pair's template-guided target (see the module docstring) and its template: the templates are written
    in one ``writer.write`` call, the guided answers sampled in one ``sampler.sample`` call (seeded ``seed``), all
    judged in one ``judge(completions, golds)`` call.

    Example (a judge that writes one plan, a policy whose answers are fixed):
    ```python
    >>> from reasonflux_rl.prm_training.fields import LabelledPair
    >>> from reasonflux_rl.prm_training.template_target import template_targets
    >>> class Plan:
    ...     def write(self, prompts, max_tokens):
    ...         return ["Add the numbers."] * len(prompts)
    >>> class Policy:
    ...     def chat_prompt(self, problem):
    ...         return f"<user>{problem}<assistant>"
    ...     def sample(self, prompts, n, *, seed=0, on_batch=None):
    ...         return [["\\\\boxed{2}", "\\\\boxed{3}", "\\\\boxed{2}", "\\\\boxed{2}"][:n] for _ in prompts]
    >>> judge = lambda texts, golds: [float(t.endswith("{" + g + "}")) for t, g in zip(texts, golds)]
    >>> pair = LabelledPair(0, "1+1?", "Add.\\n</think>\\n\\n\\\\boxed{3}", gold="2")
    >>> template_targets([pair], Plan(), Policy(), judge, rollouts=4)
    ([0.75], ['Add the numbers.'])

    ```
    """
    asking = read_prompt(template_prompt, ("problem", "thinking", "response"))
    guiding = read_prompt(guided_prompt, ("problem", "template"))
    parts = [split_trajectory(pair.completion, thinking_prefilled) for pair in pairs]
    templates = writer.write([fill(asking, problem=str(pair.problem), thinking=part.thinking.strip(),
                                   response=part.response.strip()) for pair, part in zip(pairs, parts)],
                             max_template_tokens)
    if len(templates) != len(pairs):
        raise RuntimeError(f"the judge wrote {len(templates)} templates for {len(pairs)} rows")
    prompts = [sampler.chat_prompt(fill(guiding, problem=str(pair.problem), template=template.strip()))
               for pair, template in zip(pairs, templates)]
    answers = sampler.sample(prompts, rollouts, seed=seed)
    if len(answers) != len(pairs) or any(len(a) != rollouts for a in answers):
        raise RuntimeError(f"the policy gave {[len(a) for a in answers]} answers for {len(pairs)} rows x {rollouts}")
    scores = judge([judged_text(pair, text, thinking_prefilled) for pair, texts in zip(pairs, answers)
                    for text in texts], [pair.gold for pair in pairs for _ in range(rollouts)])
    return ([sum(s == 1.0 for s in scores[k * rollouts:(k + 1) * rollouts]) / rollouts for k in range(len(pairs))],
            list(templates))
