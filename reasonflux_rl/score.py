"""``reasonflux-rl score``: score a JSONL file of (problem, completion) rows with a PRM of any kind, resumably.

Each output line is one input row: its ``index`` (0-based, counting the non-blank input lines), the reward
(``score``: aggregated step scores, plus ``alpha`` times a trajectory score when there is one), the step scores and
which steps they belong to, and the truncation counts. Rows are appended in input order and flushed to disk after
every chunk, so an interrupted run loses at most the chunk in flight: run the same command again and it continues
after the last complete row (a half-written last line is cut off), never scoring a row twice. The settings that change
scores are stored beside the output (``OUTPUT.meta.json``) and a resumed run must use the same ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .prm import AGGREGATIONS, KINDS, TRUNCATIONS, StepScores, load_scorer, trajectory_reward
from .prm.format import DEFAULT_SYSTEM_PROMPT, PARTS
from .trajectory import completion_text, prompt_text

# Settings that change the scores: a resumed run must match them. Batch sizes and the device do not.
RESULT_SETTINGS = (
    "prm", "kind", "trajectory_prm", "problem_field", "completion_field", "keep_fields", "aggregation", "alpha",
    "parts", "max_length", "max_steps", "truncation", "window_overlap", "dtype", "system_prompt", "step_tag",
    "good_token", "bad_token",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``score`` command's options.

    Example:
    ```python
    >>> from reasonflux_rl.score import build_parser
    >>> args = build_parser().parse_args(["--prm", "p", "--input", "in.jsonl", "--output", "out.jsonl"])
    >>> args.kind, args.truncation, args.chunk_size, args.problem_field, args.completion_field
    ('auto', 'drop_oldest', 256, 'problem', 'completion')

    ```
    """
    parser = argparse.ArgumentParser(
        prog="reasonflux-rl score",
        description="Score (problem, completion) rows of a JSONL file with a PRM; resumable.",
    )
    parser.add_argument("--prm", required=True, help="local PRM checkpoint directory")
    parser.add_argument("--input", required=True, help="JSONL file, one row per line")
    parser.add_argument("--output", required=True, help="JSONL file to append scored rows to (created if missing)")
    parser.add_argument("--kind", default="auto", choices=["auto", *KINDS],
                        help="PRM kind; token_logit must be named (with --step-tag/--good-token/--bad-token)")
    parser.add_argument("--problem-field", default="problem", help="input field with the problem text")
    parser.add_argument("--completion-field", default="completion", help="input field with the completion")
    parser.add_argument("--keep-fields", default="", help="comma-separated input fields copied to each output row")
    parser.add_argument("--aggregation", default="mean", choices=AGGREGATIONS, help="how step scores become `score`")
    parser.add_argument("--alpha", type=float, default=None,
                        help="weight of the trajectory score added to the step aggregate (eq. 11); needs a PRM that "
                        "gives both (see --trajectory-prm)")
    parser.add_argument("--trajectory-prm", default=None,
                        help="a value-head PRM whose score becomes each row's trajectory_score")
    parser.add_argument("--parts", default="both", choices=PARTS, help="score the thinking, the response or both")
    parser.add_argument("--max-length", type=int, default=None, help="PRM context in tokens (default: the model's)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on steps; the tail merges into the last")
    parser.add_argument("--truncation", default="drop_oldest", choices=TRUNCATIONS,
                        help="what happens to inputs longer than --max-length")
    parser.add_argument("--window-overlap", type=int, default=None,
                        help="context tokens of the windows policy (default: a quarter of the context)")
    parser.add_argument("--batch-tokens", type=int, default=None,
                        help="padded tokens per forward pass (default: 16384 on GPU, 4096 on CPU)")
    parser.add_argument("--chunk-size", type=int, default=256,
                        help="rows per scoring call; the output is flushed after each chunk")
    parser.add_argument("--device", default=None, help="e.g. cuda:0 or cpu (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU) or a torch dtype name")
    parser.add_argument("--system-prompt", default=DEFAULT_SYSTEM_PROMPT,
                        help="system message of the step classifier's input; '' for none")
    parser.add_argument("--step-tag", default=None, help="step tag (token_logit; default <extra_0> otherwise)")
    parser.add_argument("--good-token", default=None, help="token_logit: the 'good step' token")
    parser.add_argument("--bad-token", default=None, help="token_logit: the 'bad step' token")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="write bad rows as {'index', 'error'} and report them instead of stopping")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@dataclass(frozen=True)
class Row:
    """One input row: its index, line number and either its texts or what is wrong with it."""

    index: int
    line: int
    problem: str = ""
    completion: str = ""
    kept: dict[str, Any] | None = None
    error: str | None = None


def read_rows(path: str | Path, problem_field: str, completion_field: str, keep_fields: Sequence[str]) -> Iterator[Row]:
    """The rows of a JSONL file, in order; a bad row comes with its ``error`` (blank lines are not rows).

    Problems and completions may be strings or chat messages (the last user / last message's content is used).

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.score import read_rows
    >>> path = tempfile.mktemp(suffix=".jsonl")
    >>> _ = open(path, "w").write('{"problem": "1+1?", "completion": "2"}\\n\\n{"problem": "2+2?"}\\n')
    >>> [(r.index, r.line, r.error) for r in read_rows(path, "problem", "completion", [])]
    [(0, 1, None), (1, 3, "field 'completion' is missing")]

    ```
    """
    index = 0
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            yield _parse_row(line, index, line_number, problem_field, completion_field, keep_fields)
            index += 1


def _parse_row(
    line: str, index: int, line_number: int, problem_field: str, completion_field: str, keep_fields: Sequence[str]
) -> Row:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return Row(index, line_number, error=f"not valid JSON ({err.msg})")
    if not isinstance(record, dict):
        return Row(index, line_number, error=f"not a JSON object (a {type(record).__name__})")
    texts = []
    for name, convert in ((problem_field, prompt_text), (completion_field, completion_text)):
        if name not in record:
            return Row(index, line_number, error=f"field {name!r} is missing")
        try:
            texts.append(convert(record[name]))
        except TypeError:
            return Row(index, line_number, error=f"field {name!r} is a {type(record[name]).__name__}, not a string "
                       "(or chat messages)")
    return Row(index, line_number, texts[0], texts[1], {name: record.get(name) for name in keep_fields})


def completed_indices(path: str | Path) -> set[int]:
    """Indices already in an output file; a half-written last line (an interrupted write) is cut off the file.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.score import completed_indices
    >>> path = tempfile.mktemp(suffix=".jsonl")
    >>> _ = open(path, "w").write('{"index": 0}\\n{"index": 1}\\n{"ind')
    >>> completed_indices(path), open(path).read()
    ({0, 1}, '{"index": 0}\\n{"index": 1}\\n')

    ```
    """
    file = Path(path)
    if not file.exists():
        return set()
    data = file.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        with open(file, "r+b") as handle:
            handle.truncate(complete)
    done: set[int] = set()
    for number, line in enumerate(data[:complete].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            index = json.loads(line)["index"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"{path} line {number} is not a scored row; is --output the output of this command?")
        if index in done:
            raise ConfigError(f"{path} holds row index {index} twice (line {number})")
        done.add(index)
    return done


def output_row(row: Row, result: StepScores, aggregation: str, alpha: float | None) -> dict[str, Any]:
    """The output line of a scored row.

    Example:
    ```python
    >>> from reasonflux_rl.prm import StepScores
    >>> from reasonflux_rl.score import Row, output_row
    >>> output_row(Row(3, 4, kept={"id": "a"}), StepScores([0.5, 1.0], 3, 1, [1, 2]), "mean", None)["score"]
    0.75

    ```
    """
    return {
        "index": row.index,
        **(row.kept or {}),
        "score": trajectory_reward(result.step_scores, result.trajectory_score, aggregation, alpha),
        "step_scores": result.step_scores,
        "step_indices": result.step_indices,
        "trajectory_score": result.trajectory_score,
        "num_steps": result.num_steps,
        "dropped_steps": result.dropped_steps,
        "dropped_fraction": result.dropped_fraction,
        "num_tokens": result.num_tokens,
        "dropped_tokens": result.dropped_tokens,
    }


def _settings(args: argparse.Namespace, keep_fields: list[str]) -> dict[str, Any]:
    settings = {name: getattr(args, name) for name in RESULT_SETTINGS}
    settings["prm"] = str(Path(args.prm).resolve())
    if args.trajectory_prm:
        settings["trajectory_prm"] = str(Path(args.trajectory_prm).resolve())
    settings["keep_fields"] = keep_fields
    return settings


def _check_resume(output: Path, meta: Path, settings: dict[str, Any]) -> None:
    if not output.exists() or output.stat().st_size == 0:
        return
    if not meta.exists():
        raise ConfigError(f"{output} exists but {meta.name} does not: cannot tell which settings wrote it")
    stored = json.loads(meta.read_text())
    changed = {k: (stored.get(k), v) for k, v in settings.items() if stored.get(k) != v}
    if changed:
        listed = "; ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in changed.items())
        raise ConfigError(
            f"{output} was written with other settings ({listed}); resume with the same settings, or write to a "
            "new --output"
        )


def main(argv: Sequence[str]) -> None:
    """Run ``reasonflux-rl score`` with ``argv`` (the options after ``score``).

    Example:
    ```python
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.score import main
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> d = Path(tempfile.mkdtemp())
    >>> prm = write_tiny_models(d).prm
    >>> _ = (d / "in.jsonl").write_text(json.dumps({"problem": "1+1?", "completion": "1+1=2.\\n\\nSo 2."}) + "\\n")
    >>> main(["--prm", str(prm), "--input", str(d / "in.jsonl"), "--output", str(d / "out.jsonl"), "--no-progress"])
    >>> row = json.loads((d / "out.jsonl").read_text())
    >>> row["index"], len(row["step_scores"]), row["dropped_steps"], 0 < row["score"] < 1
    (0, 2, 0, True)

    ```
    """
    args = build_parser().parse_args(list(argv))
    for name in ("chunk_size", "batch_tokens", "max_length", "max_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}={value} must be a positive integer")
    if args.alpha is not None and args.alpha < 0:
        raise ConfigError(f"--alpha={args.alpha} must be >= 0")
    if not Path(args.input).is_file():
        raise ConfigError(f"--input {args.input} is not a file")
    keep_fields = [name.strip() for name in args.keep_fields.split(",") if name.strip()]
    output, meta = Path(args.output), Path(f"{args.output}.meta.json")
    settings = _settings(args, keep_fields)

    # Every row is checked before the model loads: a bad row 50,000 fails in seconds, not after hours of scoring.
    total, bad = 0, []
    for row in read_rows(args.input, args.problem_field, args.completion_field, keep_fields):
        total += 1
        if row.error is not None:
            if not args.skip_bad_rows:
                raise ConfigError(
                    f"{args.input} row {row.index} (line {row.line}): {row.error}; fix it or pass --skip-bad-rows"
                )
            bad.append(row)
    _check_resume(output, meta, settings)
    done = completed_indices(output)
    if any(index >= total for index in done):
        raise ConfigError(f"{output} has row indices past the {total} rows of {args.input}: another input's output?")
    if total == len(done):
        print(f"{output}: all {total} rows already scored", file=sys.stderr)
        return

    scorer = load_scorer(
        args.prm,
        kind=args.kind,
        trajectory_prm=args.trajectory_prm,
        device=args.device,
        dtype=args.dtype,
        parts=args.parts,
        max_length=args.max_length,
        max_steps=args.max_steps,
        truncation=args.truncation,
        window_overlap=args.window_overlap,
        batch_tokens=args.batch_tokens,
        system_prompt=args.system_prompt or None,
        step_tag=args.step_tag,
        good_token=args.good_token,
        bad_token=args.bad_token,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(settings, indent=2) + "\n")

    from tqdm.auto import tqdm

    progress = tqdm(total=total, initial=len(done), unit="row", disable=args.no_progress, desc="score")
    pending = (r for r in read_rows(args.input, args.problem_field, args.completion_field, keep_fields)
               if r.index not in done)
    with open(output, "a", encoding="utf-8") as handle:
        for chunk in _chunks(pending, args.chunk_size):
            good = [r for r in chunk if r.error is None]
            results = iter(scorer.score([r.problem for r in good], [r.completion for r in good]))
            lines = []
            for row in chunk:
                record = (
                    {"index": row.index, "error": row.error}
                    if row.error is not None
                    else output_row(row, next(results), args.aggregation, args.alpha)
                )
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
            progress.update(len(chunk))
    progress.close()
    if bad:
        listed = "; ".join(f"row {r.index} (line {r.line}): {r.error}" for r in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        print(f"skipped {len(bad)} bad rows (written with an 'error' field): {listed}{more}", file=sys.stderr)


def _chunks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
