"""``reasonflux-rl score``: score (problem, completion) rows with a PRM of any kind, resumably.

Each output line is one input row (numbered as [`reasonflux_rl.tools.rows`] numbers them): its ``index``, the fields named
by ``--keep-fields``, the reward (``score``: aggregated step scores, plus ``alpha`` times a trajectory score when
there is one), the step scores and which steps they belong to, and the truncation counts. A row without a score has
an ``error``: a bad row skipped with ``--on-bad-row skip`` (written as ``{"index", "error"}``), or a row the PRM
scored no step of or gave a non-finite score.

The output is a [`reasonflux_rl.tools.store.ScoreStore`]: rows are appended in input order and forced to disk after every
chunk, so an interrupted run loses at most the chunk in flight; run the same command again and it continues after
the last complete row (a half-written last line is cut off), never scoring a row twice. The settings that change
scores are stored beside the output (``OUTPUT.meta.json``) and a resumed run must use the same ones and input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.options import add_prm_arguments, prm_settings, scorer_from_args
from reasonflux_rl.tools.pipeline import fingerprint, record_reward, result_record, score_pairs
from reasonflux_rl.tools.rows import (
    Pair,
    add_field_arguments,
    add_input_arguments,
    check_columns,
    describe_bad_rows,
    fields_from_args,
    handle_bad_rows,
    load_rows,
    row_pair,
)
from reasonflux_rl.tools.store import ScoreStore

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


def main(argv: Sequence[str]) -> None:
    """Run ``reasonflux-rl score`` with ``argv`` (the options after ``score``).

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
    >>> row = json.loads((d / "out.jsonl").read_text())
    >>> row["index"], len(row["step_scores"]), row["dropped_steps"], 0 < row["score"] < 1
    (0, 2, 0, True)

    ```
    """
    args = make_parser().parse_args(list(argv))
    fields = fields_from_args(args)
    keep = [name.strip() for name in args.keep_fields.split(",") if name.strip()]
    clash = sorted(set(keep).intersection(OUTPUT_FIELDS))
    if clash:
        raise ConfigError(f"--keep-fields {clash}: the output has fields of these names; keep other fields")
    settings = {**prm_settings(args), "keep_fields": keep, "aggregation": args.aggregation, "alpha": args.alpha}

    # Every row is checked before the model loads: a bad row 50,000 fails in seconds, not after hours of scoring.
    table = load_rows(args.input, args.config, args.split)
    check_columns(table.rows, [*fields.required(), *keep])
    pairs, bad = table.split(lambda index, row: row_pair(index, row, fields))
    handle_bad_rows(bad, args.on_bad_row, "before scoring; each is written with an 'error' field", "score")
    items = sorted([*pairs, *bad], key=lambda item: item.row)

    def output_row(pair: Pair, result: Any) -> dict[str, Any]:
        record = result_record(pair.row, result)
        kept = {name: table.rows[pair.row].get(name) for name in keep}  # type: ignore[union-attr]
        return {"index": pair.row, **kept, "score": record_reward(record, args.aggregation, args.alpha), **record}

    store = ScoreStore(args.output, settings, fingerprint(items))
    records = score_pairs(items, lambda: scorer_from_args(args), store, chunk_size=args.chunk_size,
                          progress=not args.no_progress, to_record=output_row)
    unscored = [table.bad_row(row, r["error"]) for row, r in records.items() if "error" in r and "step_scores" in r]
    if unscored:
        print(f"reasonflux-rl score: no score for {describe_bad_rows(unscored)} (written with an 'error' field)",
              file=sys.stderr)
