"""The GPU kit: what only a GPU can measure, in one prepared run that writes one JSON file.

Run through ``benchmarks/gpu/run.sh`` (it installs the wheels ``prepare.sh`` fetched first), or directly:
``python benchmarks/gpu/kit.py --out gpu.json [--cpu]``. ``--cpu`` runs every section on the CPU at tiny sizes, so
the code is checked without a GPU (the test suite does this). Sections, each recorded even when another fails:

1. ``matmul_peak``: the bf16 matrix-product rate of this GPU (an 8192^3 product), the ceiling of the next section.
2. ``prm_scoring``: random-weight step classifiers of the Qwen2.5-1.5B and 7B shapes (built on the GPU in bf16, SDPA)
   score R1-shaped traces (``benchmarks/prm_scoring.py``'s length mix, capped at 4096 tokens) three ways: one sample
   per forward (the model card's loop), one padded batch per call (TRL's reward-model path) and ours
   (``StepScorer.score``). Tokens/s of each, peak GPU memory above the weights, and each method's model FLOPs over
   its time as a fraction of the measured peak. Targets: ours >= 50% of peak on the 7B shape, >= 2x per-sample.
3. ``bf16_vs_fp32``: the step scores of ours in bf16 against fp32 on the same (bf16-representable) weights.
4. ``grpo_smoke``: ``reasonflux-rl train --config recipes/smoke/gpu.yaml`` for 2 steps (tiny policy and PRM, bf16,
   PRM replica on the GPU); it must finish and log the reward metrics.
5. ``grpo_dense_credit``: the same run with ``--prm_credit suffix_sum``: the per-token advantages of
   ``DenseCreditGRPOTrainer`` on CUDA tensors; it must finish and log the process-advantage metrics.
6. ``reward_share``: one GRPO step of a 0.5B-shape random policy with the 1.5B-shape PRM (8 prompts x 8 completions,
   512 new tokens, transformers generation): seconds in generation, the outcome reward, PRM scoring, the optimizer
   step and the rest (log-probabilities, loss, backward), from TRL's own profiling and the reward's metrics.
7. ``step_value_head``: a random step value-head PRM (Skywork-o1-Open-PRM layout) of the 1.5B shape, written as a
   checkpoint and loaded as a user does (``load_scorer``, ``auto`` kind, dtype and attention): its kind, the dtypes
   of decoder and head (the head stays fp32), its tokens/s on the traces of section 2, the largest step-score gap of
   bf16 against fp32 and of batched fp32 against one sample at a time.
8. ``prm_train``: ``PRMTrainer`` on a random 1.5B-shape step classifier (fp32 weights, bf16 autocast, token-budget
   batches of 16384) over step- and trajectory-labelled pairs of section 2's traces, encoded by ``encode_pair``:
   training tokens/s after a warm-up step, peak GPU memory, and the loss on one fixed batch trained on repeatedly,
   which must fall.
9. ``reasonflux_targets``: ``prm label --method reasonflux``'s models on this device: a random 0.5B-shape Qwen2 as
   both the sentence encoder and the step-quality judge (``SentenceEncoder``, ``LocalJudge``), labelling 16 of section
   2's traces (one chunk, ``reasonflux_targets``): steps/s of the whole labelling, of the encoder's passes and of the
   judge's, peak GPU memory; every step must get a rating in (0, 1) and an alignment or no alignment as its rule says.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

# Qwen2.5 shapes (their config.json files); the vocabulary only sizes the embedding, which a PRM does not multiply.
QWEN_0_5B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "tie_word_embeddings": True}
QWEN_1_5B = {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
             "num_key_value_heads": 2}
QWEN_7B = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
           "num_key_value_heads": 4}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2}
QWEN_VOCAB = 151936
TINY_B = {**TINY, "num_hidden_layers": 3}
SHAPES = {"qwen2.5-1.5b": QWEN_1_5B, "qwen2.5-7b": QWEN_7B, "tiny-a": TINY, "tiny-b": TINY_B}
PEAK_TARGET = 0.5
PER_SAMPLE_TARGET = 2.0


@dataclass(frozen=True)
class Sizes:
    """What each section runs at: the GPU's sizes, or tiny ones for ``--cpu``."""

    device: str
    matmul: int
    prm_shapes: dict[str, dict[str, Any]]
    calls: int
    group: int
    max_length: int
    rounds: int
    share_policy: dict[str, Any]
    share_prm: str
    share_prompts: int
    share_generations: int
    share_new_tokens: int
    train_shape: dict[str, Any]
    train_steps: int
    train_batch_tokens: int
    fixed_batch_steps: int
    train_learning_rate: float
    targets_shape: dict[str, Any]
    targets_pairs: int
    vocab_size: int | None = QWEN_VOCAB


GPU = Sizes(device="cuda", matmul=8192, prm_shapes={"qwen2.5-1.5b": QWEN_1_5B, "qwen2.5-7b": QWEN_7B}, calls=8,
            group=8, max_length=4096, rounds=3, share_policy=QWEN_0_5B, share_prm="qwen2.5-1.5b", share_prompts=8,
            share_generations=8, share_new_tokens=512, train_shape=QWEN_1_5B, train_steps=8, train_batch_tokens=16384,
            fixed_batch_steps=8, train_learning_rate=1e-4, targets_shape=QWEN_0_5B,
            targets_pairs=16)
CPU = Sizes(device="cpu", matmul=256, prm_shapes={"tiny-a": TINY, "tiny-b": TINY_B},
            calls=2, group=4, max_length=4096, rounds=1, share_policy=TINY, share_prm="tiny-a", share_prompts=2,
            share_generations=4, share_new_tokens=16, train_shape=TINY, train_steps=3, train_batch_tokens=4096,
            fixed_batch_steps=6, train_learning_rate=1e-3, targets_shape=TINY, targets_pairs=1,
            vocab_size=None)


def log(message: str) -> None:
    print(f"[gpu-kit {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def release_memory(sizes: Sizes) -> None:
    """Hand the last section's GPU memory back, so the next section's peak is its own."""
    import gc

    import torch

    gc.collect()
    if sizes.device == "cuda":
        torch.cuda.empty_cache()


def environment(sizes: Sizes) -> dict[str, Any]:
    """The machine and the versions the measurements ran with."""
    import importlib.metadata

    import torch

    versions = {}
    for name in ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "deepspeed", "math-verify",
                 "wandb", "pyarrow", "tokenizers", "huggingface-hub"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(), "versions": versions,
                           "cpu_count": os.cpu_count()}
    if sizes.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   multiprocessors=props.multi_processor_count, cuda=torch.version.cuda,
                   flash_attn=importlib.util.find_spec("flash_attn") is not None)
    else:
        env["gpu"] = None
    return env


def matmul_peak(sizes: Sizes) -> dict[str, Any]:
    """Mean rate of ten ``n x n @ n x n`` products in bf16 (fp32 on CPU) on random data, after three warm-ups."""
    import torch

    n = sizes.matmul
    dtype = torch.bfloat16 if sizes.device == "cuda" else torch.float32
    a = torch.randn(n, n, device=sizes.device, dtype=dtype)
    b = torch.randn(n, n, device=sizes.device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(sizes.device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    synchronize(sizes.device)
    seconds = (time.perf_counter() - start) / 10
    # Four significant digits: a loaded CPU's rate of a 256^3 product is a few hundredths of a TFLOP/s.
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "tflops": float(f"{2 * n**3 / seconds / 1e12:.4g}")}


def _random_prm(shape: dict[str, Any], sizes: Sizes, tokenizer, dtype, widen_head: bool = True):
    """A step classifier of ``shape`` with random weights, built where it runs; its head is widened (as the tiny
    PRM's) so that step scores spread over (0, 1) instead of all sitting at 0.5, unless ``widen_head`` is false (a
    training start: transformers' fresh head, as ``prm train`` puts on a causal LM)."""
    import torch
    from transformers import Qwen2Config

    from reasonflux_rl.prm.kinds.step_classifier_model import Qwen2ForProcessRewardModel

    config = Qwen2Config(vocab_size=sizes.vocab_size or len(tokenizer), max_position_embeddings=sizes.max_length,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **shape)
    torch.manual_seed(0)
    with torch.device(sizes.device):
        model = Qwen2ForProcessRewardModel._from_config(config, dtype=dtype, attn_implementation="sdpa")
    with torch.no_grad():
        for layer in (model.score[0], model.score[2]) if widen_head else ():
            layer.weight.normal_(0.0, 2.0 / layer.in_features**0.5)
    return model.eval()


def _model_flops(model, lengths: list[int]) -> float:
    """Forward FLOPs on the real tokens: 2 x the non-embedding parameters per token, plus causal attention's
    2 x layers x length^2 x hidden per sequence (QK^T and AV over the lower triangle)."""
    config = model.config
    dense = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    return sum(2 * dense * n + 2 * config.num_hidden_layers * n * n * config.hidden_size for n in lengths)


def _time_method(score: Callable[[dict], list], calls: list[dict], sizes: Sizes) -> tuple[float, list, float]:
    """Fastest of ``rounds`` passes over the calls (after one warm-up call), their scores, and the peak GPU memory
    the scoring added above what was allocated before it (MB; 0 on CPU)."""
    import torch

    score(calls[0])
    best, scores = math.inf, []
    if sizes.device == "cuda":
        synchronize(sizes.device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    for _ in range(sizes.rounds):
        synchronize(sizes.device)
        start = time.perf_counter()
        scores = [score(call) for call in calls]
        synchronize(sizes.device)
        best = min(best, time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if sizes.device == "cuda" else 0.0
    return best, scores, peak


def prm_scoring(sizes: Sizes, tokenizer, calls: list[dict], lengths: list[int], name: str,
                results: dict[str, Any]) -> None:
    """Section 2 for one shape (and section 3 after it, on the same weights, for the shape ``bf16_vs_fp32`` names).

    Fills ``results["prm_scoring"][name]`` (and ``results["bf16_vs_fp32"]``)."""
    import torch
    from prm_scoring import baseline_scorer, max_diff

    from reasonflux_rl.prm.engine.base import default_batch_overhead
    from reasonflux_rl.prm.kinds.step_classifier import StepScorer

    dtype = torch.bfloat16 if sizes.device == "cuda" else torch.float32
    start = time.perf_counter()
    model = _random_prm(sizes.prm_shapes[name], sizes, tokenizer, dtype)
    synchronize(sizes.device)
    report: dict[str, Any] = {"shape": sizes.prm_shapes[name], "dtype": str(dtype).removeprefix("torch."),
                              "attention": "sdpa", "build_seconds": round(time.perf_counter() - start, 1),
                              "weights_gb": round(sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9,
                                                  2)}
    ours = StepScorer(model, tokenizer, max_length=sizes.max_length)
    methods = {
        "per_sample": baseline_scorer("per_sample", model, tokenizer),
        "padded": baseline_scorer("padded", model, tokenizer),
        "ours": lambda call: [r.step_scores for r in ours.score([call["problem"]] * len(call["completions"]),
                                                                call["completions"])],
    }
    tokens = sum(lengths)
    flops = _model_flops(model, lengths)
    peak = results.get("matmul_peak", {}).get("tflops")
    scores = {}
    for method, score in methods.items():
        seconds, scores[method], memory = _time_method(score, calls, sizes)
        report[f"tokens_per_s_{method}"] = round(tokens / seconds)
        report[f"seconds_{method}"] = round(seconds, 3)
        report[f"peak_gpu_mb_over_weights_{method}"] = round(memory)
        if peak:
            report[f"fraction_of_peak_{method}"] = round(flops / seconds / 1e12 / peak, 3)
        log(f"{name} {method}: {tokens / seconds:,.0f} tokens/s")
    report["batch_tokens_ours"] = ours.batch_tokens
    report["batch_overhead_ours"] = default_batch_overhead(torch.device(sizes.device), ours.num_parameters)
    report["ours_by_batch_overhead"] = sweep(ours, methods["ours"], calls, tokens, sizes)
    report["speedup_vs_per_sample"] = round(report["tokens_per_s_ours"] / report["tokens_per_s_per_sample"], 2)
    report["speedup_vs_padded"] = round(report["tokens_per_s_ours"] / report["tokens_per_s_padded"], 2)
    report["max_abs_diff_ours_vs_per_sample"] = max_diff(scores["ours"], scores["per_sample"])
    report["max_abs_diff_padded_vs_per_sample"] = max_diff(scores["padded"], scores["per_sample"])
    results["prm_scoring"][name] = report
    if name == sizes.share_prm:
        results["bf16_vs_fp32"] = bf16_vs_fp32(model, ours, calls, scores["ours"], sizes)


def sweep(scorer, score: Callable[[dict], list], calls: list[dict], tokens: int, sizes: Sizes) -> dict[str, int]:
    """Ours at other bucket settings: tokens/s by ``overhead/batch_tokens`` (the padded tokens one more forward
    pass is taken to cost when buckets are cut, and the budget per pass). The defaults come from here."""
    defaults = (scorer.batch_overhead, scorer.batch_tokens)
    rates = {}
    for overhead, budget in ((256, 16384), (1024, 16384), (2048, 16384), (4096, 16384), (2048, 32768)):
        scorer.batch_overhead, scorer.batch_tokens = overhead, budget
        seconds, _, _ = _time_method(score, calls, sizes)
        rates[f"{overhead}/{budget}"] = round(tokens / seconds)
    scorer.batch_overhead, scorer.batch_tokens = defaults
    return rates


def bf16_vs_fp32(model, scorer, calls: list[dict], low: list, sizes: Sizes) -> dict[str, Any]:
    """Section 3: ``low`` (ours, in the model's dtype) against ours with the same weights cast up to fp32."""
    import torch

    if model.dtype == torch.float32:  # --cpu: the check of the code path, bf16 against fp32 the other way round
        model.to(torch.bfloat16)
        low = [[r.step_scores for r in scorer.score([c["problem"]] * len(c["completions"]), c["completions"])]
               for c in calls]
    model.float()
    high = [[r.step_scores for r in scorer.score([c["problem"]] * len(c["completions"]), c["completions"])]
            for c in calls]
    pairs = [(a, b) for ca, cb in zip(low, high) for ra, rb in zip(ca, cb) for a, b in zip(ra, rb, strict=True)]
    diffs = sorted(abs(a - b) for a, b in pairs)
    spread = [b for _, b in pairs]
    mean = sum(spread) / len(spread)
    return {
        "prm": sizes.share_prm,
        "steps": len(pairs),
        "max_abs_diff": round(diffs[-1], 5),
        "p99_abs_diff": round(diffs[int(0.99 * (len(diffs) - 1))], 5),
        "mean_abs_diff": round(sum(diffs) / len(diffs), 5),
        "fp32_score_std": round((sum((b - mean) ** 2 for b in spread) / len(spread)) ** 0.5, 4),
    }


def grpo_smoke(sizes: Sizes, tiny: Path, tmp: Path, *extra: str) -> dict[str, Any]:
    """Sections 4 and 5: ``reasonflux-rl train`` on the GPU smoke recipe for 2 steps, as a user starts it (with
    ``extra`` arguments: dense credit)."""
    out = tmp / ("grpo-smoke" + "".join(extra).replace("-", "_"))
    command = [sys.executable, "-m", "reasonflux_rl", "train", "--config", str(REPO / "recipes/smoke/gpu.yaml"),
               "--model_name_or_path", str(tiny / "policy"), "--prm_name_or_path", str(tiny / "prm"),
               "--output_dir", str(out), "--max_steps", "2", *extra]
    if sizes.device == "cpu":
        command += ["--use_cpu", "true", "--bf16", "false", "--dtype", "float32"]
    env = {**os.environ, "WANDB_DIR": str(out), "PYTHONPATH": os.pathsep.join(sys.path)}
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    report: dict[str, Any] = {"command": " ".join(command[2:]), "returncode": proc.returncode,
                              "seconds": round(time.perf_counter() - start, 1)}
    if proc.returncode != 0:
        report["stderr_tail"] = proc.stderr[-3000:]
        return report
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "reasonflux/mixed_mean" in entry]
    report["steps_logged"] = len(steps)
    report["reward_metrics"] = sorted(k for k in steps[-1] if k.startswith("reasonflux/")) if steps else []
    report["last_step"] = {k: v for k, v in steps[-1].items() if k.startswith(("reasonflux/", "loss", "reward"))} \
        if steps else {}
    report["wandb_offline_run"] = any((out / "wandb").glob("offline-run-*"))
    return report


class _Timings:
    """Seconds per optimizer step, read from TRL's own profiling blocks and the trainer's callback events."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.steps: list[dict[str, float]] = []
        self.current: dict[str, float] = {}

    def record(self, name: str, seconds: float) -> None:
        self.current[name] = self.current.get(name, 0.0) + seconds

    def callback(self):
        from transformers import TrainerCallback

        timings = self

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                synchronize(timings.device)
                timings.current = {}
                timings.step_start = time.perf_counter()

            def on_pre_optimizer_step(self, args, state, control, **kwargs):
                synchronize(timings.device)
                timings.optimizer_start = time.perf_counter()

            def on_optimizer_step(self, args, state, control, **kwargs):
                synchronize(timings.device)
                timings.record("optimizer_step", time.perf_counter() - timings.optimizer_start)

            def on_step_end(self, args, state, control, **kwargs):
                synchronize(timings.device)
                timings.record("step", time.perf_counter() - timings.step_start)
                timings.steps.append(timings.current)

        return Clock()


@contextlib.contextmanager
def _trl_profiling(timings: _Timings):
    """Record the durations of TRL's own ``profiling_context`` blocks (generation, reward calls, loss)."""
    from trl.extras.profiling import ProfilingContext

    original = ProfilingContext._log_metrics

    def log_metrics(self, duration: float) -> None:
        timings.record(self.name, duration)
        original(self, duration)

    ProfilingContext._log_metrics = log_metrics
    try:
        yield
    finally:
        ProfilingContext._log_metrics = original


def _save_random_policy(shape: dict[str, Any], tokenizer, out: Path, sizes: Sizes) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, max_position_embeddings=4096,
                         **{"tie_word_embeddings": True, **shape})
    torch.manual_seed(0)
    dtype = torch.bfloat16 if sizes.device == "cuda" else torch.float32
    with torch.device(sizes.device):
        model = Qwen2ForCausalLM._from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def reward_share(sizes: Sizes, tokenizer, tmp: Path) -> dict[str, Any]:
    """Section 5: where the seconds of one GRPO step go, with the PRM a replica beside the policy."""
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from reasonflux_rl.rewards.build import build_reward_funcs
    from reasonflux_rl.rewards.config import RewardArguments
    from reasonflux_rl.train.launch import TrainScriptArguments, load_train_dataset

    policy = _save_random_policy(sizes.share_policy, tokenizer, tmp / "share-policy", sizes)
    prm_dir = tmp / "share-prm"
    dtype = torch.bfloat16 if sizes.device == "cuda" else torch.float32
    prm = _random_prm(SHAPES[sizes.share_prm], dataclasses.replace(sizes, vocab_size=None), tokenizer,
                      dtype)
    prm.config.architectures = ["Qwen2ForProcessRewardModel"]
    prm.save_pretrained(prm_dir)
    tokenizer.save_pretrained(prm_dir)
    del prm
    reward_args = RewardArguments(prm_name_or_path=str(prm_dir), prm_beta=0.75, thinking_prefilled=True,
                                  prm_max_length=sizes.max_length)
    batch = sizes.share_prompts * sizes.share_generations
    args = GRPOConfig(
        output_dir=str(tmp / "share-out"), max_steps=2, per_device_train_batch_size=batch // 4,
        gradient_accumulation_steps=4, num_generations=sizes.share_generations,
        max_completion_length=sizes.share_new_tokens, generation_kwargs={"min_new_tokens": sizes.share_new_tokens},
        learning_rate=1e-6, beta=0.001, bf16=sizes.device == "cuda", use_cpu=sizes.device == "cpu",
        model_init_kwargs={"dtype": "bfloat16" if sizes.device == "cuda" else "float32"},
        logging_steps=1, save_strategy="no", report_to="none", seed=0,
    )
    dataset = load_train_dataset(TrainScriptArguments(dataset_name="builtin:smoke_math"), reward_args)
    funcs, _ = build_reward_funcs(reward_args, num_generations=args.num_generations)
    timings = _Timings(sizes.device)
    try:
        trainer = GRPOTrainer(model=str(policy), reward_funcs=funcs, args=args, train_dataset=dataset,
                              callbacks=[timings.callback()])
        with _trl_profiling(timings):
            trainer.train()
    finally:
        funcs[0].close()
    history = [e for e in trainer.state.log_history if "reasonflux/prm_seconds" in e]
    steps = []
    for clock, metrics in zip(timings.steps, history):
        generation = clock.get("GRPOTrainer.transformers.generate", 0.0)
        outcome, prm_seconds = metrics["reasonflux/outcome_seconds"], metrics["reasonflux/prm_seconds"]
        rewards = clock.get("GRPOTrainer._calculate_rewards", outcome + prm_seconds)
        # Milliseconds kept: on --cpu a whole step takes well under a second.
        step = {"step": round(clock["step"], 4), "generation": round(generation, 4),
                "outcome_reward": round(outcome, 4), "prm_scoring": round(prm_seconds, 4),
                "optimizer_step": round(clock.get("optimizer_step", 0.0), 4)}
        step["rest"] = round(clock["step"] - generation - rewards - step["optimizer_step"], 4)
        step["reward_fraction"] = round((outcome + prm_seconds) / clock["step"], 3)
        step["trl_profiling"] = {k: round(v, 3) for k, v in sorted(clock.items()) if k.startswith("GRPOTrainer.")}
        steps.append(step)
    return {
        "policy": {"shape": sizes.share_policy, "vocab": len(tokenizer)},
        "prm": {"shape": SHAPES[sizes.share_prm], "placement": "replica",
                "device": str(funcs[0].prm.scorer.device)},
        "completions_per_step": batch, "prompts_per_step": sizes.share_prompts,
        "new_tokens": sizes.share_new_tokens, "micro_batches_per_step": 4, "kl_beta": 0.001,
        "mean_completion_length": next((e.get("completions/mean_length") for e in reversed(history)), None),
        "steps": steps,
        "seconds_measured_step": steps[-1] if steps else None,
    }


def step_value_head(sizes: Sizes, tmp: Path, calls: list[dict]) -> dict[str, Any]:
    """Section 7: the step value-head kind on this device, loaded from a checkpoint in the hub layout."""
    import torch

    from reasonflux_rl.prm import load_scorer
    from reasonflux_rl.tiny import write_tiny_step_value_head

    dtype = torch.bfloat16 if sizes.device == "cuda" else torch.float32
    start = time.perf_counter()
    path = write_tiny_step_value_head(tmp / "step-value-head", device=sizes.device, dtype=dtype,
                                      max_position_embeddings=sizes.max_length, **SHAPES[sizes.share_prm])
    report: dict[str, Any] = {"shape": SHAPES[sizes.share_prm], "write_seconds": round(time.perf_counter() - start, 1)}

    def scores(scorer, one_at_a_time: bool = False) -> list[float]:
        pairs = [(c["problem"], x) for c in calls for x in c["completions"]]
        if one_at_a_time:
            results = [r for p, x in pairs for r in scorer.score([p], [x])]
        else:
            results = [r for c in calls for r in scorer.score([c["problem"]] * len(c["completions"]), c["completions"])]
        return [s for r in results for s in r.step_scores]

    ours = load_scorer(path, device=sizes.device)
    report.update(kind=ours.kind, decoder_dtype=str(ours.model.model.dtype).removeprefix("torch."),
                  head_dtype=str(ours.model.v_head.summary.weight.dtype).removeprefix("torch."),
                  attention=ours.model.config._attn_implementation, packed=ours.packed)
    seconds, [low], _ = _time_method(lambda _, scorer=ours: scores(scorer), [None], sizes)
    tokens = sum(len(row) for c in calls for x in c["completions"] for row in ours.encode(c["problem"], x).rows)
    report["tokens_per_s"] = round(tokens / seconds)
    ours = None  # the fp32 copy needs the memory
    release_memory(sizes)
    full = load_scorer(path, device=sizes.device, dtype="float32")
    high = scores(full)
    alone = scores(full, one_at_a_time=True)
    report["steps"] = len(high)
    report["max_abs_diff_bf16_vs_fp32"] = round(max(abs(a - b) for a, b in zip(low, high, strict=True)), 5)
    report["max_abs_diff_batched_vs_alone_fp32"] = max(abs(a - b) for a, b in zip(high, alone, strict=True))
    report["fp32_score_std"] = round(float(torch.tensor(high).std()), 4)
    return report


def _labelled_pairs(scorer, calls: list[dict]) -> list:
    """Section 2's traces as labelled pairs: every step right up to a first wrong one (none in half of them), wrong
    from there on; the trajectory right when no step is wrong. Fixed by a seed."""
    import random

    from reasonflux_rl.prm_training.fields import LabelledPair

    rng = random.Random(0)
    pairs = []
    for problem, completion in ((c["problem"], x) for c in calls for x in c["completions"]):
        steps = scorer.encode(problem, completion).result.num_steps
        wrong = rng.randrange(steps) if rng.random() < 0.5 else steps
        pairs.append(LabelledPair(len(pairs), problem, completion, step_targets=tuple(
            float(k < wrong) for k in range(steps)), trajectory_target=float(wrong == steps)))
    return pairs


def prm_train(sizes: Sizes, tokenizer, calls: list[dict], tmp: Path) -> dict[str, Any]:
    """Section 8: ``PRMTrainer`` steps on a random step classifier, as ``reasonflux-rl prm train`` runs them: the
    training tokens/s (real tokens of the rows, over the seconds of every step but the first), the peak GPU memory
    (weights, gradients and Adam's state included) and, on one fixed batch trained on repeatedly, the first and last
    step's loss."""
    import torch
    from transformers import TrainerCallback, TrainingArguments

    from reasonflux_rl.prm.kinds.step_classifier import StepScorer
    from reasonflux_rl.prm_training.encoding import TokenBudgetBatchSampler, encode_pair
    from reasonflux_rl.prm_training.objective import Objective
    from reasonflux_rl.prm_training.trainer import PRMTrainer

    def fresh_model():
        return _random_prm(sizes.train_shape, dataclasses.replace(sizes, vocab_size=None), tokenizer, torch.float32,
                           widen_head=False)

    model = fresh_model()
    scorer = StepScorer(model, tokenizer, max_length=sizes.max_length)
    rows = [row for pair in _labelled_pairs(scorer, calls) for row in encode_pair(scorer, pair)[0]]
    clock: list[list[float]] = []  # per optimizer step: real tokens, start, end

    class Timed(PRMTrainer):
        def get_batch_samples(self, epoch_iterator, num_batches, device):
            synchronize(sizes.device)
            start = time.perf_counter()
            batches, count = super().get_batch_samples(epoch_iterator, num_batches, device)
            # Right-padded rows: the pads sit at position 0 after each row's real tokens.
            clock.append([sum(int((b["position_ids"] > 0).sum()) + len(b["position_ids"]) for b in batches), start])
            return batches, count

    class StepEnd(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            synchronize(sizes.device)
            clock[-1].append(time.perf_counter())

    def train(model, train_rows: list, steps: int, name: str) -> list[float]:
        args = TrainingArguments(
            output_dir=str(tmp / name), max_steps=steps, learning_rate=sizes.train_learning_rate,
            lr_scheduler_type="constant", bf16=sizes.device == "cuda", use_cpu=sizes.device == "cpu",
            dataloader_pin_memory=sizes.device == "cuda", logging_steps=1, save_strategy="no", report_to="none",
            disable_tqdm=True, seed=0)
        trainer = Timed(model=model, args=args, train_dataset=train_rows, processing_class=tokenizer,
                        objective=Objective(), batch_tokens=sizes.train_batch_tokens, callbacks=[StepEnd()])
        trainer.train()
        return [e["loss"] for e in trainer.state.log_history if "loss" in e]

    if sizes.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train(model, rows, sizes.train_steps, "prm-train")
    peak = torch.cuda.max_memory_allocated() / 2**20 if sizes.device == "cuda" else 0.0
    timed = clock[1:] or clock  # the first step warms up (kernels, allocator, Adam's state)
    report: dict[str, Any] = {
        "shape": sizes.train_shape, "vocab": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters()),
        "precision": "bf16 autocast, fp32 weights" if sizes.device == "cuda" else "fp32", "attention": "sdpa",
        "pairs": sum(len(c["completions"]) for c in calls), "rows": len(rows),
        "row_tokens": sum(len(r.input_ids) for r in rows), "batch_tokens": sizes.train_batch_tokens,
        "steps": len(clock), "step_seconds": [round(end - start, 4) for _, start, end in clock],
        "tokens_per_s": round(sum(t for t, _, _ in timed) / sum(end - start for _, start, end in timed)),
        "peak_gpu_mb": round(peak),
    }
    # The fixed batch: the fullest batch of the longest-first cut, a dataset of its own (one batch an epoch), trained
    # on from the same fresh weights.
    fixed = [rows[k] for k in max(TokenBudgetBatchSampler([len(r.input_ids) for r in rows], sizes.train_batch_tokens,
                                                          shuffle=False), key=len)]
    model = scorer = None
    release_memory(sizes)
    losses = train(fresh_model(), fixed, sizes.fixed_batch_steps, "prm-train-fixed")
    report["fixed_batch"] = {"rows": len(fixed), "steps": len(losses), "learning_rate": sizes.train_learning_rate,
                             "losses": [round(x, 5) for x in losses], "first_loss": losses[0],
                             "last_loss": losses[-1], "loss_falls": losses[-1] < losses[0]}
    report["passed"] = report["fixed_batch"]["loss_falls"]
    return report


def reasonflux_targets(sizes: Sizes, tokenizer, calls: list[dict], tmp: Path) -> dict[str, Any]:
    """Section 9: the models of ``prm label --method reasonflux`` on this device, labelling section 2's traces."""
    import torch

    from reasonflux_rl.prm_training.fields import LabelledPair
    from reasonflux_rl.prm_training.reasonflux_targets import (
        LocalJudge,
        PairSteps,
        SentenceEncoder,
        reasonflux_targets,
    )

    path = str(_save_random_policy(sizes.targets_shape, tokenizer, tmp / "targets-model", sizes))
    encoder = SentenceEncoder(path, device=sizes.device)
    # The kit's tokenizer has one-token digits, not a one-token "Yes": the answers' words do not change the cost.
    judge = LocalJudge(path, yes="1", no="0", device=sizes.device)
    batch = [PairSteps.of(LabelledPair(k, c["problem"], x))
             for k, (c, x) in enumerate((c, x) for c in calls for x in c["completions"])][:sizes.targets_pairs]
    seconds = {"encoder": 0.0, "judge": 0.0}

    def timed(name: str, work: Callable) -> Callable:
        def call(*args):
            synchronize(sizes.device)
            start = time.perf_counter()
            value = work(*args)
            synchronize(sizes.device)
            seconds[name] += time.perf_counter() - start
            return value
        return call

    class TimedJudge:
        rate = staticmethod(timed("judge", judge.rate))

    reasonflux_targets(batch[:2], encoder, judge)  # warm-up: kernels and allocator
    seconds.update(encoder=0.0, judge=0.0)
    if sizes.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    synchronize(sizes.device)
    start = time.perf_counter()
    rows = reasonflux_targets(batch, timed("encoder", encoder), TimedJudge())
    synchronize(sizes.device)
    total = time.perf_counter() - start
    steps = sum(len(row.fused) for row in rows)
    ratings = [q for row in rows for q in row.quality]
    return {
        "shape": sizes.targets_shape, "pairs": len(batch), "steps": steps,
        "steps_per_s": round(steps / total, 1),
        "judge_steps_per_s": round(steps / seconds["judge"], 1),
        "encoder_steps_per_s": round(steps / seconds["encoder"], 1),
        "seconds": {"total": round(total, 2), **{k: round(v, 2) for k, v in seconds.items()}},
        "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20) if sizes.device == "cuda" else None,
        "ratings_in_unit_interval": all(0.0 < q < 1.0 for q in ratings) and len(ratings) == steps,
        "steps_with_alignment": sum(a is not None for row in rows for a in row.alignment),
    }


def summarise(results: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    """The issue's targets, met or not, read off the largest PRM shape's numbers."""
    shape = list(sizes.prm_shapes)[-1]
    scoring = results.get("prm_scoring", {}).get(shape, {})
    fraction = scoring.get("fraction_of_peak_ours")
    speedup = scoring.get("speedup_vs_per_sample")
    smoke = results.get("grpo_smoke", {})
    dense = results.get("grpo_dense_credit", {})
    return {
        "shape": shape,
        "fraction_of_peak_ours": fraction,
        "fraction_of_peak_target": PEAK_TARGET,
        "fraction_of_peak_met": None if fraction is None else fraction >= PEAK_TARGET,
        "speedup_vs_per_sample": speedup,
        "speedup_vs_per_sample_target": PER_SAMPLE_TARGET,
        "speedup_vs_per_sample_met": None if speedup is None else speedup >= PER_SAMPLE_TARGET,
        "bf16_vs_fp32_max_abs_diff": results.get("bf16_vs_fp32", {}).get("max_abs_diff"),
        "grpo_smoke_passed": smoke.get("returncode") == 0 and smoke.get("steps_logged") == 2,
        "grpo_dense_credit_passed": dense.get("returncode") == 0 and dense.get("steps_logged") == 2
        and "reasonflux/process_advantage_std" in dense.get("reward_metrics", []),
        "reward_fraction_of_step": (results.get("reward_share", {}).get("seconds_measured_step") or {}).get(
            "reward_fraction"),
        "step_value_head_passed": _step_value_head_passed(results.get("step_value_head", {})),
        "prm_train_tokens_per_s": results.get("prm_train", {}).get("tokens_per_s"),
        "prm_train_passed": _prm_train_passed(results.get("prm_train", {})),
        "reasonflux_targets_steps_per_s": results.get("reasonflux_targets", {}).get("steps_per_s"),
        "reasonflux_targets_passed": (None if "steps" not in results.get("reasonflux_targets", {})
                                      else results["reasonflux_targets"]["ratings_in_unit_interval"]),
        "sections_failed": sorted(k for k, v in results.items() if isinstance(v, dict) and "error" in v),
    }


def _step_value_head_passed(report: dict[str, Any]) -> bool | None:
    """Recognised, head kept fp32, scores within bf16 rounding of fp32 and independent of the batch."""
    if "kind" not in report:
        return None
    return (report["kind"] == "step_value_head" and report["head_dtype"] == "float32"
            and report["max_abs_diff_bf16_vs_fp32"] < 0.1 and report["max_abs_diff_batched_vs_alone_fp32"] < 1e-4)


def _prm_train_passed(report: dict[str, Any]) -> bool | None:
    """It ran, and the fixed batch's loss fell."""
    if not report:
        return None
    return "error" not in report and report["fixed_batch"]["loss_falls"]


SECTIONS = ("environment", "matmul_peak", "prm_scoring", "grpo_smoke", "grpo_dense_credit", "reward_share",
            "step_value_head", "prm_train", "reasonflux_targets")


def run(sizes: Sizes, out: Path, sections: tuple[str, ...] = SECTIONS) -> dict[str, Any]:
    """The ``sections`` in turn; the JSON is rewritten after each, so a run cut short keeps what it measured."""
    from prm_scoring import make_calls, official_inputs

    from reasonflux_rl.tiny import build_tokenizer, write_tiny_models

    results: dict[str, Any] = {"kit": "benchmarks/gpu", "mode": sizes.device,
                               "date": time.strftime("%Y-%m-%d"), "sections_seconds": {}}

    def section(name: str, work: Callable[[], Any]) -> None:
        if name.removeprefix("prm_scoring_") not in sections and not (
                name.startswith("prm_scoring_") and "prm_scoring" in sections):
            return
        log(f"{name} ...")
        start = time.perf_counter()
        try:
            value = work()
            if value is not None:
                results[name] = value
        except Exception as err:  # one section's failure must not cost the others their measurements
            results[name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-4000:]}
            log(f"{name} failed: {err!r}")
        results["sections_seconds"][name] = round(time.perf_counter() - start, 1)
        results["summary"] = summarise(results, sizes)
        out.write_text(json.dumps(results, indent=2))

    tokenizer = build_tokenizer()
    calls = make_calls(calls=sizes.calls, group=sizes.group)
    lengths = [len(tokenizer.encode(official_inputs(tokenizer, c["problem"], x))) for c in calls
               for x in c["completions"]]
    if max(lengths) > sizes.max_length:  # ours would drop steps the baselines score, and the scores not compare
        raise SystemExit(f"gpu kit: a trace of {max(lengths)} tokens exceeds the {sizes.max_length}-token cap")
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        section("environment", lambda: environment(sizes))
        section("matmul_peak", lambda: matmul_peak(sizes))
        results["prm_scoring"] = {"samples": len(lengths), "calls": sizes.calls, "samples_per_call": sizes.group,
                                  "tokens": sum(lengths), "length_min_median_max": [
                                      min(lengths), sorted(lengths)[len(lengths) // 2], max(lengths)]}
        for name in sizes.prm_shapes:
            section(f"prm_scoring_{name}", lambda n=name: prm_scoring(sizes, tokenizer, calls, lengths, n, results))
            release_memory(sizes)
        tiny = write_tiny_models(tmp / "tiny").policy.parent
        section("grpo_smoke", lambda: grpo_smoke(sizes, tiny, tmp))
        section("grpo_dense_credit", lambda: grpo_smoke(sizes, tiny, tmp, "--prm_credit", "suffix_sum"))
        section("reward_share", lambda: reward_share(sizes, tokenizer, tmp))
        release_memory(sizes)
        section("step_value_head", lambda: step_value_head(sizes, tmp, calls))
        release_memory(sizes)
        section("prm_train", lambda: prm_train(sizes, tokenizer, calls, tmp))
        release_memory(sizes)
        section("reasonflux_targets", lambda: reasonflux_targets(sizes, tokenizer, calls, tmp))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="the JSON file to write")
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU: check the kit without a GPU")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})")
    parser.add_argument("--shapes", help="comma-separated PRM shapes for prm_scoring (default: all)")
    args = parser.parse_args()
    sections = tuple(args.sections.split(","))
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    import torch

    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("gpu kit: no CUDA device; use --cpu for the dry check")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Libraries log to stdout; the kit's stdout is the JSON alone.
    sizes = CPU if args.cpu else GPU
    if args.shapes:
        shapes = args.shapes.split(",")
        if set(shapes) - set(sizes.prm_shapes):
            parser.error(f"unknown shapes {shapes}; choose from {list(sizes.prm_shapes)}")
        sizes = dataclasses.replace(sizes, prm_shapes={n: sizes.prm_shapes[n] for n in shapes})
    with contextlib.redirect_stdout(sys.stderr):
        results = run(sizes, args.out, sections)
    print(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
