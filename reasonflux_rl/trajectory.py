"""Split a reasoning-model completion into its thinking trajectory, final response and steps.

R1-style completions look like ``<think>\\n ... thinking ... \\n</think>\\n\\n final response``. Under the
DeepSeek-R1-Distill chat template the ``<think>\\n`` is pre-filled in the prompt, so the completion holds only the
closing ``</think>``. Both forms are handled: the trajectory is everything before the *last* ``</think>`` (with a
leading ``<think>`` removed), the response everything after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

_BLANK_LINE = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class Trajectory:
    """A completion split at its last ``</think>``.

    Attributes:
        thinking: the thinking trajectory (without the ``<think>``/``</think>`` markers); empty if there was none.
        response: the final response after the last ``</think>``; when the thinking was never closed this is empty.
        closed: whether the completion closed its thinking (``</think>`` present). A completion cut at the length
            limit inside its thinking has ``closed=False``.
        had_think_tag: whether a ``</think>`` or ``<think>`` tag appeared at all. A completion with neither is a
            plain (non-reasoning) answer and ``response`` holds the whole text.
    """

    thinking: str
    response: str
    closed: bool
    had_think_tag: bool


def trajectory_regions(completion: str, thinking_prefilled: bool = False) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where the thinking trajectory and the final response lie in ``completion``: two ``(start, end)`` character
    spans, unstripped, without the think tags (see [`split_trajectory`] for the rules).

    Example:
    ```python
    >>> from reasonflux_rl.trajectory import trajectory_regions
    >>> c = "<think>\\nTry 2+2.\\n</think>\\n\\n4"
    >>> thinking, response = trajectory_regions(c)
    >>> c[slice(*thinking)], c[slice(*response)]
    ('\\nTry 2+2.\\n', '\\n\\n4')

    ```
    """
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a str, got {type(completion).__name__}")
    end = len(completion)
    cut = completion.rfind(THINK_CLOSE)
    if cut < 0:
        if THINK_OPEN in completion:
            return (completion.index(THINK_OPEN) + len(THINK_OPEN), end), (end, end)
        return ((0, end), (end, end)) if thinking_prefilled else ((0, 0), (0, end))
    open_at = completion.find(THINK_OPEN, 0, cut)
    start = 0 if open_at < 0 else open_at + len(THINK_OPEN)
    return (start, cut), (cut + len(THINK_CLOSE), end)


def split_trajectory(completion: str, thinking_prefilled: bool = False) -> Trajectory:
    """Split ``completion`` into thinking trajectory and final response at the last ``</think>``.

    ``thinking_prefilled`` says the prompt already opened the thinking (the DeepSeek-R1-Distill template ends its
    generation prompt with ``<think>``): a completion without ``</think>`` is then thinking cut at the length limit,
    not a plain answer.

    Example:
    ```python
    >>> from reasonflux_rl.trajectory import split_trajectory
    >>> t = split_trajectory("<think>\\nTry 2+2.\\n\\nIt is 4.\\n</think>\\n\\nThe answer is $\\\\boxed{4}$.")
    >>> t.thinking, t.response, t.closed
    ('Try 2+2.\\n\\nIt is 4.', 'The answer is $\\\\boxed{4}$.', True)
    >>> split_trajectory("Let me think (the R1-distill template pre-fills <think>)\\n</think>\\n42").response
    '42'
    >>> split_trajectory("<think>\\nstill thinking when the length limit hit").closed
    False
    >>> split_trajectory("no tag: a plain answer").closed, split_trajectory("cut mid-thought", True).closed
    (True, False)

    ```
    """
    thinking, response = trajectory_regions(completion, thinking_prefilled)
    closed = THINK_CLOSE in completion or (THINK_OPEN not in completion and not thinking_prefilled)
    return Trajectory(
        thinking=completion[slice(*thinking)].strip(),
        response=completion[slice(*response)].strip(),
        closed=closed,
        had_think_tag=THINK_CLOSE in completion or THINK_OPEN in completion,
    )


def step_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Character spans of the steps of ``text[start:end]``: split on blank lines, each stripped, empty ones dropped.

    ``text[s:e]`` for each span is exactly what [`split_steps`] returns, located in ``text``.

    Example:
    ```python
    >>> from reasonflux_rl.trajectory import step_spans
    >>> step_spans("  One.\\n\\nTwo.\\n \\n")
    [(2, 6), (8, 12)]

    ```
    """
    end = len(text) if end is None else end
    spans = []
    piece_start = start
    for separator in [*_BLANK_LINE.finditer(text, start, end), None]:
        piece_end = end if separator is None else separator.start()
        piece = text[piece_start:piece_end]
        stripped = piece.strip()
        if stripped:
            first = piece_start + len(piece) - len(piece.lstrip())
            spans.append((first, first + len(stripped)))
        if separator is not None:
            piece_start = separator.end()
    return spans


def split_steps(text: str) -> list[str]:
    """Split text into steps on blank lines, dropping empty steps (the ReasonFlux-PRM convention).

    Example:
    ```python
    >>> from reasonflux_rl.trajectory import split_steps
    >>> split_steps("Step one.\\n\\n\\n  \\nStep two.\\n \\nStep three.")
    ['Step one.', 'Step two.', 'Step three.']

    ```
    """
    return [text[s:e] for s, e in step_spans(text)]


def completion_text(completion: str | list[dict]) -> str:
    """Return the text of a TRL completion, plain (``str``) or conversational (``[{"role", "content"}]``).

    Example:
    ```python
    >>> from reasonflux_rl.trajectory import completion_text
    >>> completion_text([{"role": "assistant", "content": "4"}]), completion_text("4")
    ('4', '4')

    ```
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        if isinstance(content, str):
            return content
    raise TypeError(
        "a completion must be a string or a conversational list of messages whose last message has string "
        f"'content'; got {type(completion).__name__}: {str(completion)[:80]!r}"
    )


def prompt_text(prompt: str | list[dict]) -> str:
    """Return the problem text of a TRL prompt: the string itself, or the last user message of a conversation.

    Example:
    ```python
    >>> from reasonflux_rl.trajectory import prompt_text
    >>> prompt_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}])
    '1+1?'

    ```
    """
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        for message in reversed(prompt):
            if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
                return message["content"]
    raise TypeError(f"a prompt must be a string or a list of chat messages with a user turn; got {str(prompt)[:80]!r}")
