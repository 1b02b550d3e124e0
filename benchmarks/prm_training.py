"""Benchmark PRM training: token-budget batches against fixed-size padded batches, and ``mc`` labelling with batched
generation against one continuation per ``generate`` call.

Run: ``python benchmarks/prm_training.py [--quick] [--out PATH] [--threads N]``; prints one JSON object on stdout
(and writes it to ``--out``). ``--quick`` (small data, one round) is the test suite's check of the script, not a
measurement. On a machine shared with other work, ``--threads 1`` keeps torch from oversubscribing the cores (2
threads each on a busy 2-core machine ran 3-10x slower than 1, generation most).

``training``: the same ``PRMTrainer`` (same rows, same model weights, objective, optimiser, seed, one epoch) in two
arms, each in its own subprocess (``--arm ours|padded``), so that each one's peak resident memory (``ru_maxrss``) is
its own:

- ``ours``: ``PRMTrainer`` as it ships: ``TokenBudgetBatchSampler`` batches, rows of similar length up to
  ``batch_tokens`` padded tokens;
- ``padded``: the same trainer fed fixed-size batches of ``rows_per_batch`` rows in random order (reshuffled each
  epoch with the same seed), each padded to its longest row, the usual ``per_device_train_batch_size`` path.
  ``rows_per_batch`` is the rows of the data over the number of our batches, so both arms average the same rows per
  optimizer step.

The PRM is a step classifier of 4 layers, hidden 256 (random weights, fp32, SDPA), written by
``reasonflux_rl.tiny.write_tiny_models`` (its tokenizer is ``build_tokenizer()``'s) and loaded from disk by each arm.
The rows are trajectory-like pairs encoded by ``encode_pair`` of a ``StepScorer`` on that PRM: lognormal token counts
(several hundred to a few thousand tokens), 4-40 steps, step and trajectory targets of a first wrong step. Each arm
first trains 2 untimed steps on a fresh copy of the model (warm-up), then reloads the model and times
``trainer.train()``; tokens/s counts the real (unpadded) tokens of the rows its collator handed to the trainer. The
arms run interleaved for ``rounds`` rounds (their order alternating) and each keeps its fastest round; the peak
memory is the largest over rounds, ``peak_over_baseline_mb`` the peak minus the resident memory just before the
timed ``train()``.

``mc_labelling``: Math-Shepherd rollouts (``mc_targets``) from the step prefixes of lab trajectories, ``ROLLOUTS``
continuations per prefix, by the lab's trained policy (``reasonflux_rl/lab/assets/policy``, a real completer that
ends its answers), with a ``TransformersSampler`` of ``prompts_per_batch=16`` sampling n=8 sequences per prompt
(through ``PolicyCompleter``) against ``prompts_per_batch=1``, n=1, called prefixes x 8 times (a new seed each call);
same policy, prefixes, ``max_new_tokens``, temperature and judge (the boxed digit after ``</think>``, as the lab's
answers are written). Continuations/s is over the whole ``mc_targets`` call (prompts, generation, judging).

Targets: ``speedup_vs_padded >= 1.5`` at no more memory (ours' peak RSS <= 1.05 x padded's, and its largest padded
batch <= padded's); ``mc_speedup_vs_one_per_call >= 2`` on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEED = 0
PRM_CONFIG = {"num_hidden_layers": 4, "hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 8192}
# The CPU recipe's (recipes/prm_train/cpu.yaml); prm train's default is 16384, for a GPU.
BATCH_TOKENS = 6400
LEARNING_RATE = 1e-4
WARMUP_STEPS = 2
ARMS = ("ours", "padded")
SPEEDUP_TARGET = 1.5
MEMORY_SLACK = 1.05
MC_SPEEDUP_TARGET = 2.0
POLICY = REPO / "reasonflux_rl" / "lab" / "assets" / "policy"
ROLLOUTS = 8
PROMPTS_PER_BATCH = 16
MAX_NEW_TOKENS = 64
# Per size: training pairs, their token counts (lognormal median and sigma, clipped to [low, high]), rounds; mc
# step prefixes.
SIZES = {
    "full": {"pairs": 120, "median": 450, "sigma": 0.65, "low": 150, "high": 2500, "rounds": 2, "prefixes": 32},
    "quick": {"pairs": 24, "median": 250, "sigma": 0.6, "low": 100, "high": 800, "rounds": 1, "prefixes": 6},
}


# --- data ----------------------------------------------------------------------------------------------------------

def make_pairs(tokenizer: Any, count: int, median: int, sigma: float, low: int, high: int, seed: int = SEED) -> list:
    """``count`` R1-shaped labelled pairs whose token counts are lognormal (``median``, ``sigma``, clipped to
    [``low``, ``high``]), with 4-40 steps (about 30 tokens a step at least), and targets: right up to a first wrong
    step (half the trajectories have none), wrong after it, the trajectory right when no step is wrong."""
    from reasonflux_rl.data import load_smoke_math
    from reasonflux_rl.prm.engine.format import located_steps
    from reasonflux_rl.prm_training.fields import LabelledPair

    rng = random.Random(f"pairs-{seed}")
    rows = load_smoke_math()
    words = sorted(set(" ".join(r["problem"] for r in rows).split())) + ["wait,", "so", "check", "hmm,", "therefore",
                                                                          "=", "+", "1", "2", "3"]
    cost = {w: len(tokenizer.encode(" " + w, add_special_tokens=False)) for w in words}

    def paragraph(tokens: float) -> str:
        out, used = [], 0
        while used < tokens or not out:
            word = rng.choice(words)
            out.append(word)
            used += cost[word]
        return " ".join(out)

    pairs = []
    for index in range(count):
        target = min(high, max(low, round(rng.lognormvariate(math.log(median), sigma))))
        steps = rng.randint(4, min(40, max(4, target // 30)))
        # The chat template, system prompt, problem and step tags take about 80 tokens.
        per_step = max(8.0, (target - 80) / steps)
        thinking = [paragraph(per_step * rng.uniform(0.6, 1.4)) for _ in range(steps - 1)]
        answer = rng.randint(0, 99)
        completion = "<think>\n" + "\n\n".join(thinking) + f"\n</think>\n\nSo the answer is $\\boxed{{{answer}}}$."
        located = tuple(located_steps(completion)[0])
        wrong = rng.randrange(len(located)) if rng.random() < 0.5 else None
        targets = tuple(1.0 if wrong is None or k < wrong else 0.0 for k in range(len(located)))
        pairs.append(LabelledPair(index, rows[index % len(rows)]["problem"], completion, steps=located,
                                  step_targets=targets, trajectory_target=1.0 if wrong is None else 0.0))
    return pairs


def encode_rows(prm: Path, pairs: Sequence) -> list:
    """The training rows of ``pairs`` by the scorer's own encoding."""
    from reasonflux_rl.prm.kinds.step_classifier import StepScorer
    from reasonflux_rl.prm_training.encoding import encode_pair

    scorer = StepScorer.from_pretrained(prm, device="cpu")
    rows, dropped = [], 0
    for pair in pairs:
        pair_rows, pair_dropped = encode_pair(scorer, pair)
        rows += pair_rows
        dropped += pair_dropped
    if dropped:
        raise RuntimeError(f"{dropped} steps dropped by truncation: raise max_position_embeddings")
    return rows


# --- the training arms (each in its own process) ---------------------------------------------------------------------

def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _classes() -> tuple[type, type, type]:
    """The counting collator, the random fixed-size batch sampler and the padded arm's trainer (defined here so the
    parent need not import transformers' Trainer)."""
    from torch.utils.data import DataLoader, Sampler

    from reasonflux_rl.prm_training.encoding import RowCollator
    from reasonflux_rl.prm_training.trainer import PRMTrainer

    class CountingCollator(RowCollator):
        """``RowCollator``, recording each batch's rows, real tokens and longest row."""

        def __init__(self, pad_id: int) -> None:
            super().__init__(pad_id)
            self.batches: list[tuple[int, int, int]] = []

        def __call__(self, rows):
            lengths = [len(r.input_ids) for r in rows]
            self.batches.append((len(rows), sum(lengths), max(lengths)))
            return super().__call__(rows)

    class RandomBatchSampler(Sampler):
        """Fixed-size batches of ``rows_per_batch`` row indices in a random order (``seed`` + epoch), the last one
        shorter."""

        def __init__(self, rows: int, rows_per_batch: int, seed: int) -> None:
            self.rows, self.rows_per_batch, self.seed = rows, rows_per_batch, seed
            self.set_epoch(0)

        def set_epoch(self, epoch: int) -> None:
            order = list(range(self.rows))
            random.Random(f"{self.seed}-{epoch}").shuffle(order)
            self.batches = [order[k : k + self.rows_per_batch] for k in range(0, self.rows, self.rows_per_batch)]

        def __iter__(self):
            return iter(self.batches)

        def __len__(self) -> int:
            return len(self.batches)

    class PaddedTrainer(PRMTrainer):
        """``PRMTrainer`` whose training batches are [`RandomBatchSampler`]'s; everything else is PRMTrainer's."""

        def __init__(self, *args: Any, rows_per_batch: int, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.rows_per_batch = rows_per_batch

        def get_train_dataloader(self) -> DataLoader:
            sampler = RandomBatchSampler(len(self.train_dataset), self.rows_per_batch, self.args.seed)
            loader = DataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                                num_workers=self.args.dataloader_num_workers,
                                pin_memory=self.args.dataloader_pin_memory)
            return self.accelerator.prepare(loader)

    return CountingCollator, RandomBatchSampler, PaddedTrainer


def train_arm(arm: str, prm: str, rows_path: str, out: str, batch_tokens: int, rows_per_batch: int,
              threads: int | None) -> None:
    """Warm up, then time one epoch of ``trainer.train()`` of ``arm``; write what it did to ``out``."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from transformers import AutoTokenizer, TrainingArguments

    from reasonflux_rl.prm.kinds.step_classifier_model import Qwen2ForProcessRewardModel
    from reasonflux_rl.prm_training.encoding import TrainingRow
    from reasonflux_rl.prm_training.objective import Objective
    from reasonflux_rl.prm_training.trainer import PRMTrainer

    counting_collator, _, padded_trainer = _classes()
    rows = [TrainingRow(**r) for r in json.loads(Path(rows_path).read_text())]
    tokenizer = AutoTokenizer.from_pretrained(prm)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def trainer(train_rows: list, max_steps: int, output_dir: str) -> tuple[Any, Any]:
        model = Qwen2ForProcessRewardModel.from_pretrained(prm, dtype=torch.float32, attn_implementation="sdpa")
        args = TrainingArguments(output_dir, num_train_epochs=1, max_steps=max_steps, use_cpu=True, report_to="none",
                                 learning_rate=LEARNING_RATE, save_strategy="no", logging_strategy="no",
                                 disable_tqdm=True, seed=SEED, data_seed=SEED, dataloader_num_workers=0)
        collator = counting_collator(pad_id)
        options = {"model": model, "args": args, "train_dataset": train_rows, "processing_class": tokenizer,
                   "objective": Objective(), "batch_tokens": batch_tokens, "data_collator": collator}
        if arm == "ours":
            return PRMTrainer(**options), collator
        return padded_trainer(rows_per_batch=rows_per_batch, **options), collator

    with tempfile.TemporaryDirectory() as directory:
        # Warm-up: the same seeded subset in both arms, 2 steps, on a copy of the model that is then dropped.
        subset = random.Random(f"warmup-{SEED}").sample(rows, min(len(rows), 2 * rows_per_batch))
        warm, _ = trainer(subset, WARMUP_STEPS, directory)
        warm.train()
        del warm
        baseline = _rss_mb()
        timed, collator = trainer(rows, -1, directory)
        start = time.perf_counter()
        result = timed.train()
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        loss = result.training_loss
        steps = timed.state.global_step
    batches = collator.batches
    largest = max(batches, key=lambda b: b[0] * b[2])
    Path(out).write_text(json.dumps({
        "seconds": seconds,
        "rows": sum(b[0] for b in batches),
        "tokens": sum(b[1] for b in batches),
        "padded_tokens": sum(b[0] * b[2] for b in batches),
        "batches": len(batches),
        "optimizer_steps": steps,
        "largest_batch": {"rows": largest[0], "longest_row": largest[2], "padded_tokens": largest[0] * largest[2]},
        "training_loss": loss,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "torch_threads": torch.get_num_threads(),
    }))


def _run_arm(arm: str, prm: Path, rows_path: Path, tmp: Path, batch_tokens: int, rows_per_batch: int,
             round_: int, threads: int | None) -> dict:
    out = tmp / f"{arm}-{round_}.json"
    command = [sys.executable, __file__, "--arm", arm, "--prm", str(prm), "--rows", str(rows_path), "--arm-out",
               str(out), "--batch-tokens", str(batch_tokens), "--rows-per-batch", str(rows_per_batch)]
    if threads:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"arm {arm} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


def measure_training(tmp: Path, size: dict, batch_tokens: int, threads: int | None) -> dict:
    """Write the PRM, build and encode the rows, run both arms in their own processes, and compare."""
    from transformers import AutoTokenizer

    from reasonflux_rl.prm_training.encoding import TokenBudgetBatchSampler
    from reasonflux_rl.tiny import write_tiny_models

    prm = write_tiny_models(tmp / "models", seed=SEED, **PRM_CONFIG).prm
    tokenizer = AutoTokenizer.from_pretrained(prm)
    pairs = make_pairs(tokenizer, size["pairs"], size["median"], size["sigma"], size["low"], size["high"])
    rows = encode_rows(prm, pairs)
    rows_path = tmp / "rows.json"
    rows_path.write_text(json.dumps([dataclasses.asdict(r) for r in rows]))
    lengths = [len(r.input_ids) for r in rows]
    sampler = TokenBudgetBatchSampler(lengths, batch_tokens, shuffle=True, seed=SEED)
    our_batches = len(sampler)
    rows_per_batch = max(1, round(len(rows) / our_batches))

    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for round_ in range(size["rounds"]):
        # Alternate the order, so neither arm always runs first (or last) on a machine whose load drifts.
        for arm in ARMS if round_ % 2 == 0 else ARMS[::-1]:
            runs[arm].append(_run_arm(arm, prm, rows_path, tmp, batch_tokens, rows_per_batch, round_, threads))

    arms = {}
    for arm, rounds in runs.items():
        best = min(rounds, key=lambda r: r["seconds"])
        arms[arm] = {
            "rows": best["rows"],
            "tokens": best["tokens"],
            "padded_tokens": best["padded_tokens"],
            "padding_fraction": round(1 - best["tokens"] / best["padded_tokens"], 4),
            "batches": best["batches"],
            "optimizer_steps": best["optimizer_steps"],
            "rows_per_step_mean": round(best["rows"] / best["optimizer_steps"], 3),
            "largest_batch": best["largest_batch"],
            "tokens_per_s": round(best["tokens"] / best["seconds"], 1),
            "seconds": [round(r["seconds"], 2) for r in rounds],
            "training_loss": round(best["training_loss"], 5),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rounds), 1),
            "peak_over_baseline_mb": round(max(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in rounds), 1),
            "torch_threads": best["torch_threads"],
        }
    ours, padded = arms["ours"], arms["padded"]
    speedup = ours["tokens_per_s"] / padded["tokens_per_s"]
    rss_ratio = ours["peak_rss_mb"] / padded["peak_rss_mb"]
    checks = {
        "speedup_met": speedup >= SPEEDUP_TARGET,
        "peak_rss_met": rss_ratio <= MEMORY_SLACK,
        "largest_batch_met": ours["largest_batch"]["padded_tokens"] <= padded["largest_batch"]["padded_tokens"],
    }
    met = all(checks.values())
    reason = (f"ours trains {speedup:.2f}x the real tokens/s of fixed batches of {rows_per_batch} random rows "
              f"({'>=' if checks['speedup_met'] else '<'} {SPEEDUP_TARGET}x) at {rss_ratio:.2f}x their peak RSS "
              f"({'<=' if checks['peak_rss_met'] else '>'} {MEMORY_SLACK}), largest padded batch "
              f"{ours['largest_batch']['padded_tokens']} against {padded['largest_batch']['padded_tokens']} tokens; "
              f"padding {ours['padding_fraction']:.0%} of our batches' tokens against "
              f"{padded['padding_fraction']:.0%} of theirs")
    sorted_lengths = sorted(lengths)
    steps = [len(p.steps) for p in pairs]
    return {
        "prm": {"kind": "step_classifier", **PRM_CONFIG, "dtype": "float32", "attn": "sdpa",
                "weights": "random (write_tiny_models, seed 0), loaded from disk by each arm"},
        "data": {
            "pairs": len(pairs),
            "rows": len(rows),
            "tokens": sum(lengths),
            "token_counts": f"lognormal(median {size['median']}, sigma {size['sigma']}) clipped to "
                            f"[{size['low']}, {size['high']}], before the chat template",
            "length_min_median_p90_max": [sorted_lengths[0], sorted_lengths[len(lengths) // 2],
                                          sorted_lengths[int(0.9 * (len(lengths) - 1))], sorted_lengths[-1]],
            "steps_min_median_max": [min(steps), int(statistics.median(steps)), max(steps)],
        },
        "batch_tokens_ours": batch_tokens,
        "pool_batches_ours": 16,
        "pool_rows_ours": sampler.pool_rows,
        "rows_per_batch_padded": rows_per_batch,
        "rows_per_step": (f"padded rows_per_batch = round(rows / our batches) = round({len(rows)} / {our_batches}) "
                          f"= {rows_per_batch}: both arms average the same rows per optimizer step (no gradient "
                          "accumulation, one epoch, one process)"),
        "epochs": 1,
        "rounds": size["rounds"],
        "arms": arms,
        "speedup_vs_padded": round(speedup, 3),
        "peak_rss_ratio_ours_vs_padded": round(rss_ratio, 3),
        "target": {"speedup_vs_padded": SPEEDUP_TARGET, "peak_rss_ratio_max": MEMORY_SLACK,
                   "largest_batch": "ours <= padded's", **checks, "met": met, "reason": reason},
    }


# --- mc labelling --------------------------------------------------------------------------------------------------

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def boxed_judge(texts: Sequence[str], golds: Sequence[str]) -> list[float]:
    """1.0 where the last ``\\boxed{}`` after the last ``</think>`` is the gold, else 0.0 (a rollout that never closes
    its thinking scores 0)."""
    scores = []
    for text, gold in zip(texts, golds):
        _, close, response = text.rpartition("</think>")
        found = _BOXED.findall(response) if close else []
        scores.append(float(bool(found) and found[-1].strip() == str(gold).strip()))
    return scores


def lab_pairs(prefixes: int, seed: int = SEED) -> tuple[list, list[float]]:
    """Lab trajectories (train problems, steps corrupted at 0.2) until they hold ``prefixes`` step prefixes (the
    last pair cut to fit), and each one's own outcome."""
    from reasonflux_rl.lab.task import problems, write
    from reasonflux_rl.prm.engine.format import located_steps
    from reasonflux_rl.prm_training.fields import LabelledPair

    rng = random.Random(f"mc-{seed}")
    pool = problems("train")
    pairs, outcomes, held = [], [], 0
    while held < prefixes:
        problem = rng.choice(pool)
        written = write(problem, 0.2, rng)
        steps = tuple(located_steps(written.completion)[0])
        pair = LabelledPair(len(pairs), problem.text, written.completion, steps=steps, gold=str(problem.answer))
        pairs.append(pair)
        outcomes.append(float(written.answer == problem.answer))
        held += len(steps) - 1
    if held > prefixes:  # keep exactly ``prefixes``: drop the last pair's latest steps (its prefixes are nested)
        last = pairs[-1]
        keep = len(last.steps) - (held - prefixes)
        completion = "\n\n".join(last.steps[:keep - 1]) + "\n</think>\n\n" + last.steps[-1]
        pairs[-1] = dataclasses.replace(last, completion=completion, steps=tuple(located_steps(completion)[0]))
    return pairs, outcomes


class _Recording:
    """A completer that keeps every continuation it gives."""

    def __init__(self, completer: Any) -> None:
        self.completer = completer
        self.texts: list[str] = []

    def continuations(self, problems: Sequence[str], prefixes: Sequence[str], n: int) -> list[list[str]]:
        out = self.completer.continuations(problems, prefixes, n)
        self.texts += [t for texts in out for t in texts]
        return out


class OnePerCall:
    """The baseline completer: one continuation per ``generate`` call (``prompts_per_batch=1``, n=1), called
    ``n`` times for each prefix, each call with its own seed (one seed for all would repeat the same rollout)."""

    def __init__(self, completer: Any, seed: int) -> None:
        self.completer = completer
        self.seed = seed

    def continuations(self, problems: Sequence[str], prefixes: Sequence[str], n: int) -> list[list[str]]:
        out = []
        call = 0
        for problem, prefix in zip(problems, prefixes):
            prompt = self.completer.prompt(problem, prefix)
            texts = []
            for _ in range(n):
                texts += self.completer.sampler.sample([prompt], 1, seed=self.seed + call,
                                                       on_batch=self.completer.on_batch)[0]
                call += 1
            out.append(texts)
        return out


def measure_mc(prefixes: int) -> dict:
    """``mc_targets`` of the same prefixes with batched generation and with one continuation per call."""
    from reasonflux_rl.prm_training.labels import PolicyCompleter, mc_targets, rollout_count
    from reasonflux_rl.tools.sampling import TransformersSampler

    pairs, outcomes = lab_pairs(prefixes)
    arms = {}
    for arm, per_batch in (("batched", PROMPTS_PER_BATCH), ("one_per_call", 1)):
        sampler = TransformersSampler(str(POLICY), max_new_tokens=MAX_NEW_TOKENS, prompts_per_batch=per_batch,
                                      device="cpu")
        calls = []
        completer = PolicyCompleter(sampler, seed=SEED, on_batch=calls.append)
        # Warm-up: one untimed call on the first prefix.
        sampler.sample([completer.prompt(pairs[0].problem, pairs[0].steps[0] + "\n\n")], 1, seed=SEED)
        calls.clear()
        recording = _Recording(completer if arm == "batched" else OnePerCall(completer, SEED))
        start = time.perf_counter()
        targets = mc_targets(pairs, outcomes, recording, boxed_judge, rollouts=ROLLOUTS)
        seconds = time.perf_counter() - start
        continuations = len(recording.texts)
        if continuations != rollout_count(pairs, ROLLOUTS) or sum(calls) != continuations:
            raise RuntimeError(f"{arm}: {continuations} continuations, {sum(calls)} counted, "
                               f"{rollout_count(pairs, ROLLOUTS)} expected")
        new_tokens = [len(sampler.tokenizer.encode(t, add_special_tokens=False)) for t in recording.texts]
        step_targets = [t for pair_targets in targets for t in pair_targets[:-1]]
        arms[arm] = {
            "prompts_per_batch": per_batch,
            "sequences_per_prompt": ROLLOUTS if arm == "batched" else 1,
            "generate_calls": len(calls),
            "continuations": continuations,
            "seconds": round(seconds, 3),
            "continuations_per_s": round(continuations / seconds, 2),
            "mean_new_tokens": round(statistics.fmean(new_tokens), 2),
            "closed_thinking_fraction": round(sum("</think>" in t for t in recording.texts) / continuations, 4),
            "mean_step_target": round(statistics.fmean(step_targets), 4),
        }
    speedup = arms["batched"]["continuations_per_s"] / arms["one_per_call"]["continuations_per_s"]
    met = speedup >= MC_SPEEDUP_TARGET
    return {
        "policy": "reasonflux_rl/lab/assets/policy (the lab's trained 2-layer, hidden-128 Qwen2 policy, fp32)",
        "pairs": len(pairs),
        "prefixes": prefixes,
        "rollouts": ROLLOUTS,
        "continuations": rollout_count(pairs, ROLLOUTS),
        "max_new_tokens": MAX_NEW_TOKENS,
        "temperature": 1.0,
        "judge": "the last \\boxed{} after </think> equals the gold (the lab's answers are one digit)",
        "arms": arms,
        "mc_speedup_vs_one_per_call": round(speedup, 3),
        "target": {"mc_speedup_vs_one_per_call": MC_SPEEDUP_TARGET, "met": met,
                   "reason": f"batched generation ({PROMPTS_PER_BATCH} prefixes x {ROLLOUTS} sequences per generate "
                             f"call) gives {speedup:.2f}x the continuations/s of one per call "
                             f"({'>=' if met else '<'} {MC_SPEEDUP_TARGET}x)"},
    }


# --- the whole run -------------------------------------------------------------------------------------------------

def measure(quick: bool, batch_tokens: int, threads: int | None) -> dict:
    import torch
    import transformers

    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    random.seed(SEED)
    torch.manual_seed(SEED)
    size = SIZES["quick" if quick else "full"]
    with tempfile.TemporaryDirectory() as directory:
        training = measure_training(Path(directory), size, batch_tokens, threads)
    training_seconds = time.perf_counter() - start
    mc = measure_mc(size["prefixes"])
    return {
        "benchmark": "prm_training",
        "quick": quick,
        "seed": SEED,
        "machine": {"device": "cpu", "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
                    "load_average_1m": round(os.getloadavg()[0], 2)},
        "training": training,
        "mc_labelling": mc,
        "seconds": round(time.perf_counter() - start, 1),
        "seconds_training_part": round(training_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, one round: a check in about a minute")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--batch-tokens", type=int, default=BATCH_TOKENS, help="ours' padded tokens per batch")
    parser.add_argument("--threads", type=int, help="torch threads of every process (default: torch's, one per "
                        "core; on a machine shared with other work, 1 avoids oversubscribing the cores)")
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--prm", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    parser.add_argument("--arm-out", help=argparse.SUPPRESS)
    parser.add_argument("--rows-per-batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        train_arm(args.arm, args.prm, args.rows, args.arm_out, args.batch_tokens, args.rows_per_batch, args.threads)
        return
    # Libraries imported from here on log to stdout; the JSON must be alone there.
    with contextlib.redirect_stdout(sys.stderr):
        report = measure(args.quick, args.batch_tokens, args.threads)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
