"""The judge of step quality behind any OpenAI-compatible chat endpoint (``vllm serve``, a hosted API), for
``prm label --method reasonflux``: concurrent requests with the retries, cooldowns and deadline of
[`~reasonflux_rl.prm.placement.rotation`].

Two ways to read an answer (``answer``):

- ``logprobs``: the first answer token's top log-probabilities (``max_tokens: 1``, ``temperature: 0``,
  ``top_logprobs: 20``); the rating is ``P(yes) / (P(yes) + P(no))`` over the listed tokens that read as ``yes`` or
  ``no`` once stripped (a token missing from the list counts 0). A list with neither is an error: the prompt or the
  answer words do not fit the model.
- ``grade``: a grade from 0 to 10 asked with ``grade_prompt`` and read from the answer text (the first whole number
  from 0 to 10), over 10. An answer with no grade is asked again (a counted retry), and when the retries are spent
  the run stops with the answers it got: never a silent zero.

``auto`` (the default) reads log-probabilities and moves to grades for the rest of the run, once, when the server's
first answer carries none (hosted APIs that do not give them).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasonflux_rl.prm.placement.rotation import Retryable, ServerError, ServerRotation, ServerUnavailableError
from reasonflux_rl.prm_training.reasonflux_targets import QUALITY_PROMPT, StepQuery, fill_prompt, read_prompt

logger = logging.getLogger(__name__)

ANSWERS: tuple[str, ...] = ("auto", "logprobs", "grade")
GRADE_PROMPT = Path(__file__).with_name("step_grade_prompt.txt")
GRADE = re.compile(r"\b(10|[0-9])\b")
TOP_LOGPROBS = 20


class JudgeServerError(ServerError):
    """A judge server answered something that cannot be used."""


class JudgeUnavailableError(JudgeServerError, ServerUnavailableError):
    """No judge server answered in time, or every answer to a step was without a grade."""


class ChatJudge(ServerRotation):
    """A [`~reasonflux_rl.prm_training.reasonflux_targets.StepJudge`] on the ``/v1/chat/completions`` endpoint of one
    or more servers: each step is one request of one user message, ``prompt`` (or ``grade_prompt``) filled with the
    step's problem, steps before, step and response.

    Args:
        urls: base URLs of the servers, e.g. ``["http://judge-node:8000"]``.
        model: the served model name; ``None`` asks the first server's ``/v1/models`` (it must serve one).
        prompt, grade_prompt: the prompt files of each way of answering (see the module docstring).
        yes, no: the answer words of ``prompt``.
        answer: ``auto``, ``logprobs`` or ``grade``.
        **rotation: ``max_inflight``, ``timeout``, ``retries``, ``deadline``, ... of
            [`~reasonflux_rl.prm.placement.rotation.ServerRotation`].

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.chat_judge import ChatJudge, JudgeUnavailableError
    >>> from reasonflux_rl.prm_training.reasonflux_targets import StepQuery
    >>> judge = ChatJudge(["http://127.0.0.1:9"], model="judge", retries=0, deadline=5)
    >>> try:
    ...     judge.rate([StepQuery("1+1?", (), "It is 2.", "So 2.")])
    ... except JudgeUnavailableError as err:
    ...     print(str(err).split(":")[0])
    no judge server answered a request after 1 attempts
    >>> judge.close()

    ```
    """

    what = "judge server"
    server_error = JudgeServerError
    unavailable_error = JudgeUnavailableError

    def __init__(self, urls: Sequence[str], model: str | None = None, *, prompt: str | Path = QUALITY_PROMPT,
                 grade_prompt: str | Path = GRADE_PROMPT, yes: str = "Yes", no: str = "No", answer: str = "auto",
                 **rotation: float) -> None:
        if answer not in ANSWERS:
            raise ValueError(f"answer={answer!r} is not one of {list(ANSWERS)}")
        super().__init__(urls, **rotation)  # type: ignore[arg-type]
        self.templates = {"logprobs": read_prompt(prompt), "grade": read_prompt(grade_prompt)}
        self.words = (yes.strip(), no.strip())
        self.answer = answer
        self._model = model
        self._model_lock = threading.Lock()

    @property
    def model(self) -> str:
        """The served model name: given, or the one model the first server lists."""
        with self._model_lock:
            if self._model is None:
                served = list(self.served_models(self.servers[0].url))
                if len(served) != 1:
                    raise JudgeServerError(f"{self.servers[0].url} serves {served}: name the judge model")
                self._model = served[0]
            return self._model

    def rate(self, queries: Sequence[StepQuery]) -> list[float]:
        """Each query's probability that its step is right, in order (one request per query, concurrently)."""
        if not queries:
            return []
        ratings = [self._first(queries[0])] if self.answer == "auto" else []
        rest = queries[len(ratings):]
        return ratings + self.call_all([lambda deadline, q=q: self._rate(q, self.answer, deadline) for q in rest])

    def write(self, prompts: Sequence[str], max_tokens: int) -> list[str]:
        """The judge's answer to each of ``prompts`` (one user message each, temperature 0, at most ``max_tokens``
        tokens), concurrently: the template writer of ``trajectory_target: template``."""
        def ask(prompt: str, deadline: float) -> str:
            body = {"model": self.model, "temperature": 0.0, "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": prompt}]}
            return self.call("/v1/chat/completions", body, lambda answer, url: _content(answer, url), deadline)

        return self.call_all([lambda deadline, p=p: ask(p, deadline) for p in prompts])

    def _first(self, query: StepQuery) -> float:
        """The first rating of an ``auto`` judge, which settles how it reads answers from then on."""
        rating = self.call_all([lambda deadline: self._rate(query, "auto", deadline)])[0]
        if self.answer == "auto":
            self.answer = "logprobs"
        return rating

    def _rate(self, query: StepQuery, answer: str, deadline: float) -> float:
        way = "grade" if answer == "grade" else "logprobs"
        body: dict[str, Any] = {"model": self.model, "temperature": 0.0,
                                "messages": [{"role": "user", "content": fill_prompt(self.templates[way], query)}]}
        if way == "logprobs":
            body.update(max_tokens=1, logprobs=True, top_logprobs=TOP_LOGPROBS)
        else:
            body["max_tokens"] = 8
        try:
            return self.call("/v1/chat/completions", body, lambda a, url: self._read(a, url, way), deadline)
        except _NoLogprobs:
            if answer != "auto":
                raise JudgeServerError("the judge server gives no logprobs: use judge_answer grade (or auto)") from None
            logger.warning("the judge server gives no logprobs: its steps are rated by a parsed 0-10 grade from now on")
            self.answer = "grade"
            return self._rate(query, "grade", deadline)

    def _read(self, answer: Any, url: str, way: str) -> float:
        content = _content(answer, url)
        choice = answer["choices"][0]
        if way == "grade":
            found = GRADE.search(content)
            if found is None:
                raise Retryable(f"the answer holds no grade from 0 to 10: {content[:80]!r}")
            return int(found.group(1)) / 10
        tokens = ((choice.get("logprobs") or {}).get("content") or [None])[0]
        if not tokens or not tokens.get("top_logprobs"):
            raise _NoLogprobs
        mass = {word: 0.0 for word in self.words}
        for entry in tokens["top_logprobs"]:
            word = str(entry.get("token", "")).strip()
            if word in mass and isinstance(entry.get("logprob"), int | float):
                mass[word] += math.exp(entry["logprob"])
        yes, no = (mass[w] for w in self.words)
        if yes + no == 0:
            listed = [e.get("token") for e in tokens["top_logprobs"]][:8]
            raise JudgeServerError(f"the judge's first answer tokens {listed} hold neither {self.words[0]!r} nor "
                                   f"{self.words[1]!r}: change the prompt or judge_yes/judge_no")
        return yes / (yes + no)


def _content(answer: Any, url: str) -> str:
    """The text of a chat answer's first choice, or why there is none."""
    try:
        return answer["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError) as err:
        raise JudgeServerError(f"{url}/v1/chat/completions answered without choices[0].message ({err!r}): "
                               f"{str(answer)[:120]}") from None


class _NoLogprobs(Exception):
    """An answer without log-probabilities."""
