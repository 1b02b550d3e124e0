"""``reasonflux-rl bon``: Best-of-N accuracy of PRM-picked answers against (PRM-weighted) majority vote, random pick
and oracle.

The paper's third use of ReasonFlux-PRM (test-time scaling). For each problem there are candidate completions (read
from the input, or sampled from a policy by [`reasonflux_rl.tools.bon_generate`]); for each N in {1, 2, 4, 8, 16} up
to the candidates available, every method looks at the *same first N candidates* of each problem, and its pick is
judged by the outcome reward (math-verify against the reference answer,
[`reasonflux_rl.rewards.outcome.OutcomeReward`]):

- ``prm``: the candidate with the highest aggregated PRM score; ties go to the earliest candidate, and a candidate
  the PRM could not score (no step scored, or a non-finite score) ranks below every scored one.
- ``majority``: candidates are grouped by their final answer (see [`answer_key`]); the largest group wins, ties go to
  the group whose first member comes first; its first member is the pick. Candidates without an answer do not vote.
- ``weighted_majority``: candidates are grouped by their final answer as for ``majority``, each group's PRM scores
  are summed (an unscored candidate adds 0), and the group with the largest sum wins, ties to the earliest group; its
  first member is the pick (the rule of huggingface/search-and-learn).
- ``random``: the *expected* accuracy of a uniformly random pick, i.e. the mean correctness of the first N, computed
  exactly rather than from one seeded draw: no sampling noise, nothing to seed.
- ``oracle``: 1 when any of the first N is correct (pass@N of these candidates), the ceiling of any picker.

At N = 1 all five methods are the first candidate's correctness. Candidates past the largest N evaluated are cut
before judging and scoring. PRM scores are cached beside the output as they are computed
([`reasonflux_rl.tools.store.ScoreStore`]), so an interrupted run resumes without rescoring.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.options import add_prm_arguments, prm_settings, scorer_from_args
from reasonflux_rl.tools.bon_generate import generate_candidates
from reasonflux_rl.tools.outputs import write_json, write_rows
from reasonflux_rl.tools.pipeline import InputRows, Scored, read_input, record_reward, score_stored
from reasonflux_rl.tools.rows import (
    BadRow,
    Pair,
    add_input_arguments,
    describe_bad_rows,
    handle_bad_rows,
    integer_or_text_field,
    text_field,
)
from reasonflux_rl.tools.sampling import BACKENDS, resolve_backend
from reasonflux_rl.trajectory import prompt_text, split_trajectory

NS: tuple[int, ...] = (1, 2, 4, 8, 16)
METHODS: tuple[str, ...] = ("prm", "majority", "weighted_majority", "random", "oracle")


@dataclass(frozen=True)
class Problem:
    """One Best-of-N problem: its input row, the problem text, the reference answer and the candidates.

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon import Problem
    >>> Problem(0, "1+1?", "2", ["</think>\\n\\\\boxed{2}", "</think>\\n\\\\boxed{3}"]).candidates[1]
    '</think>\\n\\\\boxed{3}'

    ```
    """

    row: int
    problem: str
    answer: str
    candidates: list[str]


# ----------------------------------------------------------------------------------------------- rows


def _candidates(row: Mapping, name: str, reasons: list[str]) -> list[str] | None:
    value = row.get(name)
    if value is None:
        reasons.append(f"missing {name!r}")
        return None
    if not isinstance(value, (list, tuple)):
        reasons.append(f"{name!r} is a {type(value).__name__}, not a list of strings")
        return None
    if not value:
        reasons.append(f"{name!r} is an empty list")
        return None
    for index, candidate in enumerate(value):
        if not isinstance(candidate, str):
            reasons.append(f"candidate {index} of {name!r} is a {type(candidate).__name__}, not a string")
        elif not candidate.strip():
            reasons.append(f"candidate {index} of {name!r} is empty")
    return None if reasons else list(value)


def problem_from_row(index: int, row: Mapping, fields: Mapping[str, str | None]) -> Problem | str:
    """The [`Problem`] of an input row, or why it gives none (every problem with it).

    ``fields`` maps ``problem``, ``answer`` and ``candidates`` to the row's field names; ``candidates=None`` (the
    candidates will be generated) gives a problem without candidates.

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon import problem_from_row
    >>> fields = {"problem": "problem", "answer": "solution", "candidates": "candidates"}
    >>> problem_from_row(0, {"problem": "1+1?", "solution": 2, "candidates": ["2"]}, fields)
    Problem(row=0, problem='1+1?', answer='2', candidates=['2'])
    >>> print(problem_from_row(1, {"problem": "1+1?", "candidates": ["2", 3, " "]}, fields))
    missing 'solution'; candidate 1 of 'candidates' is a int, not a string; candidate 2 of 'candidates' is empty

    ```
    """
    reasons: list[str] = []
    problem = text_field(row, fields["problem"], reasons, chat=prompt_text)
    answer = integer_or_text_field(row, fields["answer"], reasons)
    candidates: list[str] | None = []
    if fields.get("candidates") is not None:
        candidates = _candidates(row, fields["candidates"], reasons)
    if reasons:
        return "; ".join(reasons)
    return Problem(index, problem, answer, candidates)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- the methods


def _canonical(value: Any) -> str:
    import sympy

    # Two cheap equivalences that full math-verify comparison would also find: 0.5 is 1/2, "x = 3" is 3.
    if isinstance(value, sympy.Eq) and isinstance(value.lhs, sympy.Symbol):
        value = value.rhs
    if isinstance(value, sympy.Float):
        value = sympy.nsimplify(value, rational=True)
    return str(value)


def answer_key(completion: str, thinking_prefilled: bool = False) -> str | None:
    """The final answer of a completion as a canonical string, for majority voting; ``None`` when it has none.

    The answer is extracted as the outcome reward extracts it (from the response after the last ``</think>``, boxed
    first; a completion that never closed its thinking has none) and parsed by math-verify; the key is sympy's
    string of the parsed value, after turning decimals into fractions and ``x = v`` into ``v``. So ``\\frac12``,
    ``\\dfrac{1}{2}`` and ``0.5`` vote together and ``{2, 1}`` equals ``{1, 2}``. Deciding equivalence with
    math-verify's ``verify`` for every pair of candidates would merge more forms, but costs N^2 sympy comparisons per
    problem, each of which can hang; one parse per candidate is linear.

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon import answer_key
    >>> [answer_key(f"</think>\\nSo $\\\\boxed{{{a}}}$.") for a in ("\\\\frac12", "\\\\dfrac{1}{2}", "0.5", "x=0.5")]
    ['1/2', '1/2', '1/2', '1/2']
    >>> answer_key("</think>\\nNo answer here."), answer_key("<think>\\n\\\\boxed{2} ... cut off")
    (None, None)

    ```
    """
    from math_verify import parse

    from reasonflux_rl.rewards.outcome import (
        _ANSWER_CONFIG,  # the outcome reward's extraction rules, so that votes and judging agree
    )

    trajectory = split_trajectory(completion, thinking_prefilled)
    if not trajectory.closed or not trajectory.response:
        return None
    # math-verify's own timeout uses signal.alarm, which only works in the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        parsed = parse(
            trajectory.response,
            extraction_config=_ANSWER_CONFIG,
            extraction_mode="first_match",
            parsing_timeout=timeout,
        )
        return _canonical(parsed[0]) if parsed else None
    except Exception:  # noqa: BLE001 -- an answer sympy cannot handle has no key: no vote, judged on its own
        return None


def prm_pick(scores: Sequence[float | None], n: int) -> int:
    """Index of the best-scored of the first ``n`` candidates; ties to the earliest, unscored (``None``) last.

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon import prm_pick
    >>> prm_pick([0.2, 0.9, 0.9, 1.0], 3), prm_pick([None, 0.1], 2), prm_pick([None, None], 2)
    (1, 1, 0)

    ```
    """
    best = 0
    for index in range(1, n):
        score, top = scores[index], scores[best]
        if score is not None and (top is None or score > top):
            best = index
    return best


def majority_pick(keys: Sequence[str | None], n: int) -> int:
    """Index of the first member of the largest answer group among the first ``n`` candidates.

    Ties go to the group whose first member comes first; candidates without an answer (``None``) do not vote; with
    no answer at all the first candidate is the pick.

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon import majority_pick
    >>> majority_pick(["3", "4", "4", "3"], 3), majority_pick(["3", "4", "4", "3"], 4), majority_pick([None, "5"], 2)
    (1, 0, 1)

    ```
    """
    return weighted_majority_pick(keys, [1.0] * len(keys), n)


def weighted_majority_pick(keys: Sequence[str | None], scores: Sequence[float | None], n: int) -> int:
    """Index of the first member of the answer group with the largest summed PRM score among the first ``n``.

    Candidates without an answer do not vote, an unscored one adds 0 to its group, ties go to the group whose first
    member comes first; with no answer at all the first candidate is the pick.

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon import weighted_majority_pick
    >>> keys = ["3", "4", "4", "3"]
    >>> weighted_majority_pick(keys, [0.9, 0.3, 0.4, None], 3), weighted_majority_pick(keys, [0.9, 0.3, 0.4, 0.5], 4)
    (0, 0)
    >>> weighted_majority_pick(["3", "4", "4"], [0.5, 0.3, 0.4], 3), weighted_majority_pick([None, "5"], [1.0, 0.1], 2)
    (1, 1)

    ```
    """
    totals: dict[str, float] = {}
    first: dict[str, int] = {}
    for index, (key, score) in enumerate(zip(keys[:n], scores[:n])):
        if key is not None:
            totals[key] = totals.get(key, 0.0) + (score or 0.0)
            first.setdefault(key, index)
    if not totals:
        return 0
    winner = min(totals, key=lambda key: (-totals[key], first[key]))
    return first[winner]


def problem_outcomes(
    correct: Sequence[float], scores: Sequence[float | None], keys: Sequence[str | None], n: int
) -> dict[str, float]:
    """Each method's correctness on one problem with its first ``n`` candidates (``random`` is an expectation).

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon import problem_outcomes
    >>> problem_outcomes([0.0, 1.0, 0.0, 1.0], [0.9, 0.1, 0.5, 0.2], ["3", "4", "3", "4"], 4)
    {'prm': 0.0, 'majority': 0.0, 'weighted_majority': 0.0, 'random': 0.5, 'oracle': 1.0}

    ```
    """
    if not 1 <= n <= len(correct):
        raise ValueError(f"n={n} must be between 1 and the {len(correct)} candidates")
    first = correct[:n]
    return {
        "prm": float(correct[prm_pick(scores, n)]),
        "majority": float(correct[majority_pick(keys, n)]),
        "weighted_majority": float(correct[weighted_majority_pick(keys, scores, n)]),
        "random": math.fsum(first) / n,
        "oracle": float(max(first)),
    }


def best_of_n(
    correct: Sequence[Sequence[float]],
    scores: Sequence[Sequence[float | None]],
    keys: Sequence[Sequence[str | None]],
    ns: Sequence[int] = NS,
) -> list[dict[str, float]]:
    """The Best-of-N table: for each ``n``, each method's accuracy (mean over problems of [`problem_outcomes`]).

    ``correct[i][j]`` is the outcome (1.0 or 0.0) of candidate ``j`` of problem ``i``, ``scores[i][j]`` its
    aggregated PRM score and ``keys[i][j]`` its [`answer_key`].

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon import best_of_n
    >>> correct = [[0.0, 1.0], [1.0, 1.0]]
    >>> scores = [[0.2, 0.8], [0.5, 0.1]]
    >>> keys = [["7", "8"], ["1", "1"]]
    >>> for row in best_of_n(correct, scores, keys, ns=[1, 2]):
    ...     print(row)
    {'n': 1, 'prm': 0.5, 'majority': 0.5, 'weighted_majority': 0.5, 'random': 0.5, 'oracle': 0.5}
    {'n': 2, 'prm': 1.0, 'majority': 0.5, 'weighted_majority': 1.0, 'random': 0.75, 'oracle': 1.0}

    ```
    """
    if not correct:
        raise ValueError("no problems to evaluate")
    table = []
    for n in ns:
        outcomes = [problem_outcomes(c, s, k, n) for c, s, k in zip(correct, scores, keys)]
        table.append({"n": n, **{m: math.fsum(o[m] for o in outcomes) / len(outcomes) for m in METHODS}})
    return table


def usable_ns(counts: Sequence[int], ns: Sequence[int] = NS) -> list[int]:
    """The ``ns`` that every problem has enough candidates for.

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon import usable_ns
    >>> usable_ns([16, 6, 9]), usable_ns([3], [1, 3, 5])
    ([1, 2, 4], [1, 3])

    ```
    """
    fewest = min(counts, default=0)
    return [n for n in ns if n <= fewest]


# ----------------------------------------------------------------------------------------------- judging and scoring


def unparseable_answers(problems: Sequence[Problem], reward: Any) -> list[Problem]:
    """The problems whose reference answer math-verify cannot parse: the outcome reward (``reward.score``, an
    ``OutcomeReward``) gives them ``None`` whatever the completion, so an empty one finds them before any candidate
    is generated, cut or judged.

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon import Problem, unparseable_answers
    >>> from reasonflux_rl.rewards.outcome import OutcomeReward
    >>> with OutcomeReward(num_workers=1) as reward:
    ...     [p.row for p in unparseable_answers([Problem(0, "1+1?", "2", []), Problem(1, "?", "hello", [])], reward)]
    [1]

    ```
    """
    outcomes = reward.score([""] * len(problems), [p.answer for p in problems])
    return [problem for problem, outcome in zip(problems, outcomes) if outcome is None]


def judge(problems: Sequence[Problem], reward: Any) -> list[list[float]]:
    """Outcome (1.0/0.0) of every candidate, by ``reward.score(completions, golds)``; every reference answer must
    parse (see [`unparseable_answers`]).

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon import Problem, judge
    >>> from reasonflux_rl.rewards.outcome import OutcomeReward
    >>> problems = [Problem(0, "1+1?", "2", ["</think>\\n\\\\boxed{2}", "</think>\\n\\\\boxed{3}"])]
    >>> with OutcomeReward(num_workers=1) as reward:
    ...     judge(problems, reward)
    [[1.0, 0.0]]

    ```
    """
    completions = [c for p in problems for c in p.candidates]
    flat = reward.score(completions, [p.answer for p in problems for _ in p.candidates])
    if any(outcome is None for outcome in flat):
        raise RuntimeError("a reference answer did not parse; check them with unparseable_answers first")
    outcomes, start = [], 0
    for problem in problems:
        outcomes.append([float(o) for o in flat[start : start + len(problem.candidates)]])
        start += len(problem.candidates)
    return outcomes


def candidate_pairs(problems: Sequence[Problem]) -> list[list[Pair]]:
    """Each problem's candidates as scorer pairs, numbered through all problems (the rows of the PRM score cache).

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon import Problem, candidate_pairs
    >>> grouped = candidate_pairs([Problem(0, "1+1?", "2", ["2", "3"]), Problem(4, "2+2?", "4", ["4"])])
    >>> [[(p.row, p.problem, p.completion) for p in group] for group in grouped]
    [[(0, '1+1?', '2'), (1, '1+1?', '3')], [(2, '2+2?', '4')]]

    ```
    """
    grouped, start = [], 0
    for problem in problems:
        grouped.append([Pair(start + j, problem.problem, c) for j, c in enumerate(problem.candidates)])
        start += len(problem.candidates)
    return grouped


# ----------------------------------------------------------------------------------------------- the command


def _parse_ns(text: str) -> list[int]:
    try:
        ns = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ConfigError(f"--ns={text!r} must be a comma-separated list of integers") from None
    if not ns or ns[0] < 1:
        raise ConfigError(f"--ns={text!r} must list integers >= 1")
    return ns


def make_parser() -> argparse.ArgumentParser:
    """The ``reasonflux-rl bon`` argument parser.

    Example:
    ```python
    >>> from reasonflux_rl.tools.bon import make_parser
    >>> args = make_parser().parse_args(["--input", "p.jsonl", "--prm", "ckpt", "--output", "bon.json"])
    >>> args.ns, args.candidates_field, args.policy
    ('1,2,4,8,16', 'candidates', None)

    ```
    """
    parser = argparse.ArgumentParser(
        prog="reasonflux-rl bon",
        description="Best-of-N accuracy of PRM-picked answers against majority vote, random pick and oracle.",
    )
    add_input_arguments(parser)
    parser.add_argument("--output", required=True, help="the JSON table (a .json file)")
    parser.add_argument("--cache", default=None, help="PRM score cache (default: the output with .prm-cache.jsonl)")
    parser.add_argument("--plot", default=None, help="PNG figure (default: the output with .png)")
    parser.add_argument("--no-plot", action="store_true", help="write no figure (matplotlib not needed)")
    parser.add_argument("--ns", default="1,2,4,8,16", help="candidate counts to evaluate, up to those available")
    parser.add_argument("--problem-field", default="problem", help="the problem: a string or chat messages")
    parser.add_argument("--answer-field", default="solution", help="reference answer")
    parser.add_argument("--candidates-field", default="candidates", help="list of completions per problem")
    parser.add_argument("--workers", type=int, default=None, help="outcome verification processes (default: cores)")
    parser.add_argument("--timeout-seconds", type=float, default=5.0, help="per-candidate verification limit")
    generation = parser.add_argument_group("generation (instead of --candidates-field)")
    generation.add_argument("--policy", default=None, help="local policy checkpoint to sample candidates from")
    generation.add_argument("--n", type=int, default=16, help="candidates per problem")
    generation.add_argument("--backend", default="auto", choices=BACKENDS, help="auto: vLLM when installed")
    generation.add_argument("--max-new-tokens", type=int, default=4096)
    generation.add_argument("--temperature", type=float, default=0.6)
    generation.add_argument("--top-p", type=float, default=0.95)
    generation.add_argument("--seed", type=int, default=0)
    generation.add_argument("--candidates-out", default=None, help="default: <output>.candidates.jsonl")
    add_prm_arguments(parser)
    return parser


@dataclass(frozen=True)
class _Judged:
    """The problems left to evaluate (their candidates cut to the largest N), the rows dropped on the way, each
    candidate's outcome, the Ns evaluated and the file of generated candidates (``None`` when they were read)."""

    problems: list[Problem]
    bad: list[BadRow]
    correct: list[list[float]]
    ns: list[int]
    candidates_path: Path | None


def _check_options(args: argparse.Namespace) -> tuple[list[int], Path, Path | None, dict[str, Any]]:
    # Every option is checked before any work: a typo fails in seconds, not after generating and judging.
    ns = _parse_ns(args.ns)
    output = Path(args.output)
    if output.suffix != ".json":
        raise ConfigError(f"--output={args.output!r} must be a .json file")
    plot = None if args.no_plot else Path(args.plot) if args.plot else output.with_suffix(".png")
    if plot is not None:
        from reasonflux_rl.tools.plots import require_matplotlib

        require_matplotlib()
    settings = prm_settings(args)
    if args.policy is not None:
        resolve_backend(args.backend)
    return ns, output, plot, settings


def _read_problems(args: argparse.Namespace) -> InputRows[Problem]:
    generating = args.policy is not None
    fields = {"problem": args.problem_field, "answer": args.answer_field}
    fields["candidates"] = None if generating else args.candidates_field
    required = [f for f in fields.values() if f is not None]
    return read_input(args, required, lambda index, row: problem_from_row(index, row, fields), "bon",
                      when="before judging")


def _parseable(rows: InputRows[Problem], reward: Any, args: argparse.Namespace) -> tuple[list[Problem], list[BadRow]]:
    unparseable = [
        rows.table.bad_row(p.row, f"math-verify cannot parse the reference answer {p.answer!r:.60}")
        for p in unparseable_answers(rows.items, reward)
    ]
    handle_bad_rows(unparseable, args.on_bad_row, "before judging", "bon")
    skipped = {b.row for b in unparseable}
    problems = [p for p in rows.items if p.row not in skipped]
    bad = sorted(rows.bad + unparseable, key=lambda b: b.row)
    if not problems:
        raise ConfigError(f"no problem left to evaluate ({describe_bad_rows(bad)})")
    return problems, bad


def _with_generated(problems: list[Problem], args: argparse.Namespace, output: Path) -> tuple[list[Problem], Path]:
    texts = generate_candidates(
        args.policy,
        [p.problem for p in problems],
        args.n,
        backend=args.backend,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    problems = [Problem(p.row, p.problem, p.answer, c) for p, c in zip(problems, texts)]
    # Saved before judging: generation is the expensive part, and this file is a ready --input for a rerun.
    path = Path(args.candidates_out) if args.candidates_out else output.with_suffix(".candidates.jsonl")
    rows = [
        {
            "row_index": p.row,
            args.problem_field: p.problem,
            args.answer_field: p.answer,
            args.candidates_field: p.candidates,
        }
        for p in problems
    ]
    return problems, write_rows(rows, path)


def _judged(rows: InputRows[Problem], args: argparse.Namespace, ns: Sequence[int], output: Path) -> _Judged:
    from reasonflux_rl.rewards.outcome import OutcomeReward

    with OutcomeReward(
        num_workers=args.workers, timeout_seconds=args.timeout_seconds, thinking_prefilled=args.thinking_prefilled
    ) as reward:
        problems, bad = _parseable(rows, reward, args)
        candidates_path = None
        if args.policy is not None:
            problems, candidates_path = _with_generated(problems, args, output)
        used = usable_ns([len(p.candidates) for p in problems], ns)
        if not used:
            fewest = min(len(p.candidates) for p in problems)
            raise ConfigError(f"--ns={args.ns}: some problem has only {fewest} candidates")
        # No method looks past the largest N evaluated: the candidates beyond it are neither judged nor scored.
        problems = [replace(p, candidates=p.candidates[: used[-1]]) for p in problems]
        correct = judge(problems, reward)
    return _Judged(problems, bad, correct, used, candidates_path)


def _prm_scores(problems: Sequence[Problem], args: argparse.Namespace, settings: Mapping[str, Any],
                output: Path) -> tuple[list[list[float | None]], Scored]:
    grouped = candidate_pairs(problems)
    pairs = [pair for group in grouped for pair in group]
    cache = Path(args.cache) if args.cache else output.with_suffix(".prm-cache.jsonl")
    scored = score_stored(pairs, cache, settings, lambda: scorer_from_args(args), args, "bon", unit="candidates")
    scores = [[record_reward(scored.records[p.row], args.aggregation, args.alpha) for p in group] for group in grouped]
    return scores, scored


def _result(rows: InputRows[Problem], judged: _Judged, table: list[dict[str, float]],
            scores: list[list[float | None]], keys: list[list[str | None]], scored: Scored, ns: Sequence[int],
            args: argparse.Namespace) -> dict[str, Any]:
    return {
        "table": table,
        "ns": judged.ns,
        "ns_skipped": [n for n in ns if n not in judged.ns],
        "problems": len(judged.problems),
        "rows": len(rows.table.rows),
        "bad_rows": [asdict(b) for b in judged.bad],
        "unscored_candidates": sum(s is None for row in scores for s in row),
        "methods": {
            "prm": f"argmax of the {args.aggregation} PRM score among the first n (ties: earliest; unscored: last)",
            "majority": "largest group of equal final answers among the first n (ties: earliest group)",
            "weighted_majority": "group of equal final answers with the largest summed PRM score among the first n "
                                 "(unscored: 0; ties: earliest group)",
            "random": "expected accuracy of a uniform pick among the first n (exact mean, no sampling)",
            "oracle": "any of the first n correct",
        },
        "input": args.input,
        "policy": args.policy,
        "candidates": None if judged.candidates_path is None else str(judged.candidates_path),
        "prm": args.prm,
        "aggregation": args.aggregation,
        "alpha": args.alpha,
        "cache": str(scored.store.path),
        "per_problem": [
            {"row": p.row, "correct": c, "prm_scores": s, "answers": k}
            for p, c, s, k in zip(judged.problems, judged.correct, scores, keys)
        ],
    }


def _report(result: Mapping[str, Any], output: Path, plot: Path | None, args: argparse.Namespace) -> None:
    write_json(result, output)
    if plot is not None:
        from reasonflux_rl.tools.plots import bon_accuracy

        title = f"Best-of-N on {result['problems']} problems ({Path(args.prm).name}, {args.aggregation})"
        bon_accuracy(result["table"], plot, title=title)
    unscored = result["unscored_candidates"]
    if unscored:
        print(f"reasonflux-rl bon: the PRM gave {unscored} candidates no finite score; they rank last", file=sys.stderr)
    for row in result["table"]:
        print(f"n={row['n']:<2} " + "  ".join(f"{m} {row[m]:.3f}" for m in METHODS))
    print(f"table: {output}" + (f"\nfigure: {plot}" if plot else ""))


def main(argv: Sequence[str]) -> None:
    """Run ``reasonflux-rl bon`` (see ``--help`` and the module docstring).

    Example:
    ```python
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.tools.bon import main
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> work = Path(tempfile.mkdtemp())
    >>> prm = write_tiny_models(work).prm
    >>> row = {"problem": "1+1?", "solution": "2", "candidates": ["</think>\\n\\\\boxed{3}", "</think>\\n\\\\boxed{2}"]}
    >>> _ = (work / "bon.jsonl").write_text(json.dumps(row) + "\\n")
    >>> main(["--input", str(work / "bon.jsonl"), "--prm", str(prm), "--output", str(work / "bon.json"),
    ...       "--workers", "1", "--no-plot"])  # doctest: +ELLIPSIS
    n=1  prm 0.000  majority 0.000  weighted_majority 0.000  random 0.000  oracle 0.000
    n=2  prm ...  majority 0.000  weighted_majority ...  random 0.500  oracle 1.000
    table: .../bon.json

    ```
    """
    args = make_parser().parse_args(list(argv))
    ns, output, plot, settings = _check_options(args)
    rows = _read_problems(args)
    judged = _judged(rows, args, ns, output)
    scores, scored = _prm_scores(judged.problems, args, settings, output)
    keys = [[answer_key(c, args.thinking_prefilled) for c in p.candidates] for p in judged.problems]
    table = best_of_n(judged.correct, scores, keys, judged.ns)
    _report(_result(rows, judged, table, scores, keys, scored, ns, args), output, plot, args)
