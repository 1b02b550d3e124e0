"""Input rows for ``score``, ``select`` and ``bon``: read them, check their fields, and report every bad one.

Rows are numbered from 0 in input order (in a JSONL file, blank lines are not rows). A row that cannot be used (not
JSON, a missing field, an empty or non-string text) becomes a [`BadRow`] naming its row, its line in a JSONL file,
and every problem with it; ``--on-bad-row error`` stops the command before any scoring, ``skip`` goes on without it
and reports it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.trajectory import THINK_CLOSE, completion_text, prompt_text

# How separate thinking and response fields are joined into the one completion a scorer reads; the scorer splits it
# back at the last "</think>" (see reasonflux_rl.trajectory.split_trajectory).
THINKING_SEPARATOR = "\n" + THINK_CLOSE + "\n\n"
BAD_ROW_POLICIES = ("error", "skip")
_SHOWN_BAD_ROWS = 10
Item = TypeVar("Item")


@dataclass(frozen=True)
class BadRow:
    """An input row that was not used, and why; ``line`` is its line in a JSONL file.

    Example:
    ```python
    >>> from reasonflux_rl.tools.rows import BadRow
    >>> str(BadRow(3, "missing 'problem'", line=5)), str(BadRow(3, "missing 'problem'"))
    ("row 3 (line 5): missing 'problem'", "row 3: missing 'problem'")

    ```
    """

    row: int
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        return f"row {self.row}{'' if self.line is None else f' (line {self.line})'}: {self.reason}"


@dataclass(frozen=True)
class Table:
    """Rows as read: ``rows[i]`` is row ``i``, ``None`` when it could not be read (it is then in ``bad``);
    ``lines[i]`` is its line number in a JSONL file (``None`` for other inputs)."""

    rows: Sequence[Mapping | None]
    bad: list[BadRow]
    lines: Sequence[int] | None = None

    def bad_row(self, index: int, reason: str) -> BadRow:
        """A [`BadRow`] for row ``index``, with its line when the input has lines."""
        return BadRow(index, reason, None if self.lines is None else self.lines[index])

    def split(self, parse: Callable[[int, Mapping], Item | str]) -> tuple[list[Item], list[BadRow]]:
        """``parse(index, row)`` on every readable row: the items it gives, and every bad row (the reader's and
        the rows for which it gave a reason, a ``str``), in row order.

        Example:
        ```python
        >>> from reasonflux_rl.tools.rows import Table
        >>> table = Table([{"a": 1}, None, {"a": -1}], [], lines=[1, 2, 4])
        >>> table.split(lambda i, row: row["a"] if row["a"] > 0 else "negative")
        ([1], [BadRow(row=2, reason='negative', line=4)])

        ```
        """
        items: list[Item] = []
        bad = list(self.bad)
        for index, row in enumerate(self.rows):
            if row is not None:
                result = parse(index, row)
                if isinstance(result, str):
                    bad.append(self.bad_row(index, result))
                else:
                    items.append(result)
        return items, sorted(bad, key=lambda b: b.row)


def read_jsonl(path: str | Path) -> Table:
    """Read a JSONL file row by row; a line that is not a JSON object is a bad row.

    Read here rather than with ``datasets``, whose Arrow reader refuses a whole file when one value has another type
    than the rest of its column: a row with a number where the problem should be must be reported, not fatal.

    Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.tools.rows import read_jsonl
    >>> path = Path(tempfile.mkdtemp()) / "rows.jsonl"
    >>> _ = path.write_text('{"problem": "1+1?"}\\n\\n{"problem": 2\\n[1]\\n')
    >>> table = read_jsonl(path)
    >>> table.rows[0], table.lines, [str(b) for b in table.bad]
    ({'problem': '1+1?'}, [1, 3, 4], ['row 1 (line 3): not valid JSON', 'row 2 (line 4): a JSON list, not an object'])

    ```
    """
    rows: list[dict | None] = []
    lines: list[int] = []
    bad: list[BadRow] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                value, reason = None, "not valid JSON"
            else:
                reason = f"a JSON {type(value).__name__}, not an object"
            if not isinstance(value, dict):
                bad.append(BadRow(len(rows), reason, number))
                value = None
            rows.append(value)
            lines.append(number)
    return Table(rows, bad, lines)


def load_rows(name: str, config: str | None = None, split: str = "train") -> Table:
    """Rows of a ``.jsonl`` file (read by [`read_jsonl`]), or of anything ``reasonflux_rl.data.load_table`` opens:
    a ``.json``/``.parquet``/``.csv`` file, a ``save_to_disk`` directory or a hub dataset name.

    Example:
    ```python
    >>> from reasonflux_rl.tools.rows import load_rows
    >>> table = load_rows("builtin:smoke_math")
    >>> len(table.rows), table.bad
    (96, [])

    ```
    """
    path = Path(name)
    if path.is_file() and path.suffix == ".jsonl":
        return read_jsonl(path)
    from reasonflux_rl.data import load_table

    try:
        return Table(load_table(name, config, split), [])
    except Exception as err:  # the input boundary: any loader failure is a bad --input, said in one line
        raise ConfigError(f"cannot read input {name!r}: {type(err).__name__}: {err}") from err


def columns(rows: Sequence[Mapping | None]) -> set[str]:
    """The field names of the rows: a ``datasets.Dataset``'s columns, or every key any readable row has.

    Example:
    ```python
    >>> from reasonflux_rl.tools.rows import columns
    >>> sorted(columns([{"problem": "1+1?"}, None, {"completion": "2"}]))
    ['completion', 'problem']

    ```
    """
    names = getattr(rows, "column_names", None)
    return set(names) if names is not None else {key for row in rows if row is not None for key in row}


def check_columns(rows: Sequence[Mapping | None], required: Sequence[str], added: Sequence[str] = ()) -> None:
    """Refuse, before any work, a field name that no row has (a typo, not a bad row) and an input column that the
    output would overwrite.

    Example:
    ```python
    >>> from reasonflux_rl.tools.rows import check_columns
    >>> check_columns([{"question": "1+1?"}, None], ["problem"])
    Traceback (most recent call last):
    ...
    reasonflux_rl.errors.ConfigError: field 'problem' is in no input row; the input's fields are ['question']

    ```
    """
    present = columns(rows)
    for name in required:
        if name not in present:
            raise ConfigError(f"field {name!r} is in no input row; the input's fields are {sorted(present)}")
    clash = sorted(present.intersection(added))
    if clash:
        raise ConfigError(f"the input already has column(s) {clash}, which the output adds; rename them first")


def text_field(
    row: Mapping, name: str, reasons: list[str], *, allow_empty: bool = False, chat: Callable | None = None
) -> str | None:
    """The string in ``row[name]``, or ``None`` with the reason appended to ``reasons``; ``chat`` (``prompt_text``
    or ``completion_text``) also takes a list of chat messages.

    Example:
    ```python
    >>> from reasonflux_rl.tools.rows import text_field
    >>> from reasonflux_rl.trajectory import prompt_text
    >>> reasons = []
    >>> text_field({"p": [{"role": "user", "content": "1+1?"}]}, "p", reasons, chat=prompt_text)
    '1+1?'
    >>> text_field({"p": 5}, "p", reasons), text_field({"p": " "}, "p", reasons), reasons
    (None, None, ["'p' is a int, not a string: 5", "'p' is empty"])

    ```
    """
    value = row.get(name)
    if value is None:
        reasons.append(f"missing {name!r}")
        return None
    if chat is not None and isinstance(value, list):
        try:
            value = chat(value)
        except TypeError:
            pass
    if not isinstance(value, str):
        kind = "a string (or chat messages)" if chat is not None else "a string"
        reasons.append(f"{name!r} is a {type(value).__name__}, not {kind}: {value!r:.60}")
    elif not allow_empty and not value.strip():
        reasons.append(f"{name!r} is empty")
    else:
        return value
    return None


def integer_or_text_field(row: Mapping, name: str, reasons: list[str]) -> str | None:
    """[`text_field`], also taking an integer as its decimal string: model ids as sources, AIME's reference answers.

    Example:
    ```python
    >>> from reasonflux_rl.tools.rows import integer_or_text_field
    >>> reasons = []
    >>> integer_or_text_field({"m": 7}, "m", reasons), integer_or_text_field({"m": True}, "m", reasons), reasons
    ('7', None, ["'m' is a bool, not a string: True"])

    ```
    """
    value = row.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return text_field(row, name, reasons)


@dataclass(frozen=True)
class Fields:
    """Which input fields hold the problem, the completion and (optionally) the source of each row.

    Either ``completion`` (one text, thinking and response split at its last ``</think>``; a string or chat
    messages) or both ``thinking`` and ``response``; these are joined as ``thinking + "\\n</think>\\n\\n" +
    response`` before scoring.

    Example:
    ```python
    >>> from reasonflux_rl.tools.rows import Fields
    >>> Fields(thinking="trace", response="answer", completion=None).text_fields()
    ('problem', 'trace', 'answer')

    ```
    """

    problem: str = "problem"
    completion: str | None = "completion"
    thinking: str | None = None
    response: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        separate = (self.thinking is not None, self.response is not None)
        if any(separate) and not all(separate):
            raise ConfigError("thinking and response fields go together: set --thinking-field and --response-field")
        if all(separate) == (self.completion is not None):
            raise ConfigError("set either a completion field or both a thinking and a response field")

    def text_fields(self) -> tuple[str, ...]:
        """The fields whose text is scored, in the order they are checked."""
        parts = (self.completion,) if self.completion is not None else (self.thinking, self.response)
        return (self.problem, *parts)  # type: ignore[return-value]

    def required(self) -> tuple[str, ...]:
        """Every field a row must have."""
        return self.text_fields() + ((self.source,) if self.source is not None else ())


@dataclass(frozen=True)
class Pair:
    """One scoreable row: its input row index, the problem, the completion the scorer reads, and its source.

    Example:
    ```python
    >>> from reasonflux_rl.tools.rows import Pair
    >>> Pair(0, "1+1?", "<think>\\nAdd.\\n</think>\\n\\n2", source="R1").source
    'R1'

    ```
    """

    row: int
    problem: str
    completion: str
    source: str | None = None


def join_completion(thinking: str, response: str) -> str:
    """The completion a scorer reads for separate thinking and response fields.

    Example:
    ```python
    >>> from reasonflux_rl.tools.rows import join_completion
    >>> from reasonflux_rl.trajectory import split_trajectory
    >>> text = join_completion("Try 2.\\n\\nIt works.", "The answer is 2.")
    >>> text
    'Try 2.\\n\\nIt works.\\n</think>\\n\\nThe answer is 2.'
    >>> split_trajectory(text).thinking, split_trajectory(text).response
    ('Try 2.\\n\\nIt works.', 'The answer is 2.')

    ```
    """
    return thinking + THINKING_SEPARATOR + response


def row_pair(index: int, row: Mapping, fields: Fields) -> Pair | str:
    """The [`Pair`] a row gives, or why it gives none (every problem with it).

    Example:
    ```python
    >>> from reasonflux_rl.tools.rows import Fields, row_pair
    >>> row_pair(0, {"problem": "1+1?", "completion": "2"}, Fields())
    Pair(row=0, problem='1+1?', completion='2', source=None)
    >>> row_pair(7, {"problem": 5, "completion": "  "}, Fields())
    "'problem' is a int, not a string (or chat messages): 5; 'completion' is empty"

    ```
    """
    reasons: list[str] = []
    problem = text_field(row, fields.problem, reasons, chat=prompt_text)
    completion = None
    if fields.completion is not None:
        completion = text_field(row, fields.completion, reasons, chat=completion_text)
    else:
        thinking = text_field(row, fields.thinking, reasons, allow_empty=True)  # type: ignore[arg-type]
        response = text_field(row, fields.response, reasons, allow_empty=True)  # type: ignore[arg-type]
        if thinking is not None and response is not None:
            if not thinking.strip() and not response.strip():
                reasons.append(f"{fields.thinking!r} and {fields.response!r} are both empty")
            elif THINK_CLOSE in response:
                reasons.append(f"{fields.response!r} contains {THINK_CLOSE!r}: the scorer would split it there")
            else:
                completion = join_completion(thinking, response)
    source = integer_or_text_field(row, fields.source, reasons) if fields.source is not None else None
    if reasons:
        return "; ".join(reasons)
    return Pair(index, problem, completion, source)  # type: ignore[arg-type]


def describe_bad_rows(bad: Sequence[BadRow], limit: int = _SHOWN_BAD_ROWS) -> str:
    """One line listing the first ``limit`` bad rows and how many more there are.

    Example:
    ```python
    >>> from reasonflux_rl.tools.rows import BadRow, describe_bad_rows
    >>> describe_bad_rows([BadRow(i, "empty") for i in range(4)], limit=2)
    '4 bad rows: row 0: empty | row 1: empty | ... and 2 more'

    ```
    """
    shown = " | ".join(str(b) for b in bad[:limit])
    more = f" | ... and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"{len(bad)} bad row{'s' if len(bad) != 1 else ''}: {shown}{more}"


def handle_bad_rows(
    bad: Sequence[BadRow], policy: str, when: str, command: str, *, writes_skipped: bool = False
) -> None:
    """Apply ``--on-bad-row``: ``error`` raises [`ConfigError`] listing the bad rows, ``skip`` reports them on
    stderr (the command lists them all in its output). ``writes_skipped`` says the command writes each skipped row
    to its output as ``{"index", "error"}`` (``score``), and both messages say so.

    Example:
    ```python
    >>> from reasonflux_rl.tools.rows import BadRow, handle_bad_rows
    >>> handle_bad_rows([], "error", "before scoring", "select")
    >>> handle_bad_rows([BadRow(2, "missing 'problem'")], "error", "before scoring", "select")
    Traceback (most recent call last):
    ...
    reasonflux_rl.errors.ConfigError: 1 bad row: row 2: missing 'problem' (before scoring; pass --on-bad-row skip ...)
    >>> handle_bad_rows([BadRow(2, "missing 'problem'")], "error", "before scoring", "score", writes_skipped=True)
    Traceback (most recent call last):
    ...
    reasonflux_rl.errors.ConfigError: 1 bad row: row 2: missing 'problem' (before scoring, so nothing was written; ...)

    ```
    """
    if not bad:
        return
    if policy == "error":
        if writes_skipped:
            # Nothing is written yet: the rows a skipping run would write are only described.
            advice = (f"{when}, so nothing was written; pass --on-bad-row skip to score the other rows and write "
                      'each bad one as {"index", "error"}')
        else:
            advice = f"{when}; pass --on-bad-row skip to skip and report them"
        raise ConfigError(f"{describe_bad_rows(bad)} ({advice})")
    note = '; each is written as {"index", "error"}' if writes_skipped else ""
    print(f"reasonflux-rl {command}: skipping {describe_bad_rows(bad)} ({when}{note})", file=sys.stderr)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """``--input``, ``--dataset-config``, ``--split`` (read by [`load_rows`]) and ``--on-bad-row``.

    ``--dataset-config`` is the hub dataset's config name (TRL's ``dataset_config``); ``--config`` is left to the
    commands that read a YAML recipe, so it is refused here.

    Example:
    ```python
    >>> import argparse
    >>> from reasonflux_rl.tools.rows import add_input_arguments
    >>> parser = argparse.ArgumentParser()
    >>> add_input_arguments(parser)
    >>> parser.parse_args(["--input", "d.jsonl"]).on_bad_row
    'error'
    >>> parser.parse_args(["--input", "d.jsonl", "--dataset-config", "main"]).dataset_config
    'main'

    ```
    """
    group = parser.add_argument_group("input")
    group.add_argument("--input", required=True, help=".jsonl/.json/.parquet/.csv file, save_to_disk dir or hub name")
    group.add_argument("--dataset-config", dest="dataset_config", default=None, metavar="NAME",
                       help="hub dataset config name (TRL's dataset_config)")
    group.add_argument("--split", default="train", help="split of a hub dataset or DatasetDict")
    group.add_argument("--on-bad-row", default="error", choices=BAD_ROW_POLICIES,
                       help="a bad row (unreadable, missing or empty field, non-string) stops the run, or is skipped "
                       "and reported")


def add_field_arguments(parser: argparse.ArgumentParser, *, source: bool = False) -> None:
    """The field options that [`fields_from_args`] reads; ``source`` adds ``--source-field``.

    Example:
    ```python
    >>> import argparse
    >>> from reasonflux_rl.tools.rows import add_field_arguments, fields_from_args
    >>> parser = argparse.ArgumentParser()
    >>> add_field_arguments(parser)
    >>> fields_from_args(parser.parse_args(["--problem-field", "question"]))
    Fields(problem='question', completion='completion', thinking=None, response=None, source=None)

    ```
    """
    group = parser.add_argument_group("fields")
    group.add_argument("--problem-field", default="problem", help="the problem: a string or chat messages")
    group.add_argument("--completion-field", default=None,
                       help="one text split at </think>, or chat messages (default: completion)")
    group.add_argument("--thinking-field", default=None, help="with --response-field: separate fields")
    group.add_argument("--response-field", default=None)
    if source:
        group.add_argument("--source-field", default=None, help="e.g. the model that wrote the row")


def fields_from_args(args: argparse.Namespace) -> Fields:
    """The [`Fields`] named on the command line (see [`add_field_arguments`])."""
    separate = args.thinking_field is not None or args.response_field is not None
    if separate and args.completion_field is not None:
        raise ConfigError("--completion-field and --thinking-field/--response-field exclude each other")
    return Fields(
        problem=args.problem_field,
        completion=None if separate else (args.completion_field or "completion"),
        thinking=args.thinking_field,
        response=args.response_field,
        source=getattr(args, "source_field", None),
    )
