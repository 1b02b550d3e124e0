"""Which input fields hold a row's problem, its trajectory-response text, its gold answer and its targets, and the
checked [`LabelledPair`] a row gives.

Three layouts are recognised without any flag ([`detect_fields`]):

- ours and ``score``'s: ``problem`` + ``completion`` (thinking and response split at the last ``</think>``);
- OpenThoughts-114K's ``metadata`` config: ``problem`` + ``deepseek_reasoning`` (the thinking) +
  ``deepseek_solution`` (the response), gold in ``ground_truth_solution``;
- TRL's stepwise supervision (PRM800K and Math-Shepherd as ``trl-lib`` ships them): ``prompt`` + ``completions`` (a
  list of steps, joined with blank lines into one response) + ``labels`` (one bool per step).

A field named explicitly wins over the detected one. Steps are always the scorer's own: the thinking's and then the
response's blank-line paragraphs ([`~reasonflux_rl.prm.engine.format.located_steps`]), so a target list is checked
against exactly the steps the PRM will read.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.engine.format import located_steps
from reasonflux_rl.rewards.outcome import gold_text
from reasonflux_rl.tools.pipeline import InputRows, load_input, parse_input
from reasonflux_rl.tools.rows import Fields, Pair, columns, row_pair, text_field
from reasonflux_rl.trajectory import prompt_text

STEP_TARGETS = "step_targets"
TRAJECTORY_TARGET = "trajectory_target"
# (field, what it holds) in the order they are looked for.
_PROBLEMS = ("problem", "prompt", "question")
_GOLDS = ("solution", "ground_truth_solution", "answer")
_STEP_TARGET_FIELDS = (STEP_TARGETS, "labels")


@dataclass(frozen=True)
class TrajectoryFields:
    """The fields of a row: ``problem``; its text as one ``completion``, as ``thinking`` + ``response``, or as a list
    of ``steps``; the ``gold`` answer; the given ``step_targets`` and ``trajectory_target`` (``None``: not read).

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.fields import TrajectoryFields
    >>> TrajectoryFields(thinking="deepseek_reasoning", response="deepseek_solution").text_fields()
    ('problem', 'deepseek_reasoning', 'deepseek_solution')

    ```
    """

    problem: str = "problem"
    completion: str | None = None
    thinking: str | None = None
    response: str | None = None
    steps: str | None = None
    gold: str | None = None
    step_targets: str | None = None
    trajectory_target: str | None = None

    def __post_init__(self) -> None:
        given = [self.completion is not None, self.thinking is not None or self.response is not None,
                 self.steps is not None]
        if sum(given) != 1:
            raise ConfigError("name one text layout: completion_field, or thinking_field with response_field, or "
                              "steps_field")
        if (self.thinking is None) != (self.response is None):
            raise ConfigError("thinking_field and response_field go together")

    def text_fields(self) -> tuple[str, ...]:
        """The fields whose text the PRM reads, problem first."""
        parts = (self.completion,) if self.completion else (self.steps,) if self.steps else (self.thinking,
                                                                                              self.response)
        return (self.problem, *parts)  # type: ignore[return-value]

    def required(self) -> tuple[str, ...]:
        """Every field a row must have."""
        optional = (self.gold, self.step_targets, self.trajectory_target)
        return self.text_fields() + tuple(name for name in optional if name is not None)


def detect_fields(columns: Collection[str], **named: str | None) -> TrajectoryFields:
    """The [`TrajectoryFields`] of an input with ``columns``: the fields ``named`` explicitly (keywords of
    [`TrajectoryFields`]; ``None`` is not named), the rest detected from the known layouts (see the module
    docstring). The targets are detected only when named as ``"auto"``.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.fields import detect_fields
    >>> openthoughts = ["problem", "deepseek_reasoning", "deepseek_solution", "ground_truth_solution", "domain"]
    >>> fields = detect_fields(openthoughts)
    >>> fields.thinking, fields.response, fields.gold
    ('deepseek_reasoning', 'deepseek_solution', 'ground_truth_solution')
    >>> stepwise = detect_fields(["prompt", "completions", "labels"], step_targets="auto")
    >>> stepwise.problem, stepwise.steps, stepwise.step_targets, stepwise.gold
    ('prompt', 'completions', 'labels', None)
    >>> detect_fields(["question", "completion"], gold="final").gold
    'final'

    ```
    """
    present = set(columns)
    chosen = {key: value for key, value in named.items() if value is not None and value != "auto"}
    if not {"completion", "thinking", "response", "steps"} & set(chosen):
        if "completion" in present:
            chosen["completion"] = "completion"
        elif {"deepseek_reasoning", "deepseek_solution"} <= present:
            chosen.update(thinking="deepseek_reasoning", response="deepseek_solution")
        elif "completions" in present:
            chosen["steps"] = "completions"
        else:
            raise ConfigError(
                f"cannot tell which fields hold the trajectory: the input's fields are {sorted(present)}; name "
                "completion_field, thinking_field and response_field, or steps_field"
            )
    chosen.setdefault("problem", next((name for name in _PROBLEMS if name in present), "problem"))
    if "gold" not in chosen:
        chosen["gold"] = next((name for name in _GOLDS if name in present), None)
    if named.get("step_targets") == "auto":
        found = next((name for name in _STEP_TARGET_FIELDS if name in present), None)
        if found is None:
            raise ConfigError(f"no step targets in the input: name step_targets_field (looked for "
                              f"{list(_STEP_TARGET_FIELDS)}; the input's fields are {sorted(present)})")
        chosen["step_targets"] = found
    if named.get("trajectory_target") == "auto":
        chosen["trajectory_target"] = TRAJECTORY_TARGET
    return TrajectoryFields(**chosen)


@dataclass(frozen=True)
class LabelledPair(Pair):
    """A usable row: the [`~reasonflux_rl.tools.rows.Pair`] the scorer reads, its ``steps`` as the scorer splits
    them, its ``gold`` answer, and the targets the input gave (``None`` where it gave none; a step target may be
    ``None``, that step then has no target).

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.fields import LabelledPair
    >>> LabelledPair(0, "1+1?", "2", steps=("2",), step_targets=(1.0,)).step_targets
    (1.0,)

    ```
    """

    steps: tuple[str, ...] = ()
    gold: str | None = None
    step_targets: tuple[float | None, ...] | None = None
    trajectory_target: float | None = None


def target_value(value: object, what: str) -> float | None | str:
    """A target as a float in [0, 1] (a bool counts as 1 or 0, ``None`` as no target), or why it is not one.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.fields import target_value
    >>> target_value(True, "t"), target_value(0.25, "t"), target_value(None, "t")
    (1.0, 0.25, None)
    >>> target_value(float("nan"), "step 2"), target_value(-1, "step 0"), target_value("yes", "t")
    ('step 2 is NaN', 'step 0 is -1, outside [0, 1]', "t is a str, not a number: 'yes'")

    ```
    """
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    if not isinstance(value, (int, float)):
        return f"{what} is a {type(value).__name__}, not a number: {value!r:.40}"
    if math.isnan(value):
        return f"{what} is NaN"
    if not 0.0 <= value <= 1.0:
        return f"{what} is {value!r}, outside [0, 1]"
    return float(value)


def _step_targets(value: object, name: str, count: int) -> tuple[float | None, ...] | str:
    if not isinstance(value, (list, tuple)):
        return f"{name!r} is a {type(value).__name__}, not a list of step targets"
    if len(value) != count:
        return f"{name!r} has {len(value)} targets for {count} steps (steps are the blank-line paragraphs of the " \
               "thinking, then of the response)"
    targets = [target_value(v, f"{name!r} step {k}") for k, v in enumerate(value)]
    bad = [t for t in targets if isinstance(t, str)]
    return bad[0] if bad else tuple(targets)  # type: ignore[arg-type]


def _text(index: int, row: Mapping, fields: TrajectoryFields, reasons: list[str]) -> Pair | None:
    if fields.steps is None:
        pair = row_pair(index, row, Fields(fields.problem, fields.completion, fields.thinking, fields.response))
        if isinstance(pair, str):
            reasons.append(pair)
            return None
        return pair
    problem = text_field(row, fields.problem, reasons, chat=prompt_text)
    steps = row.get(fields.steps)
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        reasons.append(f"{fields.steps!r} must be a non-empty list of non-empty step texts")
        return None
    return None if problem is None else Pair(index, problem, "\n\n".join(s.strip() for s in steps))


def labelled_pair(index: int, row: Mapping, fields: TrajectoryFields, *, parts: str = "both",
                  thinking_prefilled: bool = False, need_gold: bool = False) -> LabelledPair | str:
    """The [`LabelledPair`] of input row ``index``, or every reason it gives none: a missing or empty text, no gold
    answer where ``need_gold``, step targets that are not one number in [0, 1] per step (NaN, out of range, another
    count than the scorer's steps), a trajectory target that is not one.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.fields import TrajectoryFields, labelled_pair
    >>> fields = TrajectoryFields(completion="completion", gold="solution", step_targets="labels")
    >>> row = {"problem": "1+1?", "completion": "1+1=2.\\n</think>\\n\\nSo 2.", "solution": "2", "labels": [1, 0.5]}
    >>> pair = labelled_pair(0, row, fields)
    >>> pair.steps, pair.step_targets, pair.gold
    (('1+1=2.', 'So 2.'), (1.0, 0.5), '2')
    >>> labelled_pair(3, {**row, "labels": [1]}, fields)  # doctest: +ELLIPSIS
    "'labels' has 1 targets for 2 steps (steps are the blank-line paragraphs of the thinking, then of the response)"

    ```
    """
    reasons: list[str] = []
    pair = _text(index, row, fields, reasons)
    steps: tuple[str, ...] = ()
    if pair is not None:
        steps = tuple(located_steps(pair.completion, parts, None, thinking_prefilled)[0])
        if not steps:
            reasons.append("the text has no step to score")
    gold = None
    if fields.gold is not None and row.get(fields.gold) is not None:
        try:
            gold = gold_text(row[fields.gold]).strip() or None
        except TypeError as err:
            reasons.append(f"{fields.gold!r}: {err}")
    if need_gold and gold is None and not reasons:
        reasons.append(f"no gold answer in {fields.gold!r}" if fields.gold else "no gold answer field in the input")
    step_targets = None
    if fields.step_targets is not None and steps:
        step_targets = _step_targets(row.get(fields.step_targets), fields.step_targets, len(steps))
        if isinstance(step_targets, str):
            reasons.append(step_targets)
    trajectory = None
    if fields.trajectory_target is not None:
        trajectory = target_value(row.get(fields.trajectory_target), repr(fields.trajectory_target))
        if isinstance(trajectory, str):
            reasons.append(trajectory)
    if reasons:
        return "; ".join(reasons)
    return LabelledPair(pair.row, pair.problem, pair.completion, steps=steps, gold=gold,  # type: ignore[union-attr]
                        step_targets=step_targets, trajectory_target=trajectory)  # type: ignore[arg-type]


def with_targets(pair: LabelledPair, step_targets: Sequence[float | None], trajectory_target: float | None
                 ) -> LabelledPair:
    """``pair`` with the targets a labeller gave it.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.fields import LabelledPair, with_targets
    >>> with_targets(LabelledPair(0, "1+1?", "2", steps=("2",)), [1.0], 1.0).trajectory_target
    1.0

    ```
    """
    return replace(pair, step_targets=tuple(step_targets), trajectory_target=trajectory_target)


def read_labelled(args: argparse.Namespace, named: Mapping[str, str | None], command: str, *, parts: str = "both",
                  thinking_prefilled: bool = False, need_gold: bool = False,
                  output_columns: Sequence[str] = (), when: str = "before labelling") -> tuple[InputRows[LabelledPair], TrajectoryFields]:
    """Read ``args.input`` (with ``dataset_config``, ``split``; ``on_bad_row`` for its bad rows), tell its fields
    ([`detect_fields`] with the ``named`` ones) and parse every row into a [`LabelledPair`], all before any model
    loads. An input column the output writes (``output_columns``) is refused unless it is where the targets are
    read from.

    Example:
    ```python
    >>> import argparse, json, tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.prm_training.fields import read_labelled
    >>> path = Path(tempfile.mkdtemp()) / "in.jsonl"
    >>> _ = path.write_text(json.dumps({"prompt": "1+1?", "completions": ["Add.", "So 2."], "labels": [1, 0]}))
    >>> args = argparse.Namespace(input=str(path), dataset_config=None, split="train", on_bad_row="error")
    >>> rows, fields = read_labelled(args, {"step_targets": "auto"}, "prm label")
    >>> rows.items[0].completion, rows.items[0].step_targets
    ('Add.\\n\\nSo 2.', (1.0, 0.0))

    ```
    """
    table = load_input(args)
    fields = detect_fields(columns(table.rows), **named)
    rows = parse_input(table, args, fields.required(), lambda index, row: labelled_pair(
        index, row, fields, parts=parts, thinking_prefilled=thinking_prefilled, need_gold=need_gold),
        command, added=[c for c in output_columns if c not in (fields.step_targets, fields.trajectory_target)],
        when=when)
    return rows, fields
