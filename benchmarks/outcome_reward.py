"""Benchmark the outcome reward against TRL's `accuracy_reward`: throughput, agreement and worst item latency.

Run: ``python benchmarks/outcome_reward.py``; prints one JSON object on stdout.

The corpus (seeded, generated here) mimics GRPO batches: prompts with 8 completions each sharing a gold answer,
answers in many LaTeX forms, right and wrong, in R1 (``<think>...</think>``), R1-distill (only ``</think>``) and
plain form, plus truncated completions, missing boxes, several boxes, answers only inside the thinking, unparseable
golds and a few pathological answers that make sympy hang.

Speed: TRL is given the text our reward judges (the final response after the last ``</think>``), except for
truncated completions, which it gets raw. ``speedup_vs_trl`` is on the whole corpus, pathological items included;
``speedup_vs_trl_clean`` on the corpus without them (each pathological item costs either side a full timeout, which
is a fixed cost, not throughput). Both sides get the same warm-up first (the answer list our workers parse at start,
then a separate seeded corpus); the pool start-up is reported separately. Each measurement of ours uses a fresh
reward (fresh workers), so no call profits from gold answers cached by an earlier one. Ours is called once on the
whole corpus, once on the clean corpus and in GRPO-step-sized batches; TRL in the main thread, one item per call.

Agreement: ``agreement`` compares the two on the same response text (truncated completions excluded, since ours
scores them 0.0 by rule). ``agreement_raw`` compares ours with TRL given each completion exactly as GRPOTrainer hands
it over (the raw text, thinking included), which is what a user swapping one reward for the other gets; its
disagreements are counted by completion form and direction. Items where either side timed out are excluded from
both; the pathological items (which time out on both sides in the response pass) are not run again raw.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import math_verify
import trl
from trl.rewards import accuracy_reward

from reasonflux_rl.rewards.outcome import _WARMUP_ANSWERS, OutcomeReward
from reasonflux_rl.trajectory import split_trajectory

GROUP = 8
PROMPTS = 256
BATCH = 64  # one GRPO step's local slice: 8 prompts x 8 completions
TIMEOUT = 5.0  # our default, and the same as TRL's verify timeout
PATHOLOGICAL = [
    "9^{9^{9^{9^{9}}}}",
    "8^{8^{8^{8^{8}}}}",
    "7^{7^{7^{7^{7}}}}",
    "10^{10^{10}}",
    "6^{6^{6^{6^{6}}}}",
]


def _problem(rng: random.Random) -> tuple[str, list[str], list[str]]:
    """(gold latex, equivalent answer forms, wrong answer forms) for one random problem."""
    kind = rng.choice(["int", "frac", "sqrt", "interval", "set", "units", "degrees", "percent", "pi", "poly", "eq"])
    if kind == "int":
        n = rng.randint(-50, 5000)
        right = [str(n), f"{n}.0"] + ([f"{n:,}"] if n >= 1000 else [])
        return str(n), right, [str(n + 1), str(n - 1), str(10 * n + 3)]
    if kind == "frac":
        q = rng.choice([2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 16, 20])
        p = rng.choice([k for k in range(1, 3 * q) if math.gcd(k, q) == 1])
        right = [f"\\frac{{{p}}}{{{q}}}", f"\\dfrac{{{p}}}{{{q}}}", f"{p}/{q}", f"\\frac{{{2 * p}}}{{{2 * q}}}"]
        wrong = [f"\\frac{{{q}}}{{{p}}}", f"\\frac{{{p + 1}}}{{{q}}}"]
        if all(f in (2, 5) for f in _factors(q)):
            right.append(repr(p / q))  # a terminating decimal is exact
        else:
            wrong.append(f"{p / q:.3f}")  # a rounded one is not
        return f"\\frac{{{p}}}{{{q}}}", right, wrong
    if kind == "sqrt":
        a, b = rng.randint(2, 6), rng.choice([2, 3, 5, 6, 7])
        return (
            f"{a}\\sqrt{{{b}}}",
            [f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}"],
            [f"\\sqrt{{{a * b}}}", f"{a + 1}\\sqrt{{{b}}}"],
        )
    if kind == "interval":
        a = rng.randint(-9, 5)
        b = a + rng.randint(1, 9)
        lo, hi = rng.choice("[("), rng.choice("])")
        flip = {"[": "(", "(": "[", "]": ")", ")": "]"}
        right = [f"{lo}{a},{b}{hi}", f"{lo}{a}, {b}{hi}", f"\\left{lo}{a}, {b}\\right{hi}"]
        return f"{lo}{a}, {b}{hi}", right, [f"{flip[lo]}{a}, {b}{hi}", f"{lo}{a}, {b}{flip[hi]}"]
    if kind == "set":
        items = rng.sample(range(-5, 20), 3)
        perm = rng.sample(items, 3)
        gold = "\\{" + ", ".join(map(str, items)) + "\\}"
        right = ["\\{" + ",".join(map(str, perm)) + "\\}", gold]
        wrong = ["\\{" + ", ".join(map(str, items[:2])) + "\\}", "\\{" + ", ".join(map(str, [*items[:2], 99])) + "\\}"]
        return gold, right, wrong
    if kind == "units":
        n = rng.randint(1, 500)
        right = [f"{n}\\text{{ cm}}", f"{n} \\text{{ meters}}", f"{n}\\,\\text{{kg}}", str(n)]
        return str(n), right, [f"{n + 2}\\text{{ cm}}", f"{n * 10} \\text{{ meters}}"]
    if kind == "degrees":
        n = rng.randint(1, 179)
        return f"{n}^\\circ", [f"{n}^\\circ", f"{n}^{{\\circ}}", str(n)], [f"{n + 5}^\\circ", str(n + 90)]
    if kind == "percent":
        n = rng.randint(1, 99)
        return f"{n}\\%", [f"{n}\\%"], [f"{n + 10}\\%"]
    if kind == "pi":
        k, m = rng.randint(1, 7), rng.choice([2, 3, 4, 6, 8])
        while math.gcd(k, m) != 1:
            k += 1
        right = [f"\\frac{{{k}\\pi}}{{{m}}}", f"\\frac{{{k}}}{{{m}}}\\pi"]
        return f"\\frac{{{k}\\pi}}{{{m}}}", right, [f"\\frac{{{k}}}{{{m}}}", f"\\frac{{{m}\\pi}}{{{k + m}}}"]
    if kind == "poly":
        r1, r2 = rng.randint(1, 9), rng.randint(1, 9)
        gold = f"x^2+{r1 + r2}x+{r1 * r2}"
        return gold, [gold, f"(x+{r1})(x+{r2})"], [f"(x-{r1})(x+{r2})", f"x^2+{r1 + r2 + 1}x+{r1 * r2}"]
    n = rng.randint(-20, 20)
    return f"x = {n}", [f"x={n}", str(n)], [f"x={n + 1}", str(-n - 1)]


def _factors(q: int) -> list[int]:
    return [p for p in range(2, q + 1) if q % p == 0 and all(p % d for d in range(2, p))]


def _thinking(rng: random.Random, length: int) -> str:
    steps = []
    for i in range(length):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        steps.append(f"Step {i + 1}: combine the terms, so $ {a} + {b} = {a + b} $ and we continue with the next case.")
    return "\n\n".join(steps)


def _completion(rng: random.Random, answer: str, other: str) -> tuple[str, str]:
    """(completion, form): one completion stating ``answer`` (``other``, a different answer, may appear too)."""
    think = _thinking(rng, rng.randint(3, 20))
    form = rng.choices(
        ["r1", "distill", "plain", "truncated", "no_box", "anchored", "two_boxes", "only_in_thinking", "think_box"],
        weights=[34, 24, 8, 8, 5, 4, 3, 4, 10],
    )[0]
    response = f"Therefore the answer is $\\boxed{{{answer}}}$."
    texts = {
        "r1": f"<think>\n{think}\n</think>\n\n{response}",
        "distill": f"{think}\n</think>\n\n{response}",
        "plain": f"{think}\n\n{response}",
        "truncated": f"<think>\n{think}\n\nSo far it looks like \\boxed{{{answer}}}, but let me double check the case",
        "no_box": f"<think>\n{think}\n</think>\n\nThe result is {answer}.",
        "anchored": f"{think}\n</think>\n\nThe final answer is ${answer}$.",
        "two_boxes": f"<think>\n{think}\n</think>\n\nEither $\\boxed{{{answer}}}$ or $\\boxed{{{other}}}$.",
        "only_in_thinking": (
            f"<think>\n{think}\n\nSo \\boxed{{{answer}}}.\n</think>\n\nI could not finish the verification."
        ),
        # the thinking's box must be ignored
        "think_box": f"<think>\n{think}\n\nMaybe \\boxed{{{other}}}?\n</think>\n\n{response}",
    }
    return texts[form], form


def build_corpus(seed: int, prompts: int, pathological: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(completions, golds, forms): the completion forms name the kind of each row, for counting disagreements."""
    rng = random.Random(seed)
    completions, golds, forms = [], [], []
    for _ in range(prompts):
        gold, right, wrong = _problem(rng)
        if rng.random() < 0.02:
            gold_text = rng.choice(["The proof is complete.", "", "see the figure"])
        else:
            gold_text = rng.choice([f"${gold}$", f"${gold}$", gold, f"The answer is $\\boxed{{{gold}}}$."])
        for _ in range(GROUP):
            answer = rng.choice(right) if rng.random() < 0.55 else rng.choice(wrong)
            completion, form = _completion(rng, answer, rng.choice(wrong))
            completions.append(completion)
            golds.append(gold_text)
            forms.append(form)
    for expression in pathological:
        at = rng.randrange(len(completions) + 1)
        completions.insert(at, f"<think>\n{_thinking(rng, 4)}\n</think>\n\nSo $\\boxed{{{expression}}}$.")
        golds.insert(at, f"${rng.randint(2, 99)}$")
        forms.insert(at, "pathological")
    return completions, golds, forms


class _TimeoutCounter(logging.Handler):
    """Counts math-verify's timeout warnings, which are how TRL's accuracy_reward reports a timed-out item."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "Timeout" in record.getMessage()


def trl_texts_for(completions: list[str]) -> list[str]:
    # TRL's reward sees the text our reward judges; truncated completions keep their raw text (what TRL would see).
    texts = []
    for completion in completions:
        trajectory = split_trajectory(completion)
        texts.append(trajectory.response if trajectory.closed else completion)
    return texts


def fresh_reward(warm_completions: list[str], warm_golds: list[str]) -> tuple[OutcomeReward, float]:
    """A new reward whose workers are started and warmed up, and the seconds its pool took to start."""
    reward = OutcomeReward(timeout_seconds=TIMEOUT)
    start = time.perf_counter()
    reward.worker_pids()  # returns once every worker is ready
    startup = time.perf_counter() - start
    reward.score(warm_completions, warm_golds)
    return reward, startup


def timed_call(reward: OutcomeReward, completions: list[str], golds: list[str]) -> tuple[list, dict, dict, float]:
    metrics: dict = {}
    extra: dict = {}
    start = time.perf_counter()
    scores = reward(completions, solution=golds, log_metric=metrics.__setitem__, log_extra=extra.__setitem__)
    return scores, metrics, extra, time.perf_counter() - start


def trl_pass(texts: list[str], golds: list[str], counter: "_TimeoutCounter") -> tuple[list, list[float], list[bool]]:
    """TRL's accuracy_reward item by item in the main thread: (scores, seconds per item, timed out per item)."""
    scores, seconds, timed_out = [], [], []
    for text, gold in zip(texts, golds):
        before = counter.count
        start = time.perf_counter()
        scores.extend(accuracy_reward([[{"role": "assistant", "content": text}]], solution=[gold]))
        seconds.append(time.perf_counter() - start)
        timed_out.append(counter.count > before)
    return scores, seconds, timed_out


def disagreement_counts(rows: list[int], forms: list[str], ours: list, theirs: list) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in rows:
        key = f"{forms[i]}: ours {ours[i]}, trl {theirs[i]}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def main() -> None:
    # The corpus mixes R1-Distill completions with truncated R1 ones on purpose: the pre-fill warning is expected.
    logging.getLogger("reasonflux_rl.rewards.outcome").setLevel(logging.ERROR)
    completions, golds, forms = build_corpus(seed=0, prompts=PROMPTS, pathological=PATHOLOGICAL)
    warm_completions, warm_golds, _ = build_corpus(seed=1, prompts=32, pathological=[])
    n = len(completions)
    trl_texts = trl_texts_for(completions)
    truncated = [not split_trajectory(c).closed for c in completions]
    pathological_rows = {i for i, form in enumerate(forms) if form == "pathological"}
    clean_rows = [i for i in range(n) if i not in pathological_rows]

    # Ours, one call on the whole corpus.
    reward, pool_startup = fresh_reward(warm_completions, warm_golds)
    num_workers = reward.num_workers
    ours, metrics, extra, ours_seconds = timed_call(reward, completions, golds)
    ours_timed_out = [answer == "[timeout]" for answer in extra["answer_parsed"]]
    reward.close()

    # Ours, one call on the corpus without the pathological items.
    reward, _ = fresh_reward(warm_completions, warm_golds)
    clean_scores, clean_metrics, _, ours_clean_seconds = timed_call(
        reward, [completions[i] for i in clean_rows], [golds[i] for i in clean_rows]
    )
    reward.close()

    # Ours, in GRPO-step-sized calls: a call cannot return before its slowest item.
    reward, _ = fresh_reward(warm_completions, warm_golds)
    batch_seconds, batch_max_item = [], 0.0
    for lo in range(0, n, BATCH):
        batch_metrics: dict = {}
        start = time.perf_counter()
        reward(completions[lo : lo + BATCH], solution=golds[lo : lo + BATCH], log_metric=batch_metrics.__setitem__)
        batch_seconds.append(time.perf_counter() - start)
        batch_max_item = max(batch_max_item, batch_metrics["outcome/max_item_seconds"])
    reward.close()

    # TRL in the main thread (its signal-based timeouts on), one item per call so its timeouts can be attributed.
    counter = _TimeoutCounter()
    for name in ("math_verify.grader", "math_verify.parser"):
        logging.getLogger(name).addHandler(counter)
        logging.getLogger(name).propagate = False
    # The same warm-up our workers do at start (their built-in answer list), then the same warm-up corpus as ours.
    for i, answer in enumerate(_WARMUP_ANSWERS):
        accuracy_reward([[{"content": f"The answer is $\\boxed{{{answer}}}$."}]], solution=[f"${answer}$"])
        accuracy_reward([[{"content": f"The final answer is ${_WARMUP_ANSWERS[i - 1]}$."}]], solution=[answer])
    accuracy_reward([[{"content": t}] for t in trl_texts_for(warm_completions)], solution=warm_golds)
    theirs, trl_item_seconds, trl_timed_out = trl_pass(trl_texts, golds, counter)
    trl_seconds = sum(trl_item_seconds)
    trl_clean_seconds = sum(trl_item_seconds[i] for i in clean_rows)
    # TRL on the raw completions, as GRPOTrainer would call it (pathological rows: not again, see the docstring).
    # Not timed: it re-judges the pairs of the pass above, so sympy's caches are warm and its speed would flatter TRL.
    raw_scores, _, raw_timed_out = trl_pass(
        [completions[i] for i in clean_rows], [golds[i] for i in clean_rows], counter
    )
    theirs_raw: list = [None] * n
    trl_raw_timed_out = [True] * n
    for k, i in enumerate(clean_rows):
        theirs_raw[i], trl_raw_timed_out[i] = raw_scores[k], raw_timed_out[k]

    compared = [i for i in range(n) if not truncated[i] and not ours_timed_out[i] and not trl_timed_out[i]]
    disagreements = [i for i in compared if ours[i] != theirs[i]]
    compared_raw = [i for i in clean_rows if not ours_timed_out[i] and not trl_raw_timed_out[i]]
    disagreements_raw = [i for i in compared_raw if ours[i] != theirs_raw[i]]
    batch_rows = [range(lo, min(lo + BATCH, n)) for lo in range(0, n, BATCH)]
    clean_batches = [k for k, rows in enumerate(batch_rows) if not pathological_rows & set(rows)]
    clean_batch_items = sum(len(batch_rows[k]) for k in clean_batches)
    clean_batch_ours = clean_batch_items / sum(batch_seconds[k] for k in clean_batches)
    clean_batch_trl = clean_batch_items / sum(trl_item_seconds[i] for k in clean_batches for i in batch_rows[k])
    result = {
        "items": n,
        "num_workers": num_workers,
        "timeout_seconds": TIMEOUT,
        "cpus": len(os.sched_getaffinity(0)),
        "pool_startup_seconds": round(pool_startup, 3),
        "throughput_measured": (
            "after the same warm-up for both (the workers' built-in answer list, then a separate seeded corpus); "
            "pool start-up excluded (see pool_startup_seconds); a fresh pool for each of ours' measurements"
        ),
        "ours_items_per_s": round(n / ours_seconds, 1),
        "trl_items_per_s": round(n / trl_seconds, 1),
        "speedup_vs_trl": round(trl_seconds / ours_seconds, 3),
        "clean_items": len(clean_rows),
        "ours_clean_items_per_s": round(len(clean_rows) / ours_clean_seconds, 1),
        "trl_clean_items_per_s": round(len(clean_rows) / trl_clean_seconds, 1),
        "speedup_vs_trl_clean": round(trl_clean_seconds / ours_clean_seconds, 3),
        "ours_call": "one call on the whole or the clean corpus (TRL calling convention, log_metric and log_extra on)",
        "trl_call": "trl.rewards.accuracy_reward in the main thread, one item per call, times summed",
        "trl_input": "the final response after the last </think> (what ours judges); raw text if truncated",
        "agreement": round(1 - len(disagreements) / len(compared), 5),
        "agreement_items": len(compared),
        "agreement_excluded": {
            "truncated_scored_0_by_rule": sum(truncated),
            "timed_out_either_side": sum(o or t for o, t in zip(ours_timed_out, trl_timed_out)),
        },
        "disagreements": disagreement_counts(disagreements, forms, ours, theirs),
        "disagreement_examples": [
            {"gold": golds[i], "response": trl_texts[i][-120:], "ours": ours[i], "trl": theirs[i]}
            for i in disagreements[:5]
        ],
        "agreement_raw": round(1 - len(disagreements_raw) / len(compared_raw), 5),
        "agreement_raw_items": len(compared_raw),
        "agreement_raw_excluded": {
            "pathological_not_run_raw": len(pathological_rows),
            "timed_out_either_side": len(clean_rows) - len(compared_raw),
        },
        "agreement_raw_input": "TRL given each completion's raw text (thinking included), as GRPOTrainer passes it",
        "disagreements_raw": disagreement_counts(disagreements_raw, forms, ours, theirs_raw),
        "clean_call_matches_whole_call": [clean_scores[k] for k in range(len(clean_rows))]
        == [ours[i] for i in clean_rows],
        "timeouts_ours": int(metrics["outcome/timeouts"]),
        "timeouts_ours_clean": int(clean_metrics["outcome/timeouts"]),
        "timeouts_trl": sum(trl_timed_out),
        "timeouts_trl_raw": sum(raw_timed_out),
        "max_item_seconds": round(
            max(metrics["outcome/max_item_seconds"], clean_metrics["outcome/max_item_seconds"], batch_max_item), 3
        ),
        "trl_max_item_seconds": round(max(trl_item_seconds), 3),
        "pathological_items": len(pathological_rows),
        "gold_unparseable": int(metrics["outcome/gold_unparseable"]),
        "worker_restarts": int(metrics["outcome/worker_restarts"]),
        "accuracy_ours": round(metrics["outcome/accuracy"], 4),
        "batched": {
            "batch_size": BATCH,
            "ours_items_per_s": round(n / sum(batch_seconds), 1),
            "speedup_vs_trl": round(trl_seconds / sum(batch_seconds), 3),
            "note": "per-call latency; a batch holding a pathological item waits its full timeout",
        },
        "batches_without_pathological_items": {
            "items": clean_batch_items,
            "ours_items_per_s": round(clean_batch_ours, 1),
            "trl_items_per_s": round(clean_batch_trl, 1),
            "speedup_vs_trl": round(clean_batch_ours / clean_batch_trl, 3),
        },
        "versions": {"trl": trl.__version__, "math_verify": getattr(math_verify, "__version__", "0.9")},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
