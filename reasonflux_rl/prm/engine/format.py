"""Turn (problem, completion) pairs into the text a step-classifier PRM reads.

The layout follows the ReasonFlux-PRM-7B / Qwen2.5-Math-PRM model cards: the checkpoint's own chat template over
``[system, user: problem, assistant: step_1<extra_0>step_2<extra_0>...step_n<extra_0>]``; the PRM's step reward is
read at each ``<extra_0>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from reasonflux_rl.trajectory import step_spans, trajectory_regions

if TYPE_CHECKING:
    # Only annotations name it: the option declarations import this module (PARTS), and the reward formula imports
    # them and stays free of transformers.
    from transformers import PreTrainedTokenizerBase

STEP_TAG = "<extra_0>"
DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
Parts = Literal["both", "thinking", "response"]
PARTS: tuple[str, ...] = ("both", "thinking", "response")


def trajectory_steps(
    completion: str, parts: Parts = "both", max_steps: int | None = None, thinking_prefilled: bool = False
) -> list[str]:
    """The steps of a completion that the PRM scores: thinking steps, then response steps (blank-line separated).

    ``parts`` picks the thinking trajectory (before the last ``</think>``), the final response, or both (the paper's
    default). With ``max_steps``, steps past the cap are merged into the last kept step, so the number of step tags,
    and so the PRM's work per sample, stays bounded while no text is lost. ``thinking_prefilled`` says the prompt
    opened the thinking (DeepSeek-R1-Distill), so a completion without ``</think>`` is all thinking, cut off.

    Example:
    ```python
    >>> from reasonflux_rl.prm.engine.format import trajectory_steps
    >>> c = "<think>\\nTry x=2.\\n\\nWait, x=3.\\n</think>\\n\\nSo $x=\\\\boxed{3}$."
    >>> trajectory_steps(c)
    ['Try x=2.', 'Wait, x=3.', 'So $x=\\\\boxed{3}$.']
    >>> trajectory_steps(c, parts="response")
    ['So $x=\\\\boxed{3}$.']
    >>> trajectory_steps(c, max_steps=2)
    ['Try x=2.', 'Wait, x=3.\\n\\nSo $x=\\\\boxed{3}$.']
    >>> trajectory_steps("Try x=2.\\n\\nWait", parts="thinking", thinking_prefilled=True)
    ['Try x=2.', 'Wait']

    ```
    """
    return located_steps(completion, parts, max_steps, thinking_prefilled)[0]


def trajectory_step_spans(
    completion: str, parts: Parts = "both", max_steps: int | None = None, thinking_prefilled: bool = False
) -> list[tuple[int, int]]:
    """The character span in ``completion`` of each step [`trajectory_steps`] returns (a merged tail step spans from
    the first merged step to the last). This is how a step's score finds the policy tokens it judges.

    Example:
    ```python
    >>> from reasonflux_rl.prm.engine.format import trajectory_step_spans
    >>> c = "<think>\\nTry x=2.\\n\\nWait, x=3.\\n</think>\\n\\nSo $x=\\\\boxed{3}$."
    >>> [c[s:e] for s, e in trajectory_step_spans(c)]
    ['Try x=2.', 'Wait, x=3.', 'So $x=\\\\boxed{3}$.']
    >>> trajectory_step_spans(c, max_steps=2)
    [(8, 16), (18, 56)]

    ```
    """
    return located_steps(completion, parts, max_steps, thinking_prefilled)[1]


def located_steps(
    completion: str, parts: Parts = "both", max_steps: int | None = None, thinking_prefilled: bool = False
) -> tuple[list[str], list[tuple[int, int]]]:
    """[`trajectory_steps`] and [`trajectory_step_spans`] from one split, for a scorer that needs both.

    Example:
    ```python
    >>> from reasonflux_rl.prm.engine.format import located_steps
    >>> located_steps("A.\\n\\nB.\\n\\nC.", max_steps=2)
    (['A.', 'B.\\n\\nC.'], [(0, 2), (4, 10)])

    ```
    """
    spans = _step_spans(completion, parts, thinking_prefilled)
    steps = [completion[s:e] for s, e in spans]
    if max_steps is not None and len(spans) > max_steps:
        steps = steps[: max_steps - 1] + ["\n\n".join(steps[max_steps - 1 :])]
        spans = spans[: max_steps - 1] + [(spans[max_steps - 1][0], spans[-1][1])]
    return steps, spans


def _step_spans(completion: str, parts: Parts, thinking_prefilled: bool) -> list[tuple[int, int]]:
    if parts not in PARTS:
        raise ValueError(f"parts={parts!r} is not one of {PARTS}")
    thinking, response = trajectory_regions(completion, thinking_prefilled)
    spans: list[tuple[int, int]] = []
    if parts in ("both", "thinking"):
        spans += step_spans(completion, *thinking)
    if parts in ("both", "response"):
        spans += step_spans(completion, *response)
    return spans


def format_steps(
    tokenizer: PreTrainedTokenizerBase,
    problem: str,
    steps: list[str],
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    step_tag: str = STEP_TAG,
) -> str:
    """Render a problem and its steps with the PRM tokenizer's chat template, one ``step_tag`` after every step.

    A step tag that appears inside the policy's own text is removed first: it would otherwise add a score position
    that belongs to no step.

    Example:
    ```python
    >>> from reasonflux_rl.prm.engine.format import format_steps
    >>> from reasonflux_rl.tiny import build_tokenizer
    >>> tok = build_tokenizer()
    >>> print(format_steps(tok, "1+1?", ["1+1=2.", "The answer is 2."], system_prompt=None))
    <|im_start|>user
    1+1?<|im_end|>
    <|im_start|>assistant
    1+1=2.<extra_0>The answer is 2.<extra_0><|im_end|>
    <BLANKLINE>

    ```
    """
    clean = [step.replace(step_tag, "") for step in steps]
    messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    messages += [
        {"role": "user", "content": problem},
        {"role": "assistant", "content": step_tag.join(clean) + step_tag},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)


def format_tagged_text(problem: str, steps: list[str], step_tag: str) -> str:
    """The Math-Shepherd layout, no chat template: ``problem``, a space, then one line per step ending in the tag.

    As in ``f"{question} {output}"`` of the Math-Shepherd card, where every step of ``output`` ends with
    `` ки``. A step tag inside the policy's own text is removed first, as in [`format_steps`].

    Example:
    ```python
    >>> from reasonflux_rl.prm.engine.format import format_tagged_text
    >>> print(format_tagged_text("1+1?", ["1+1=2.", "So 2. ки"], "ки"))
    1+1? 1+1=2. ки
    So 2.  ки

    ```
    """
    return problem + " " + "\n".join(f"{step.replace(step_tag, '')} {step_tag}" for step in steps)
