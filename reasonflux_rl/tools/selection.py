"""``reasonflux-rl select``: score trajectory-response pairs with a PRM and keep the best (offline data selection).

The paper's first use of ReasonFlux-PRM: rank the (thinking trajectory, response) pairs that a teacher wrote and keep
the top ones for SFT (1k of 59k). Every row is scored with the PRM, its step scores are aggregated (``mean`` by
default, the paper's ``(1/T) * sum_t r_t``, plus ``alpha`` times a trajectory score when there is one) and the top
``k`` rows, or the top fraction, are written out with their scores, optionally balanced across a source column (e.g.
the model that wrote the row).

Guarantees, each tested:

- Ranking is by aggregated score, highest first; equal scores are ordered by input row index (earlier first), so
  the selection is deterministic.
- Every input row is either scored or reported in the summary as a bad row with its row number (see
  [`reasonflux_rl.tools.rows`]); a row the PRM gives no finite score is a bad row too. ``--on-bad-row error`` (the
  default) stops before scoring (or, for the PRM's, before selecting).
- Step scores are appended to a cache ([`reasonflux_rl.tools.store.ScoreStore`]) chunk by chunk as they are computed, so
  an interrupted run resumes where it stopped, without rescoring and without duplicate or lost rows; a cache from
  other PRM settings or another input is refused. Outputs are written atomically ([`reasonflux_rl.tools.outputs`]).
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.options import add_prm_arguments, prm_settings, scorer_from_args
from reasonflux_rl.tools.outputs import output_format, sibling, write_json, write_rows
from reasonflux_rl.tools.overlap import DEFAULT_BINS, Overlap, source_overlap
from reasonflux_rl.tools.pipeline import InputRows, Scored, read_input, record_reward, score_stored
from reasonflux_rl.tools.rows import (
    BadRow,
    Fields,
    Pair,
    add_field_arguments,
    add_input_arguments,
    fields_from_args,
    handle_bad_rows,
    row_pair,
)

# Columns added to every selected row. An input that already has one is refused rather than overwritten.
SCORE_COLUMNS = ("row_index", "prm_score", "prm_step_scores", "prm_num_steps", "prm_dropped_steps")

# ----------------------------------------------------------------------------------------------- selection


def rank(scores: Mapping[int, float]) -> list[int]:
    """Rows from the highest score to the lowest; equal scores in input row order.

    Example:
    ```python
    >>> from reasonflux_rl.tools.selection import rank
    >>> rank({4: 0.5, 1: 0.9, 2: 0.5, 0: 0.1})
    [1, 2, 4, 0]

    ```
    """
    return sorted(scores, key=lambda row: (-scores[row], row))


def selection_size(num_rows: int, top_k: int | None = None, top_fraction: float | None = None) -> int:
    """How many rows to keep: ``top_k`` (at most all), or ``floor(top_fraction * num_rows)``.

    Example:
    ```python
    >>> from reasonflux_rl.tools.selection import selection_size
    >>> selection_size(59_000, top_k=1000), selection_size(10, top_k=50), selection_size(100, top_fraction=0.29)
    (1000, 10, 29)

    ```
    """
    if (top_k is None) == (top_fraction is None):
        raise ConfigError("set exactly one of top_k and top_fraction")
    if top_k is not None:
        if top_k < 1:
            raise ConfigError(f"top_k={top_k} must be >= 1")
        return min(top_k, num_rows)
    if not 0 < top_fraction <= 1:  # type: ignore[operator]
        raise ConfigError(f"top_fraction={top_fraction} must be in (0, 1]")
    # The epsilon keeps 0.29 * 100 = 28.999999999999996 from flooring to 28.
    return min(num_rows, math.floor(top_fraction * num_rows + 1e-9))  # type: ignore[operator]


def _balanced_quotas(ranked: Mapping[str, list[int]], scores: Mapping[int, float], k: int) -> dict[str, int]:
    quota = {source: 0 for source in ranked}
    remaining = min(k, sum(len(rows) for rows in ranked.values()))
    while remaining:
        open_sources = [s for s in sorted(ranked) if quota[s] < len(ranked[s])]
        share = remaining // len(open_sources)
        if share == 0:
            # Fewer slots than sources: they go to the best next rows, ties to the earliest row.
            best = sorted(open_sources, key=lambda s: (-scores[ranked[s][quota[s]]], ranked[s][quota[s]]))
            for source in best[:remaining]:
                quota[source] += 1
            break
        for source in open_sources:
            take = min(share, len(ranked[source]) - quota[source])
            quota[source] += take
            remaining -= take
    return quota


def select_top(scores: Mapping[int, float], k: int, sources: Mapping[int, str] | None = None) -> list[int]:
    """The ``k`` best rows, in rank order (see [`rank`]).

    With ``sources`` the selection is balanced: every source gets an equal share of ``k``; a source with fewer rows
    than its share gives all its rows and the slots it leaves are shared equally among the others (water-filling);
    slots that cannot be shared equally go to the best remaining rows. Within a source, rows are taken best first.

    Example:
    ```python
    >>> from reasonflux_rl.tools.selection import select_top
    >>> scores = {0: 0.9, 1: 0.8, 2: 0.7, 3: 0.2, 4: 0.1, 5: 0.8}
    >>> select_top(scores, 3)
    [0, 1, 5]
    >>> select_top(scores, 4, sources={0: "A", 1: "A", 2: "A", 5: "A", 3: "B", 4: "B"})
    [0, 1, 3, 4]

    ```
    """
    if sources is None:
        return rank(scores)[:k]
    ranked: dict[str, list[int]] = {}
    for row in rank(scores):
        ranked.setdefault(sources[row], []).append(row)
    quota = _balanced_quotas(ranked, scores, k)
    chosen = [row for source, rows in ranked.items() for row in rows[: quota[source]]]
    return rank({row: scores[row] for row in chosen})


def _output_features(rows: Sequence[Mapping | None]) -> Any:
    features = getattr(rows, "features", None)
    if features is None:
        return None
    from datasets import Features, List, Value

    return Features(
        {
            **features,
            "row_index": Value("int64"),
            "prm_score": Value("float64"),
            "prm_step_scores": List(Value("float64")),
            "prm_num_steps": Value("int64"),
            "prm_dropped_steps": Value("int64"),
        }
    )


# ----------------------------------------------------------------------------------------------- the command


def make_parser() -> argparse.ArgumentParser:
    """The ``reasonflux-rl select`` argument parser.

    Example:
    ```python
    >>> from reasonflux_rl.tools.selection import make_parser
    >>> args = make_parser().parse_args(["--input", "d.jsonl", "--prm", "ckpt", "--top-k", "5", "--output", "o.jsonl"])
    >>> args.top_k, args.aggregation, args.on_bad_row
    (5, 'mean', 'error')

    ```
    """
    parser = argparse.ArgumentParser(
        prog="reasonflux-rl select",
        description="Score every row with a PRM and keep the top-k (or top fraction) by aggregated score.",
    )
    add_input_arguments(parser)
    parser.add_argument("--output", required=True, help="out.jsonl, out.parquet, or a directory (save_to_disk)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--top-k", type=int, help="keep this many rows")
    size.add_argument("--top-fraction", type=float, help="keep floor(fraction * scored rows) rows")
    parser.add_argument("--balance-sources", action="store_true", help="equal share per source (needs --source-field)")
    add_field_arguments(parser, source=True)
    parser.add_argument("--cache", default=None, help="score cache (default: <output>.prm-cache.jsonl)")
    parser.add_argument("--summary", default=None, help="JSON summary (default: <output>.summary.json)")
    parser.add_argument("--plot", default=None, help="PNG figure (default: <output>.scores.png)")
    parser.add_argument("--no-plot", action="store_true", help="write no figure (matplotlib not needed)")
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS, help="histogram bins for the overlap and figure")
    add_prm_arguments(parser)
    return parser


def _source_stats(scores: Mapping[int, float], sources: Mapping[int, str], selected: Sequence[int]) -> dict:
    chosen = set(selected)
    stats: dict[str, dict] = {}
    for source in sorted(set(sources.values())):
        values = [scores[row] for row in scores if sources[row] == source]
        kept = [scores[row] for row in scores if sources[row] == source and row in chosen]
        stats[source] = {
            "rows": len(values),
            "selected": len(kept),
            "mean": statistics.fmean(values),
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "threshold": min(kept) if kept else None,
        }
    return stats


@dataclass(frozen=True)
class _Ranking:
    """The rows with a score, every row without one (a bad row, or one the PRM gave no finite score), each row's
    source (with ``--source-field``) and the rows selected, best first."""

    scores: dict[int, float]
    bad: list[BadRow]
    sources: dict[int, str] | None
    selected: list[int]

    @property
    def threshold(self) -> float | None:
        return self.scores[self.selected[-1]] if self.selected else None


def _check_options(args: argparse.Namespace) -> tuple[Fields, dict[str, Any]]:
    # Every option is checked before any work: a typo fails in seconds, not after hours of scoring.
    fields = fields_from_args(args)
    if args.balance_sources and fields.source is None:
        raise ConfigError("--balance-sources needs --source-field")
    if args.bins < 1:
        raise ConfigError(f"--bins={args.bins} must be >= 1")
    output_format(args.output)
    selection_size(1, args.top_k, args.top_fraction)
    settings = prm_settings(args)
    if not args.no_plot:
        from reasonflux_rl.tools.plots import require_matplotlib

        require_matplotlib()
    return fields, settings


def _rank(rows: InputRows[Pair], scored: Scored, args: argparse.Namespace, fields: Fields) -> _Ranking:
    records = scored.records
    scores = {row: record_reward(record, args.aggregation, args.alpha) for row, record in records.items()}
    unscored = [rows.table.bad_row(row, records[row]["error"]) for row, score in scores.items() if score is None]
    handle_bad_rows(unscored, args.on_bad_row, f"after scoring; the scores are cached in {scored.store.path}", "select")
    bad = sorted(rows.bad + unscored, key=lambda b: b.row)
    kept: dict[int, float] = {row: score for row, score in scores.items() if score is not None}
    if len(kept) + len(bad) != len(rows.table.rows):  # every input row is accounted for, once
        raise RuntimeError(f"{len(rows.table.rows)} rows in, {len(kept)} scored + {len(bad)} bad")
    sources = {p.row: p.source for p in rows.items if p.row in kept} if fields.source is not None else None
    k = selection_size(len(kept), args.top_k, args.top_fraction)
    selected = select_top(kept, k, sources if args.balance_sources else None)
    return _Ranking(kept, bad, sources, selected)


def _write_selection(rows: InputRows[Pair], scored: Scored, ranking: _Ranking, output: Path) -> None:
    records = scored.records
    out_rows = [
        {
            **rows.table.rows[row],  # type: ignore[dict-item]
            "row_index": row,
            "prm_score": ranking.scores[row],
            "prm_step_scores": records[row]["step_scores"],
            "prm_num_steps": records[row]["num_steps"],
            "prm_dropped_steps": records[row]["dropped_steps"],
        }
        for row in ranking.selected
    ]
    try:
        write_rows(out_rows, output, _output_features(rows.table.rows))
    except ConfigError as err:
        raise ConfigError(f"{err} (the scores are cached in {scored.store.path}: a rerun does not rescore)") from err


def _figure(ranking: _Ranking, groups: Mapping[str, list[float]], overlap: Overlap, per_source: Mapping[str, dict],
            args: argparse.Namespace) -> Path | None:
    if args.no_plot:
        return None
    from reasonflux_rl.tools.plots import score_distributions

    return score_distributions(
        groups,
        Path(args.plot) if args.plot else sibling(args.output, ".scores.png"),
        threshold=None if args.balance_sources else ranking.threshold,
        source_thresholds={s: v["threshold"] for s, v in per_source.items()} if args.balance_sources else None,
        overlap=overlap.value,
        bins=args.bins,
        bounds=overlap.bounds,
        title=f"PRM scores ({args.aggregation}) of {len(ranking.scores)} rows, {len(ranking.selected)} selected",
    )


def _summary(rows: InputRows[Pair], scored: Scored, ranking: _Ranking, overlap: Overlap,
             per_source: Mapping[str, dict], figure: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "input": args.input,
        "prm": args.prm,
        "aggregation": args.aggregation,
        "alpha": args.alpha,
        "fields": asdict(fields_from_args(args)),
        "rows": len(rows.table.rows),
        "scored": len(ranking.scores),
        "bad_rows": [asdict(b) for b in ranking.bad],
        "on_bad_row": args.on_bad_row,
        "selection": {
            "top_k": args.top_k,
            "top_fraction": args.top_fraction,
            "balance_sources": args.balance_sources,
            "selected": len(ranking.selected),
            "threshold": ranking.threshold,
        },
        "sources": per_source,
        "overlap": {
            "value": overlap.value,
            "pairs": overlap.pairs,
            "definition": "mean over pairs of sources of sum_b min(p_b, q_b), p and q the fractions of each source's "
            f"scores in {overlap.bins} equal-width bins over {list(overlap.bounds)}",
            "bins": overlap.bins,
            "bounds": list(overlap.bounds),
        },
        "output": str(Path(args.output)),
        "cache": str(scored.store.path),
        "figure": None if figure is None else str(figure),
        "fingerprint": scored.store.fingerprint,
    }


def _report(rows: InputRows[Pair], scored: Scored, ranking: _Ranking, args: argparse.Namespace) -> None:
    scores, sources = ranking.scores, ranking.sources
    groups: dict[str, list[float]] = {}
    for row in sorted(scores):
        groups.setdefault(sources[row] if sources else "all", []).append(scores[row])
    overlap = source_overlap(groups, args.bins)
    per_source = _source_stats(scores, sources, ranking.selected) if sources else {}
    figure = _figure(ranking, groups, overlap, per_source, args)
    summary = _summary(rows, scored, ranking, overlap, per_source, figure, args)
    summary_path = write_json(summary, Path(args.summary) if args.summary else sibling(args.output, ".summary.json"))
    threshold = "none" if ranking.threshold is None else f"{ranking.threshold:.4f}"
    print(f"selected {len(ranking.selected)} of {len(scores)} scored rows ({len(ranking.bad)} bad), threshold "
          f"{threshold}")
    print(f"output:  {Path(args.output)}\nsummary: {summary_path}" + (f"\nfigure:  {figure}" if figure else ""))


def main(argv: Sequence[str]) -> None:
    """Run ``reasonflux-rl select`` (see ``--help`` and the module docstring).

    Example:
    ```python
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.tools.selection import main
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> work = Path(tempfile.mkdtemp())
    >>> prm = write_tiny_models(work).prm
    >>> text = "<think>\\nAdd {}.\\n</think>\\n\\n\\\\boxed{{2}}"
    >>> rows = [{"problem": "1+1?", "completion": text.format(i)} for i in range(4)]
    >>> _ = (work / "pairs.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> main(["--input", str(work / "pairs.jsonl"), "--prm", str(prm), "--top-k", "2",
    ...       "--output", str(work / "selected.jsonl"), "--no-plot"])  # doctest: +ELLIPSIS
    selected 2 of 4 scored rows (0 bad), threshold ...
    output:  .../selected.jsonl
    summary: .../selected.summary.json

    ```
    """
    args = make_parser().parse_args(list(argv))
    fields, settings = _check_options(args)
    rows = read_input(args, fields.required(), lambda index, row: row_pair(index, row, fields), "select",
                      added=SCORE_COLUMNS)
    # The cache holds step scores: the aggregation, alpha and the selection apply after it, so changing them
    # re-selects without rescoring.
    cache = Path(args.cache) if args.cache else sibling(args.output, ".prm-cache.jsonl")
    scored = score_stored(rows.items, cache, settings, lambda: scorer_from_args(args), args, "select")
    ranking = _rank(rows, scored, args, fields)
    _write_selection(rows, scored, ranking, Path(args.output))
    _report(rows, scored, ranking, args)
