"""Benchmark PRM step scoring three ways on R1-shaped traces: per sample, one padded batch per call, and ours.

Run: ``python benchmarks/prm_scoring.py``; prints one JSON object on stdout (``--sweep`` adds our tokens/s for
several ``batch_tokens`` values).

The PRM is a step classifier of 4 layers, hidden 256 (random weights, fp32, SDPA), built in code, saved to a temporary
directory and loaded through the real loaders. The data mimics GRPO calls on an R1-distill policy: ``CALLS`` calls of
``GROUP`` completions of one problem each; most completions are short, about one in eight is 8-16x longer (a
rambling trace). Each method scores the same calls:

- ``per_sample``: the model card's loop, one forward per completion (chat template, full forward, softmax at tags);
- ``padded``: TRL's reward-model path, every completion of a call right-padded to the call's longest, one forward
  with an attention mask;
- ``ours``: ``load_scorer(...).score(problems, completions)`` per call (length-sorted token-budget batches).

Tokens/s counts the real (unpadded) tokens of the formatted inputs over wall time, tokenisation included; the
methods run interleaved for ``ROUNDS`` rounds and each keeps its fastest (``seconds_*`` lists every round). Each
method runs in its own subprocess after one untimed warm-up call; ``peak_rss_mb`` is that process's peak resident
memory (``ru_maxrss``: Python, torch, the model and the scoring; the largest over rounds), ``peak_over_baseline_mb``
the peak minus the resident memory just before the timed calls, i.e. what scoring itself added at its worst. All
three must agree: ``max_abs_diff_*`` is the largest difference between their step scores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CALLS = 4
GROUP = 8
SEED = 0
PRM_CONFIG = {"num_hidden_layers": 4, "hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 8192}
METHODS = ("per_sample", "padded", "ours")
ROUNDS = 2


def make_calls(seed: int = SEED, calls: int = CALLS, group: int = GROUP) -> list[dict]:
    """``calls`` calls of ``group`` (problem, completion) pairs with a long-tailed length distribution."""
    from reasonflux_rl.data import load_smoke_math

    rng = random.Random(seed)
    rows = load_smoke_math()
    words = " ".join(r["problem"] for r in rows).split() + ["wait,", "so", "check", "hmm,", "therefore", "="]

    def steps(count: int) -> str:
        return "\n\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(8, 30))) for _ in range(count))

    out = []
    for c in range(calls):
        problem = rows[c % len(rows)]["problem"]
        completions = []
        for g in range(group):
            short = rng.randint(3, 8)
            # One trace per call rambles, 8-16x the steps of a typical one.
            thinking = steps(short * rng.randint(8, 16) if g == c % group else short)
            completions.append(f"<think>\n{thinking}\n</think>\n\n{steps(rng.randint(1, 2))}")
        out.append({"problem": problem, "completions": completions})
    return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def official_inputs(tokenizer, problem: str, completion: str) -> str:
    from reasonflux_rl.prm.engine.format import DEFAULT_SYSTEM_PROMPT, trajectory_steps

    messages = [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": problem},
        {"role": "assistant", "content": "<extra_0>".join(trajectory_steps(completion)) + "<extra_0>"},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)


def baseline_scorer(method: str, model, tokenizer) -> Callable[[dict], list[list[float]]]:
    """The step scores of one call by a baseline ``method`` (``per_sample`` or ``padded``), with ``model`` (a
    ``Qwen2ForProcessRewardModel``) on its device."""
    import torch

    tag = tokenizer.convert_tokens_to_ids("<extra_0>")

    @torch.inference_mode()
    def score(call: dict) -> list[list[float]]:
        texts = [official_inputs(tokenizer, call["problem"], c) for c in call["completions"]]
        if method == "per_sample":
            out = []
            for text in texts:
                input_ids = tokenizer.encode(text, return_tensors="pt").to(model.device)
                probabilities = torch.softmax(model(input_ids=input_ids).float(), dim=-1)
                out.append(probabilities[input_ids == tag][:, 1].tolist())
            return out
        batch = tokenizer(texts, padding=True, padding_side="right", return_tensors="pt").to(model.device)
        probabilities = torch.softmax(model(**batch).float(), dim=-1)
        is_tag = (batch["input_ids"] == tag) & batch["attention_mask"].bool()
        return [probabilities[j][is_tag[j]][:, 1].tolist() for j in range(len(texts))]

    return score


def worker(method: str, prm: str, data: str, out: str, batch_tokens: int | None) -> None:
    """Score every call with one method; write seconds, scores and memory to ``out``."""
    import torch
    from transformers import AutoTokenizer

    from reasonflux_rl.prm import load_scorer
    from reasonflux_rl.prm.kinds.step_classifier_model import Qwen2ForProcessRewardModel

    calls = json.loads(Path(data).read_text())
    if method == "ours":
        options = {} if batch_tokens is None else {"batch_tokens": batch_tokens}
        scorer = load_scorer(prm, device="cpu", **options)

        def score(call: dict) -> list[list[float]]:
            return [r.step_scores for r in scorer.score([call["problem"]] * len(call["completions"]),
                                                        call["completions"])]
    else:
        tokenizer = AutoTokenizer.from_pretrained(prm)
        model = Qwen2ForProcessRewardModel.from_pretrained(prm, dtype=torch.float32, attn_implementation="sdpa").eval()
        score = baseline_scorer(method, model, tokenizer)

    warm = {"problem": calls[0]["problem"], "completions": calls[0]["completions"][1:3]}
    score(warm)
    baseline = _rss_mb()
    start = time.perf_counter()
    scores = [score(call) for call in calls]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out).write_text(json.dumps({"seconds": seconds, "scores": scores, "peak_rss_mb": peak,
                                     "baseline_rss_mb": baseline}))


def _run(method: str, prm: Path, data: Path, tmp: Path, batch_tokens: int | None = None) -> dict:
    out = tmp / f"{method}-{batch_tokens}.json"
    command = [sys.executable, __file__, "--worker", method, "--prm", str(prm), "--data", str(data), "--out", str(out)]
    if batch_tokens is not None:
        command += ["--batch-tokens", str(batch_tokens)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def max_diff(a: list, b: list) -> float:
    """The largest difference between two nestings of step scores (calls, samples, steps)."""
    flat = [(x, y) for ca, cb in zip(a, b) for ra, rb in zip(ca, cb) for x, y in zip(ra, rb, strict=True)]
    return max(abs(x - y) for x, y in flat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=METHODS)
    parser.add_argument("--prm")
    parser.add_argument("--data")
    parser.add_argument("--out")
    parser.add_argument("--batch-tokens", type=int)
    parser.add_argument("--sweep", action="store_true", help="also time ours at several batch_tokens values")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.prm, args.data, args.out, args.batch_tokens)
        return
    # Libraries imported from here on (DeepSpeed, through transformers) log to stdout; the JSON must be alone there.
    with contextlib.redirect_stdout(sys.stderr):
        report = measure(args.sweep)
    print(json.dumps(report, indent=2))


def measure(sweep_budgets: bool) -> dict:
    """Build the PRM and the calls, run every method in its own subprocesses, and compare."""
    import torch
    from transformers import AutoTokenizer

    from reasonflux_rl.prm.engine.base import default_batch_tokens
    from reasonflux_rl.tiny import write_tiny_models

    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        prm = write_tiny_models(tmp / "models", seed=SEED, **PRM_CONFIG).prm
        calls = make_calls()
        data = tmp / "calls.json"
        data.write_text(json.dumps(calls))
        tokenizer = AutoTokenizer.from_pretrained(prm)
        lengths = [len(tokenizer.encode(official_inputs(tokenizer, call["problem"], c)))
                   for call in calls for c in call["completions"]]
        tokens = sum(lengths)
        # Rounds interleave the methods, and each method keeps its fastest round: on a shared machine a burst of
        # load from another process then slows one round of one method, not the comparison.
        runs = {method: [] for method in METHODS}
        for _ in range(ROUNDS):
            for method in METHODS:
                runs[method].append(_run(method, prm, data, tmp))
        results = {m: min(r, key=lambda run: run["seconds"]) for m, r in runs.items()}
        for m, r in runs.items():
            results[m]["peak_rss_mb"] = max(run["peak_rss_mb"] for run in r)
            results[m]["peak_over_baseline_mb"] = max(run["peak_rss_mb"] - run["baseline_rss_mb"] for run in r)
            results[m]["all_seconds"] = [round(run["seconds"], 2) for run in r]
        sweep = {}
        if sweep_budgets:
            for budget in (1024, 2048, 4096, 8192, 16384):
                seconds = min(_run("ours", prm, data, tmp, budget)["seconds"] for _ in range(ROUNDS))
                sweep[str(budget)] = round(tokens / seconds)

    rate = {m: tokens / r["seconds"] for m, r in results.items()}
    report = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "prm": {"kind": "step_classifier", **PRM_CONFIG, "dtype": "float32", "attn": "sdpa"},
        "samples": len(lengths),
        "calls": CALLS,
        "samples_per_call": GROUP,
        "tokens": tokens,
        "length_min_median_max": [min(lengths), sorted(lengths)[len(lengths) // 2], max(lengths)],
        "padded_tokens_of_padded_method": sum(
            max(lengths[c * GROUP : (c + 1) * GROUP]) * GROUP for c in range(CALLS)
        ),
        "batch_tokens_ours": default_batch_tokens(torch.device("cpu")),
        **{f"tokens_per_s_{m}": round(rate[m]) for m in METHODS},
        "rounds": ROUNDS,
        **{f"seconds_{m}": results[m]["all_seconds"] for m in METHODS},
        "speedup_vs_per_sample": round(rate["ours"] / rate["per_sample"], 2),
        "speedup_vs_padded": round(rate["ours"] / rate["padded"], 2),
        **{f"peak_rss_mb_{m}": round(results[m]["peak_rss_mb"]) for m in METHODS},
        **{f"peak_over_baseline_mb_{m}": round(results[m]["peak_over_baseline_mb"]) for m in METHODS},
        "max_abs_diff_ours_vs_per_sample": max_diff(results["ours"]["scores"], results["per_sample"]["scores"]),
        "max_abs_diff_padded_vs_per_sample": max_diff(results["padded"]["scores"],
                                                       results["per_sample"]["scores"]),
    }
    if sweep:
        report["ours_tokens_per_s_by_batch_tokens"] = sweep
    return report


if __name__ == "__main__":
    main()
