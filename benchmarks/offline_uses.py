"""The paper's offline uses of the scorer on the R1-style lab: Best-of-N with each of its two PRMs. One JSON object.

    python benchmarks/offline_uses.py [--quick] [--out DIR]

``best_of_n``: ``reasonflux-rl bon`` on the lab's 47 held-out problems (``builtin:lab_r1``, test split), with 16
candidates of each sampled once from the shipped warm-start policy (``reasonflux_rl/lab/assets/r1/policy``) at
temperature 1 (as GRPO samples it), 400 new tokens, seed 0; the same candidates are picked by ``prm``,
``majority``, ``weighted_majority`` (answers grouped, each group's PRM scores summed), ``random`` and ``oracle`` for
N = 1, 2, 4, 8, 16, once with the ``standard`` PRM and once with the ``trajectory_aware`` one (mean of the step
scores, no system prompt, the thinking pre-filled as the policy's template does). Target: weighted majority with the
trajectory-aware PRM at least matches majority vote at N = 16. ``--quick``: 6 problems, 4 candidates of 64 tokens.

The data-selection half of the paper's offline uses (``select`` top-k by each PRM, then SFT on each selection) is not
in this benchmark yet.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reasonflux_rl.data import lab_path  # noqa: E402
from reasonflux_rl.tools import bon  # noqa: E402

R1 = REPO / "reasonflux_rl/lab/assets/r1"
PRMS = ("standard", "trajectory_aware")
TARGET_N = 16


def held_out_problems(out: Path, count: int | None) -> Path:
    """The R1-style lab's held-out problems (the first ``count``), as ``bon`` reads them (``problem``, ``solution``)."""
    lines = lab_path("test", "builtin:lab_r1").read_text().splitlines()[:count]
    path = out / "problems.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def best_of_n(out: Path, problems: Path, n: int, max_new_tokens: int) -> dict:
    """Both PRMs' Best-of-N tables on one set of sampled candidates (the first call samples and saves them)."""
    candidates = out / "candidates.jsonl"
    prm_options = ["--system-prompt", "", "--thinking-prefilled", "--aggregation", "mean", "--workers", "1",
                   "--no-progress", "--no-plot"]
    tables, seconds = {}, {}
    for name in PRMS:
        started = time.perf_counter()
        source = (["--input", str(candidates)] if candidates.exists() else
                  ["--input", str(problems), "--policy", str(R1 / "policy"), "--n", str(n), "--backend",
                   "transformers", "--max-new-tokens", str(max_new_tokens), "--temperature", "1.0", "--top-p",
                   "1.0", "--seed", "0", "--candidates-out", str(candidates)])
        output = out / f"bon_{name}.json"
        bon.main([*source, "--prm", str(R1 / f"prm_{name}"), "--output", str(output), "--ns",
                  ",".join(str(k) for k in (1, 2, 4, 8, 16) if k <= n), *prm_options])
        tables[name] = json.loads(output.read_text())["table"]
        seconds[name] = round(time.perf_counter() - started, 1)
    at_n = {name: next(row for row in table if row["n"] == n) for name, table in tables.items()}
    aware = at_n["trajectory_aware"]
    return {
        "problems": len(problems.read_text().splitlines()), "candidates_per_problem": n, "tables": tables,
        "seconds": seconds,
        "target": f"weighted_majority with the trajectory-aware PRM >= majority at N = {n}",
        "target_met": aware["weighted_majority"] >= aware["majority"],
        f"at_n{n}": at_n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 problems, 4 candidates of 64 tokens: a check")
    parser.add_argument("--out", type=Path, default=None, help="where candidates, tables and offline_uses.json go")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="offline-uses-"))
    out.mkdir(parents=True, exist_ok=True)
    count, n, tokens = (6, 4, 64) if args.quick else (None, TARGET_N, 400)
    with redirect_stdout(sys.stderr):  # the JSON alone on stdout
        report = {"benchmark": "offline_uses", "lab": "r1", "quick": args.quick,
                  "best_of_n": best_of_n(out, held_out_problems(out, count), n, tokens)}
    (out / "offline_uses.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
