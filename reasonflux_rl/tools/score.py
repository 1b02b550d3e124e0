"""``reasonflux-rl score``: score (problem, completion) rows with a PRM of any kind, resumably.

Each output line is one input row (numbered as [`reasonflux_rl.tools.rows`] numbers them): its ``index``, the fields
named by ``--keep-fields``, the reward (``score``: aggregated step scores, plus ``alpha`` times a trajectory score
when there is one), the step scores and which steps they belong to, and the truncation counts. A row without a score
has an ``error``: a bad row skipped with ``--on-bad-row skip`` (written as ``{"index", "error"}``), or a row the PRM
scored no step of or gave a non-finite score.

The output is a [`reasonflux_rl.tools.store.ScoreStore`]: rows are appended in input order and forced to disk after
every chunk, so an interrupted run loses at most the chunk in flight; run the same command again and it continues
after the last complete row (a half-written last line is cut off), never scoring a row twice. The settings that
change scores are stored beside the output (``OUTPUT.meta.json``) and a resumed run must use the same ones and input.
A run that stops before storing any row leaves neither file behind; one that stops later says on stderr how many rows
it stored. On success one line on stdout says how many rows were scored and how many are bad, where the output is
and how long the run took.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.options import add_prm_arguments, prm_settings, scorer_from_args
from reasonflux_rl.tools.pipeline import Scored, read_input, record_reward, result_record, score_stored
from reasonflux_rl.tools.rows import (
    Pair,
    Table,
    add_field_arguments,
    add_input_arguments,
    describe_bad_rows,
    fields_from_args,
    row_pair,
)

# What every scored output row holds besides the kept fields.
OUTPUT_FIELDS = (
    "index", "score", "step_scores", "step_indices", "trajectory_score", "num_steps", "dropped_steps",
    "dropped_fraction", "num_tokens", "dropped_tokens", "error",
)


def make_parser() -> argparse.ArgumentParser:
    """The ``score`` command's options.

    Example:
    ```python
    >>> from reasonflux_rl.tools.score import make_parser
    >>> args = make_parser().parse_args(["--prm", "p", "--input", "in.jsonl", "--output", "out.jsonl"])
    >>> args.kind, args.truncation, args.chunk_size, args.problem_field, args.on_bad_row
    ('auto', 'drop_oldest', 256, 'problem', 'error')

    ```
    """
    parser = argparse.ArgumentParser(
        prog="reasonflux-rl score",
        description="Score (problem, completion) rows with a PRM into a JSONL file; resumable.",
    )
    add_input_arguments(parser)
    parser.add_argument("--output", required=True, help="JSONL file of scored rows (continued when it exists)")
    add_field_arguments(parser)
    parser.add_argument("--keep-fields", default="", help="comma-separated input fields copied to each output row")
    add_prm_arguments(parser)
    return parser


def _kept_fields(args: argparse.Namespace) -> list[str]:
    keep = [name.strip() for name in args.keep_fields.split(",") if name.strip()]
    clash = sorted(set(keep).intersection(OUTPUT_FIELDS))
    if clash:
        raise ConfigError(f"--keep-fields {clash}: the output has fields of these names; keep other fields")
    return keep


def _output_row(table: Table, keep: Sequence[str], args: argparse.Namespace) -> Callable[[Pair, Any], dict[str, Any]]:
    def output_row(pair: Pair, result: Any) -> dict[str, Any]:
        record = result_record(pair.row, result)
        kept = {name: table.rows[pair.row].get(name) for name in keep}  # type: ignore[union-attr]
        return {"index": pair.row, **kept, "score": record_reward(record, args.aggregation, args.alpha), **record}

    return output_row


def _report(scored: Scored, table: Table, seconds: float) -> None:
    records = scored.records
    unscored = [table.bad_row(row, r["error"]) for row, r in records.items() if "error" in r and "step_scores" in r]
    if unscored:
        print(f"reasonflux-rl score: no score for {describe_bad_rows(unscored)} (written with an 'error' field)",
              file=sys.stderr)
    bad = sum("error" in record for record in records.values())
    resumed = f"; {scored.store.loaded} already stored" if scored.store.loaded else ""
    print(f"scored {len(records) - bad} of {len(table.rows)} rows ({bad} bad{resumed}) in {seconds:.1f} s; "
          f"output: {scored.store.path}")


def main(argv: Sequence[str]) -> None:
    """Run ``reasonflux-rl score`` with ``argv`` (the options after ``score``); print a one-line summary.

    Example:
    ```python
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.tools.score import main
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> d = Path(tempfile.mkdtemp())
    >>> prm = write_tiny_models(d).prm
    >>> _ = (d / "in.jsonl").write_text(json.dumps({"problem": "1+1?", "completion": "1+1=2.\\n\\nSo 2."}) + "\\n")
    >>> main(["--prm", str(prm), "--input", str(d / "in.jsonl"), "--output", str(d / "out.jsonl"), "--no-progress"])
    ... # doctest: +ELLIPSIS
    scored 1 of 1 rows (0 bad) in ... s; output: .../out.jsonl
    >>> row = json.loads((d / "out.jsonl").read_text())
    >>> row["index"], len(row["step_scores"]), row["dropped_steps"], 0 < row["score"] < 1
    (0, 2, 0, True)

    ```
    """
    started = time.monotonic()
    args = make_parser().parse_args(list(argv))
    fields = fields_from_args(args)
    keep = _kept_fields(args)
    settings = {**prm_settings(args), "keep_fields": keep, "aggregation": args.aggregation, "alpha": args.alpha}
    rows = read_input(args, [*fields.required(), *keep], lambda index, row: row_pair(index, row, fields), "score",
                      writes_skipped=True)
    # Bad rows are stored too, as {"index", "error"}: the output has one line per input row.
    items = sorted([*rows.items, *rows.bad], key=lambda item: item.row)
    scored = score_stored(items, args.output, settings, lambda: scorer_from_args(args), args, "score",
                          to_record=_output_row(rows.table, keep, args))
    _report(scored, rows.table, time.monotonic() - started)
