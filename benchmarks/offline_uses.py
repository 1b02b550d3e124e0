"""The paper's offline uses of the scorer on the R1-style lab, Best-of-N and data selection, with each of its two PRMs.

    python benchmarks/offline_uses.py [--quick] [--out DIR]

``best_of_n``: ``reasonflux-rl bon`` on the lab's 47 held-out problems (``builtin:lab_r1``, test split), with 16
candidates of each sampled once from the shipped warm-start policy (``reasonflux_rl/lab/assets/r1/policy``) at
temperature 1 (as GRPO samples it), 400 new tokens, seed 0; the same candidates are picked by ``prm``,
``majority``, ``weighted_majority`` (answers grouped, each group's PRM scores summed), ``random`` and ``oracle`` for
N = 1, 2, 4, 8, 16, once with the ``standard`` PRM and once with the ``trajectory_aware`` one (mean of the step
scores, no system prompt, the thinking pre-filled as the policy's template does). Target: weighted majority with the
trajectory-aware PRM at least matches majority vote at N = 16. ``--quick``: 6 problems, 4 candidates of 64 tokens.

``data_selection`` (the paper's SFT table, in miniature): a pool of 256 trajectory-response pairs of train problems
of mixed quality (64 samples of the warm-start policy at temperature 1 and 64 at 0.7, 400 new tokens, and 128
solutions the lab's writer thinks messily, in the style its PRMs were trained on: slips noticed at 0.2 and never
noticed at 0.4 a step); ``reasonflux-rl select`` keeps the top 64 by each PRM (the paper's eq. 11 score with no
trajectory term: the mean step score; the same PRM options as above); the lab's base policy (the shipped chains
policy, which knows the functions but not the R1 format: the warm start's own base) is fine-tuned with
``SFTTrainer`` on each selection, on 64 random pairs of the pool (drawn anew for each seed) and on the whole pool,
each for the same 64 steps of 16 pairs (learning rate 1e-3, cosine, 6 warm-up steps), with 5 seeds; each tuned
policy's held-out accuracy is measured on the 47 held-out problems, 8 samples each at temperature 1 (the figure
compared) and greedy. Target: the trajectory-aware PRM's selection beats random-k by at least 5 points, and by more
than twice the standard error of the difference over seeds. Also reported: the share of right final answers in
each selection, its mean length and its rows by source. One JSON object; the figure ``offline_uses.png`` in
``--out``. ``--quick``: a pool of 32, 8 kept, 4 steps of 4, 1 seed, 6 held-out problems.
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

import math  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from reasonflux_rl.data import lab_path  # noqa: E402
from reasonflux_rl.lab.build import (  # noqa: E402
    TASKS,
    LabBuildArguments,
    base_policy,
    fine_tune_policy,
    sample_completions,
    write_jsonl,
)
from reasonflux_rl.lab.r1_build import r1_policy_accuracy  # noqa: E402
from reasonflux_rl.lab.task import boxed_answer, problems  # noqa: E402
from reasonflux_rl.lab.thinking import ThinkingStyle, labelled_r1_solutions  # noqa: E402
from reasonflux_rl.tools import bon, selection  # noqa: E402

R1 = REPO / "reasonflux_rl/lab/assets/r1"
PRMS = ("standard", "trajectory_aware")
TARGET_N = 16
# The PRMs read pairs as the lab's GRPO runs score them: no system prompt, the thinking pre-filled by the template.
PRM_OPTIONS = ["--system-prompt", "", "--thinking-prefilled", "--aggregation", "mean", "--no-progress", "--no-plot"]
LENGTHS = TASKS["r1"].lengths
MESSY = ThinkingStyle(0.2, 0.4, 0.2, 0.1)  # the style the lab's PRMs were trained on (LabBuildArguments.prm_thinking)
SELECTION_GAIN = 5.0  # points of held-out accuracy the target asks of the trajectory-aware selection over random-k


@dataclass(frozen=True)
class SelectionBudget:
    """The data-selection experiment's sizes, fixed before any of its runs was read."""

    policy_samples: int = 64  # per temperature
    written: int = 128
    k: int = 64
    steps: int = 64
    batch: int = 16
    learning_rate: float = 1e-3
    warmup: int = 6
    seeds: int = 5
    held_out: int | None = None  # all 47
    eval_samples: int = 8
    max_new_tokens: int = 400


QUICK_SELECTION = SelectionBudget(policy_samples=8, written=16, k=8, steps=4, batch=4, warmup=1, seeds=1, held_out=6,
                                  eval_samples=1, max_new_tokens=64)


def held_out_problems(out: Path, count: int | None) -> Path:
    """The R1-style lab's held-out problems (the first ``count``), as ``bon`` reads them (``problem``, ``solution``)."""
    lines = lab_path("test", "builtin:lab_r1").read_text().splitlines()[:count]
    path = out / "problems.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def best_of_n(out: Path, problems: Path, n: int, max_new_tokens: int) -> dict:
    """Both PRMs' Best-of-N tables on one set of sampled candidates (the first call samples and saves them)."""
    candidates = out / "candidates.jsonl"
    tables, seconds = {}, {}
    for name in PRMS:
        started = time.perf_counter()
        source = (["--input", str(candidates)] if candidates.exists() else
                  ["--input", str(problems), "--policy", str(R1 / "policy"), "--n", str(n), "--backend",
                   "transformers", "--max-new-tokens", str(max_new_tokens), "--temperature", "1.0", "--top-p",
                   "1.0", "--seed", "0", "--candidates-out", str(candidates)])
        output = out / f"bon_{name}.json"
        bon.main([*source, "--prm", str(R1 / f"prm_{name}"), "--output", str(output), "--ns",
                  ",".join(str(k) for k in (1, 2, 4, 8, 16) if k <= n), "--workers", "1", *PRM_OPTIONS])
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


def selection_pool(out: Path, budget: SelectionBudget) -> Path:
    """The pool to select from (see the module docstring), as ``select`` reads it, with each row's ``source`` and
    whether its boxed answer is the gold one (``right``)."""
    train = problems("train", lengths=LENGTHS)
    rng = random.Random("selection-pool")
    policy_dir = R1 / "policy"
    policy, tokenizer = AutoModelForCausalLM.from_pretrained(policy_dir), AutoTokenizer.from_pretrained(policy_dir)
    rows = []
    for temperature in (1.0, 0.7):
        drawn = rng.sample(train, budget.policy_samples)
        batch, texts = sample_completions(policy, tokenizer, drawn, 1, temperature, budget.max_new_tokens, seed=0)
        rows += [{"problem": p.text, "completion": text, "solution": str(p.answer), "source": f"policy T={temperature}"}
                 for p, text in zip(batch, texts)]
    rows += [{"problem": row["problem"], "completion": row["completion"], "solution": row["solution"],
              "source": "written (messy)"} for row in labelled_r1_solutions(train, budget.written, MESSY, rng)]
    for row in rows:
        row["right"] = boxed_answer(row["completion"]) == int(row["solution"])
    return write_jsonl(rows, out / "pool.jsonl")


def select_by(prm: str, pool: Path, out: Path, k: int) -> list[dict]:
    """``reasonflux-rl select`` of the top ``k`` pool rows by the PRM ``prm`` (rows it cannot read are skipped)."""
    output = out / f"selected_{prm}.jsonl"
    selection.main(["--input", str(pool), "--completion-field", "completion", "--prm", str(R1 / f"prm_{prm}"),
                    "--top-k", str(k), "--on-bad-row", "skip", "--output", str(output), *PRM_OPTIONS])
    return [json.loads(line) for line in output.read_text().splitlines()]


def tuned_accuracy(rows: list[dict], seed: int, budget: SelectionBudget) -> dict[str, float]:
    """The base policy fine-tuned on ``rows`` for the budget's steps; its held-out accuracy, sampled and greedy."""
    tokenizer = AutoTokenizer.from_pretrained(R1 / "policy")
    args = LabBuildArguments(task="r1", seed=seed)
    sft_rows = Dataset.from_list([
        {"prompt": tokenizer.apply_chat_template([{"role": "user", "content": row["problem"]}], tokenize=False,
                                                 add_generation_prompt=True),
         "completion": row["completion"] + tokenizer.eos_token} for row in rows])
    policy = fine_tune_policy(base_policy(tokenizer, args), tokenizer, sft_rows, max_steps=budget.steps,
                              per_device_train_batch_size=budget.batch, learning_rate=budget.learning_rate,
                              warmup_steps=budget.warmup, logging_steps=budget.steps, seed=seed)
    held_out = problems("eval", lengths=LENGTHS)[:budget.held_out]
    sampled = r1_policy_accuracy(policy, tokenizer, held_out, budget.eval_samples, 1.0, seed)
    greedy = r1_policy_accuracy(policy, tokenizer, held_out, 1, None, seed)
    return {"sampled": sampled["accuracy"], "greedy": greedy["accuracy"], "well_formed": sampled["well_formed"]}


def _arm_summary(per_seed: list[dict[str, float]], trained_on: list[list[dict]]) -> dict:
    sampled = [100 * r["sampled"] for r in per_seed]
    return {"sampled_accuracy": round(statistics.fmean(sampled), 2),
            "sampled_sd": round(statistics.stdev(sampled), 2) if len(sampled) > 1 else None,
            "greedy_accuracy": round(100 * statistics.fmean(r["greedy"] for r in per_seed), 2),
            "well_formed": round(statistics.fmean(r["well_formed"] for r in per_seed), 3),
            "per_seed_sampled": [round(a, 2) for a in sampled],
            **selection_makeup(trained_on)}


def selection_makeup(trained_on: list[list[dict]]) -> dict:
    """What an arm was fine-tuned on, over its seeds: the share of right final answers, the mean characters of a
    completion, and the rows of each pool source per seed."""
    rows = [r for seed_rows in trained_on for r in seed_rows]
    return {"right_answer_share": round(statistics.fmean(r["right"] for r in rows), 3),
            "mean_characters": round(statistics.fmean(len(r["completion"]) for r in rows)),
            "by_source": {k: v / len(trained_on) for k, v in sorted(Counter(r["source"] for r in rows).items())}}


def selection_gain(arms: dict[str, dict], arm: str, baseline: str) -> dict:
    """``arm``'s sampled accuracy minus ``baseline``'s (points) and its standard error over seeds (unpaired, as the
    learning benchmark's)."""
    a, b = arms[arm]["per_seed_sampled"], arms[baseline]["per_seed_sampled"]
    error = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) if len(a) > 1 else math.inf
    gain = statistics.fmean(a) - statistics.fmean(b)
    return {"gain": round(gain, 2), "standard_error": None if math.isinf(error) else round(error, 2),
            "beyond_noise": gain > 2 * error}


def data_selection(out: Path, budget: SelectionBudget) -> dict:
    """Select from the pool by each PRM, fine-tune on each selection, on random-k and on the pool; the table."""
    started = time.perf_counter()
    pool_path = selection_pool(out, budget)
    pool = [json.loads(line) for line in pool_path.read_text().splitlines()]
    selections = {prm: select_by(prm, pool_path, out, budget.k) for prm in PRMS}
    trained_on: dict[str, list[list[dict]]] = {name: [] for name in (*PRMS, "random", "pool")}
    per_seed: dict[str, list[dict[str, float]]] = {name: [] for name in trained_on}
    for seed in range(budget.seeds):
        drawn = random.Random(f"random-k-{seed}").sample(pool, budget.k)
        for name, rows in (*selections.items(), ("random", drawn), ("pool", pool)):
            trained_on[name].append(rows)
            per_seed[name].append(tuned_accuracy(rows, seed, budget))
    arms = {name: _arm_summary(per_seed[name], trained_on[name]) for name in per_seed}
    against_random = selection_gain(arms, "trajectory_aware", "random")
    warm_start = json.loads((R1 / "lab.json").read_text())
    return {
        "budget": asdict(budget),
        "warm_start_policy": {"sampled_accuracy": round(100 * warm_start["policy_sampled"]["accuracy"], 2),
                              "greedy_accuracy": round(100 * warm_start["policy_greedy"]["accuracy"], 2),
                              "note": "the shipped R1 policy (8,000 written solutions, 4 epochs; 4 samples each)"},
        "pool": {"rows": len(pool), "right_answer_share": round(statistics.fmean(r["right"] for r in pool), 3),
                 "by_source": dict(Counter(r["source"] for r in pool))},
        "arms": arms,
        "trajectory_aware_vs_random": against_random,
        "standard_vs_random": selection_gain(arms, "standard", "random"),
        "trajectory_aware_vs_standard": selection_gain(arms, "trajectory_aware", "standard"),
        "target": f"trajectory-aware selection >= random-k + {SELECTION_GAIN:g} points (sampled), beyond seed noise",
        "target_met": against_random["gain"] >= SELECTION_GAIN and against_random["beyond_noise"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def plot(report: dict, path: Path) -> Path | None:
    """The report's figure: Best-of-N accuracy against N by method, for each PRM, and the held-out accuracy of the
    policy fine-tuned on each selection (mean and seeds). ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [*report.get("best_of_n", {}).get("tables", {}).items()]
    selection = report.get("data_selection")
    figure, axes = plt.subplots(1, len(panels) + bool(selection), figsize=(4.6 * (len(panels) + bool(selection)), 4),
                                dpi=120, squeeze=False)
    for axis, (prm, rows) in zip(axes[0], panels):
        for method in ("weighted_majority", "majority", "prm", "random", "oracle"):
            axis.plot([r["n"] for r in rows], [100 * r[method] for r in rows], marker="o", label=method,
                      linestyle="--" if method in ("random", "oracle") else "-")
        axis.set(xscale="log", xlabel="candidates N", ylabel="held-out accuracy (%)", title=f"Best-of-N, {prm} PRM")
        axis.set_xticks([r["n"] for r in rows], [str(r["n"]) for r in rows])
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    if selection:
        axis = axes[0][-1]
        names = list(selection["arms"])
        for x, name in enumerate(names):
            seeds = selection["arms"][name]["per_seed_sampled"]
            axis.bar(x, selection["arms"][name]["sampled_accuracy"], color="tab:blue", alpha=0.6)
            axis.scatter([x] * len(seeds), seeds, color="black", s=10, zorder=3)
        axis.set_xticks(range(len(names)), names, rotation=20)
        axis.set(ylabel="held-out accuracy after SFT (%, T=1)",
                 title=f"SFT on {selection['budget']['k']} selected pairs")
        axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 problems, 4 candidates of 64 tokens: a check")
    parser.add_argument("--out", type=Path, default=None, help="where candidates, tables and offline_uses.json go")
    parser.add_argument("--parts", default="best_of_n,data_selection",
                        help="comma-separated: best_of_n, data_selection (a part left out is not in the JSON)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="offline-uses-"))
    out.mkdir(parents=True, exist_ok=True)
    count, n, tokens = (6, 4, 64) if args.quick else (None, TARGET_N, 400)
    parts = args.parts.split(",")
    with redirect_stdout(sys.stderr):  # the JSON alone on stdout
        report = {"benchmark": "offline_uses", "lab": "r1", "quick": args.quick}
        if "best_of_n" in parts:
            report["best_of_n"] = best_of_n(out, held_out_problems(out, count), n, tokens)
        if "data_selection" in parts:
            report["data_selection"] = data_selection(out, QUICK_SELECTION if args.quick else SelectionBudget())
    figure = plot(report, out / "offline_uses.png")
    report["figure"] = None if figure is None else str(figure)
    (out / "offline_uses.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
