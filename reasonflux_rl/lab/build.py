"""Build the lab's assets: a tokenizer, a warm-started policy (TRL's ``SFTTrainer``) and a step-classifier PRM
(``reasonflux-rl prm train``), in the layouts this package loads for DeepSeek-R1-Distill and ReasonFlux-PRM-7B.

``reasonflux-rl lab build --out DIR`` runs it (a few minutes on 2 CPU cores) and prints the policy's held-out
accuracy (sampled at temperature 1, as GRPO samples, and greedy) and the PRM's held-out step accuracy and recall on
wrong steps; the shipped assets in ``reasonflux_rl/lab/assets/`` were built by it with the defaults.

The PRM is trained the one way the package trains a PRM, ``prm train`` on labelled rows: solutions written with
wrong steps, each step's target 1 (right) or 0 (wrong) by the task's own check (``given`` targets), the trajectory
target whether the answer is right; its decoder starts from the policy's.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Sequence
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from trl import SFTConfig, SFTTrainer

from reasonflux_rl.lab.task import Problem, corpus, labelled_solutions, problems, step_labels, write
from reasonflux_rl.lab.thinking import ThinkingStyle, write_solution
from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.prm.kinds.step_classifier_model import Qwen2ForProcessRewardModel
from reasonflux_rl.prm_training import label_command, train_command
from reasonflux_rl.tiny import build_tokenizer

# The shipped assets: the lab's (policy/, prm/, lab.json) and the R1-style lab's (r1/).
SHIPPED = Path(__file__).with_name("assets")


@dataclass
class LabBuildArguments:
    """What ``reasonflux-rl lab build`` builds; every default is what the shipped assets were built with."""

    out: str = field(default="outputs/lab", metadata={"help": "Directory to write tokenizer, policy/ and prm/ into."})
    task: str = field(default="chains", metadata={
        "help": "chains: the lab's clean chains and one PRM; r1: R1-style thinking (reasonflux_rl/lab/thinking.py) "
                "and two PRMs, standard and trajectory-aware."})
    r1_base: str = field(default=str(SHIPPED / "policy"), metadata={
        "help": "r1: the policy the warm start continues, with its tokenizer (the shipped lab policy knows the "
                "functions; from random weights, 4 epochs of R1-style solutions taught their format, not the "
                "functions: 94 in 100 greedy steps wrong)."})
    functions: int = field(default=4, metadata={"help": "How many of the lab's functions problems use (2-4)."})
    lengths: list[int] | None = field(default=None, metadata={
        "help": "Chain lengths of problems (default: 3 4 5 for chains, 6 7 8 for r1)."})
    corruption: float = field(default=0.2, metadata={"help": "Share of corrupted steps in the policy's SFT data."})
    thinking: list[float] = field(default_factory=lambda: [0.15, 0.1, 0.15, 0.1], metadata={
        "help": "r1: how the policy's SFT solutions think, as ThinkingStyle's corrected, uncorrected, abandoned and "
                "recheck rates."})
    prm_thinking: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.2, 0.1], metadata={
        "help": "r1: the same rates for the solutions both PRMs are trained on."})
    sft_examples: int = field(default=8000, metadata={"help": "SFT examples (train problems, drawn with repeats)."})
    sft_epochs: float = field(default=4.0, metadata={"help": "SFT epochs."})
    sft_learning_rate: float = field(default=2e-3, metadata={"help": "SFT peak learning rate (cosine)."})
    prm_examples: int = field(default=8000, metadata={"help": "Labelled trajectories the PRM trains on."})
    # The settings of recipes/prm_train/cpu.yaml. Measured (benchmarks/lab_prm.py, from the shipped policy): whether
    # a run leaves the 50/50 prior depends on the seed; 5 epochs at seed 0 reached 78% where 3 reached 89%.
    prm_epochs: float = field(default=3.0, metadata={"help": "PRM epochs."})
    prm_learning_rate: float = field(default=5e-4, metadata={"help": "PRM peak learning rate (cosine)."})
    prm_loss: str = field(default="bce", metadata={"help": "L of prm train's objective (mse learned too slowly)."})
    prm_corruption: float = field(default=0.5, metadata={"help": "Share of corrupted steps in the PRM's data."})
    prm_answer_corruption: float = field(default=0.3, metadata={"help": "Share of wrong answers in the PRM's data."})
    prm_held_out: int = field(default=400, metadata={"help": "Labelled held-out trajectories prm train evaluates."})
    layers: int = field(default=2, metadata={"help": "Decoder layers of the policy and the PRM (r1: r1_base's)."})
    hidden: int = field(default=128, metadata={"help": "Hidden size of the policy and the PRM (r1: r1_base's)."})
    eval_samples: int = field(default=4, metadata={"help": "Sampled completions per held-out problem in the report."})
    seed: int = field(default=0, metadata={"help": "Seed of data, initialisation and training."})

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is not one of {list(TASKS)}")
        if self.lengths is None:
            self.lengths = list(TASKS[self.task].lengths)


@dataclass(frozen=True)
class TaskShape:
    """What a lab task needs of its models: default chain ``lengths``, the ``context`` in tokens (positions and SFT
    length), the tokens a completion may take, and whether the warm start autocasts to bf16."""

    lengths: tuple[int, ...]
    context: int
    completion_tokens: int
    sft_bf16: bool


# r1's chains are longer, so the warm start solves few problems and outcome-only GRPO sees many all-equal groups; its
# solutions reach about 480 tokens. Its warm start computes in fp32: bf16 autocast is about 25x slower on a CPU
# without bf16 units (an AMD EPYC here), and no earlier build of it is to be matched.
TASKS = {"chains": TaskShape((3, 4, 5), 256, 96, True), "r1": TaskShape((6, 7, 8), 512, 400, False)}


@dataclass(frozen=True)
class LabPaths:
    """Where [`build_lab`] put each asset."""

    policy: Path
    prm: Path
    report: Path


def lab_tokenizer() -> PreTrainedTokenizerFast:
    """The lab's byte-level BPE tokenizer, trained on its problems and solutions; ``<think>``/``</think>`` are added
    (not special) tokens, as in DeepSeek-R1-Distill's, so TRL's decoding keeps them.

    Example:
    ```python
    >>> from reasonflux_rl.lab.build import lab_tokenizer
    >>> tok = lab_tokenizer()
    >>> tok.convert_ids_to_tokens(tok.encode("H(5) = 7")), tok.decode(tok.encode("</think>"))
    (['H', '(', '5', ')', 'Ġ=', 'Ġ', '7'], '</think>')

    ```
    """
    return build_tokenizer(vocab_size=300, texts=list(corpus()), split_digits=True)


def _decoder_config(tokenizer: PreTrainedTokenizerFast, args: LabBuildArguments) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=TASKS[args.task].context,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


def chat_prompt(tokenizer: PreTrainedTokenizerFast, problem: Problem) -> str:
    """The policy's prompt for ``problem``: its chat template, the thinking opened."""
    return tokenizer.apply_chat_template([{"role": "user", "content": problem.text}], tokenize=False,
                                         add_generation_prompt=True)


def sft_dataset(tokenizer: PreTrainedTokenizerFast, args: LabBuildArguments) -> Dataset:
    """Prompt/completion rows for the warm start: train problems, steps corrupted at ``args.corruption`` (``r1``:
    solutions thinking in the style ``args.thinking``).

    Example:
    ```python
    >>> from reasonflux_rl.lab.build import LabBuildArguments, lab_tokenizer, sft_dataset
    >>> row = sft_dataset(lab_tokenizer(), LabBuildArguments(sft_examples=2))[0]
    >>> row["prompt"].endswith("<think>\\n"), row["completion"].endswith("$.<|im_end|>")
    (True, True)

    ```
    """
    rng = random.Random(f"sft-{args.seed}")
    train = problems("train", args.functions, args.lengths)
    rows = []
    for _ in range(args.sft_examples):
        problem = rng.choice(train)
        written = (write_solution(problem, ThinkingStyle(*args.thinking), rng) if args.task == "r1"
                   else write(problem, args.corruption, rng))
        completion = written.completion + tokenizer.eos_token
        rows.append({"prompt": chat_prompt(tokenizer, problem), "completion": completion})
    return Dataset.from_list(rows)


def base_policy(tokenizer: PreTrainedTokenizerFast, args: LabBuildArguments) -> Qwen2ForCausalLM:
    """The policy before its warm start: a random Qwen2 for ``chains`` (seeded by ``args.seed``), ``args.r1_base``
    (its context widened to the task's) for ``r1``; generation ends at the tokenizer's end of sequence.

    Example:
    ```python
    >>> from transformers import AutoTokenizer
    >>> from reasonflux_rl.lab.build import SHIPPED, LabBuildArguments, base_policy
    >>> base = base_policy(AutoTokenizer.from_pretrained(SHIPPED / "policy"), LabBuildArguments(task="r1"))
    >>> base.config.max_position_embeddings
    512

    ```
    """
    torch.manual_seed(args.seed)
    model = (Qwen2ForCausalLM.from_pretrained(args.r1_base, dtype=torch.float32,
                                              max_position_embeddings=TASKS[args.task].context)
             if args.task == "r1" else Qwen2ForCausalLM(_decoder_config(tokenizer, args)))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def fine_tune_policy(model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, rows: Dataset,
                     **settings: Any) -> Qwen2ForCausalLM:
    """``model`` fine-tuned in place with TRL's ``SFTTrainer`` on prompt/completion ``rows`` (completion-only loss),
    on the CPU, nothing saved; ``settings``: ``SFTConfig`` fields (a cosine schedule unless said otherwise).

    Example:
    ```python
    >>> from contextlib import redirect_stdout
    >>> from io import StringIO
    >>> from datasets import Dataset
    >>> from transformers import AutoTokenizer
    >>> from reasonflux_rl.lab.build import SHIPPED, LabBuildArguments, base_policy, fine_tune_policy
    >>> tokenizer = AutoTokenizer.from_pretrained(SHIPPED / "policy")
    >>> rows = Dataset.from_list([{"prompt": "H(5) = ?", "completion": " 7" + tokenizer.eos_token}])
    >>> with redirect_stdout(StringIO()) as said:  # the trainer prints its train metrics
    ...     policy = fine_tune_policy(base_policy(tokenizer, LabBuildArguments(task="r1")), tokenizer, rows,
    ...                               max_steps=1)
    >>> policy.training, "train_loss" in said.getvalue()
    (False, True)

    ```
    """
    config = SFTConfig(**{
        "output_dir": tempfile.mkdtemp(prefix="lab-sft-"), "lr_scheduler_type": "cosine", "save_strategy": "no",
        "report_to": "none", "use_cpu": True, "max_length": model.config.max_position_embeddings,
        "disable_tqdm": True, **settings})
    SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer).train()
    return model.eval()


def train_policy(tokenizer: PreTrainedTokenizerFast, args: LabBuildArguments) -> Qwen2ForCausalLM:
    """Warm-start [`base_policy`] on [`sft_dataset`] ([`fine_tune_policy`])."""
    return fine_tune_policy(
        base_policy(tokenizer, args), tokenizer, sft_dataset(tokenizer, args), num_train_epochs=args.sft_epochs,
        per_device_train_batch_size=64, learning_rate=args.sft_learning_rate, warmup_steps=30, logging_steps=25,
        seed=args.seed, disable_tqdm=False,
        # chains: bf16 autocast, as the shipped policy was warm-started (TRL's default). In fp32 the same budget gave
        # a weaker policy (87% greedy, 30% sampled, 2026-12-02). A CPU without bf16 units runs it about 25x slower:
        # an AMD EPYC took 6 s a step instead of 0.23 s ([7808, 128] x [128, 512]: 674 ms in bf16, 12 ms in fp32).
        bf16=TASKS[args.task].sft_bf16,
    )


def write_jsonl(rows: Sequence[dict], path: Path) -> Path:
    """``rows`` as JSON lines at ``path``; the path."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_trajectories(args: LabBuildArguments, out: str | Path) -> tuple[Path, Path]:
    """``out/train.jsonl`` (``prm_examples`` solutions of train problems) and ``out/test.jsonl`` (``prm_held_out`` of
    held-out problems), written with wrong steps and labelled step by step
    ([`~reasonflux_rl.lab.task.labelled_solutions`]): the rows the lab's PRM is trained on, and what
    ``reasonflux-rl lab trajectories`` writes.

    Example:
    ```python
    >>> import json, tempfile
    >>> from reasonflux_rl.lab.build import LabBuildArguments, write_trajectories
    >>> train, test = write_trajectories(LabBuildArguments(prm_examples=3, prm_held_out=2), tempfile.mkdtemp())
    >>> len(train.read_text().splitlines()), sorted(json.loads(test.read_text().splitlines()[0]))
    (3, ['completion', 'labels', 'problem', 'solution'])

    ```
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, split, count, stream in (("train", "train", args.prm_examples, "prm"),
                                       ("test", "eval", args.prm_held_out, "prm-held-out")):
        rows = labelled_solutions(problems(split, args.functions, args.lengths), count, args.prm_corruption,
                                  args.prm_answer_corruption, random.Random(f"{stream}-{args.seed}"))
        paths.append(write_jsonl(rows, folder / f"{name}.jsonl"))
    return paths[0], paths[1]


def prm_scorer(model: Qwen2ForProcessRewardModel, tokenizer: PreTrainedTokenizerFast) -> StepScorer:
    """The scorer of the lab's PRM as training loads it: no system prompt, thinking pre-filled."""
    return StepScorer(model, tokenizer, system_prompt=None, thinking_prefilled=True)


def train_prm(policy_dir: Path, out: Path, args: LabBuildArguments) -> tuple[Qwen2ForProcessRewardModel, str]:
    """Train the lab's PRM as a user trains one: [`write_trajectories`], then [`label_and_train_prm`] with no
    trajectory term (the judge labels the answer step by whether it follows from the last result, the outcome, the
    trajectory target, by whether it equals the gold; read at the same tag, they would pull it apart, and the lab's
    PRM is a step judge); the model and the run's verdict line."""
    train, held_out = write_trajectories(args, tempfile.mkdtemp(prefix="lab-prm-data-"))
    return label_and_train_prm(policy_dir, out, train, held_out, args, lambda_final=0.0)


def label_and_train_prm(policy_dir: Path, out: Path, train: Path, held_out: Path, args: LabBuildArguments,
                        lambda_final: float, train_labels: Sequence[str] = ("--method", "given"),
                        ) -> tuple[Qwen2ForProcessRewardModel, str]:
    """``reasonflux-rl prm label`` on labelled rows (``train_labels``, the train rows' labelling options; the
    held-out rows' targets are always the judge's labels, ``given``; the trajectory target is the outcome), written
    beside them as ``*.labelled.jsonl``, then ``reasonflux-rl prm train``, its decoder started from the warm-start
    policy's (as ReasonFlux-PRM starts from a pretrained Qwen2.5; from random weights, the sparse signal of a few
    labelled positions per row taught it nothing in the same budget), evaluated on the held-out rows; the model and
    the run's verdict line."""
    said = StringIO()
    with redirect_stdout(said):
        for rows, labels in ((train, train_labels), (held_out, ("--method", "given"))):
            label_command.main(["--input", str(rows), "--output", str(rows.with_suffix(".labelled.jsonl")), *labels,
                                "--outcome_num_workers", "1", "--no_progress", "true"])
        train_command.main([
            "--model_name_or_path", str(policy_dir), "--dataset_name", str(train.with_suffix(".labelled.jsonl")),
            "--eval_dataset_name", str(held_out.with_suffix(".labelled.jsonl")), "--output_dir", str(out),
            "--prm_system_prompt", "", "--thinking_prefilled", "true",
            "--lambda_final", str(lambda_final), "--loss", args.prm_loss, "--batch_tokens", "6400",
            "--num_train_epochs", str(args.prm_epochs),
            "--learning_rate", str(args.prm_learning_rate), "--lr_scheduler_type", "cosine", "--warmup_steps", "30",
            "--logging_steps", "25", "--eval_strategy", "epoch", "--eval_on_start", "true", "--save_strategy", "no",
            "--report_to", "none", "--use_cpu", "true", "--seed", str(args.seed),
        ])
    verdict = next(line for line in said.getvalue().splitlines() if "held-out step accuracy" in line)
    return Qwen2ForProcessRewardModel.from_pretrained(out).eval(), verdict.removeprefix("reasonflux-rl prm train: ")


def sample_completions(model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, problems_: Sequence[Problem],
                       samples: int, temperature: float | None, max_new_tokens: int,
                       seed: int = 0) -> tuple[list[Problem], list[str]]:
    """``samples`` completions of each problem by the policy (``temperature=None``: greedy, else plain sampling at
    it), in one batch: the problems, repeated, and the completions' texts."""
    torch.manual_seed(seed)
    batch = [p for p in problems_ for _ in range(samples)]
    tokenizer.padding_side = "left"
    encoded = tokenizer([chat_prompt(tokenizer, p) for p in batch], return_tensors="pt", padding=True,
                        add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=temperature is not None,
                             temperature=temperature or 1.0, top_k=None, top_p=None,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return batch, tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)


def policy_accuracy(model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, problems_: Sequence[Problem],
                    samples: int, temperature: float | None, seed: int = 0) -> dict[str, float]:
    """Share of right final answers and of right steps of the policy's completions (``temperature=None``: greedy).

    Example:
    ```python
    >>> from reasonflux_rl.lab.build import LabBuildArguments, lab_tokenizer, policy_accuracy
    >>> from reasonflux_rl.lab.task import problems
    >>> from transformers import Qwen2ForCausalLM
    >>> from reasonflux_rl.lab.build import _decoder_config
    >>> tok = lab_tokenizer()
    >>> untrained = Qwen2ForCausalLM(_decoder_config(tok, LabBuildArguments(layers=1, hidden=32)))
    >>> policy_accuracy(untrained, tok, problems("eval")[:2], samples=1, temperature=None)["accuracy"]
    0.0

    ```
    """
    batch, texts = sample_completions(model, tokenizer, problems_, samples, temperature,
                                      TASKS["chains"].completion_tokens, seed)
    labels = [step_labels(p, t) for p, t in zip(batch, texts)]
    steps = [x for row in labels if row for x in row]
    return {
        "accuracy": sum(bool(row) and all(row) for row in labels) / len(batch),
        "step_accuracy": sum(steps) / len(steps) if steps else 0.0,
        "well_formed": sum(row is not None for row in labels) / len(batch),
    }


def prm_accuracy(model: Qwen2ForProcessRewardModel, tokenizer: PreTrainedTokenizerFast,
                 problems_: Sequence[Problem], args: LabBuildArguments, count: int = 400) -> dict[str, float]:
    """The PRM's step accuracy (score > 0.5 means right) on labelled held-out trajectories, its recall on wrong
    steps, and how many of the steps were wrong."""
    scorer = prm_scorer(model, tokenizer)
    rng = random.Random(f"prm-eval-{args.seed}")
    written = [(p, write(p, args.prm_corruption, rng, args.prm_answer_corruption))
               for p in (rng.choice(problems_) for _ in range(count))]
    results = scorer.score([p.text for p, _ in written], [w.completion for _, w in written])
    pairs = [(s > 0.5, right) for r, (_, w) in zip(results, written) for s, right in zip(r.step_scores, w.labels)]
    wrong = [said for said, right in pairs if not right]
    return {
        "step_accuracy": sum(said == right for said, right in pairs) / len(pairs),
        "wrong_step_recall": sum(not said for said in wrong) / len(wrong),
        "wrong_step_share": len(wrong) / len(pairs),
    }


def build_lab(args: LabBuildArguments) -> LabPaths:
    """Build and save the tokenizer, policy and PRM into ``args.out``, measure them, and write ``lab.json``."""
    out = Path(args.out)
    paths = LabPaths(out / "policy", out / "prm", out / "lab.json")
    start = time.perf_counter()
    tokenizer = lab_tokenizer()
    policy = train_policy(tokenizer, args)
    policy.save_pretrained(paths.policy)
    tokenizer.save_pretrained(paths.policy)
    policy_seconds = time.perf_counter() - start
    prm, prm_training = train_prm(paths.policy, paths.prm, args)
    held_out = problems("eval", args.functions, args.lengths)
    report = {
        "arguments": asdict(args),
        "policy_sampled": policy_accuracy(policy, tokenizer, held_out, args.eval_samples, 1.0, args.seed),
        "policy_greedy": policy_accuracy(policy, tokenizer, held_out, 1, None, args.seed),
        "prm": prm_accuracy(prm, tokenizer, held_out, args),
        "prm_training": prm_training,
        "policy_parameters": sum(p.numel() for p in policy.parameters()),
        "prm_parameters": sum(p.numel() for p in prm.parameters()),
        "seconds": {"policy": round(policy_seconds, 1), "prm": round(time.perf_counter() - start - policy_seconds, 1)},
        "held_out_problems": len(held_out),
    }
    paths.report.write_text(json.dumps(report, indent=2) + "\n")
    return paths


def summary(report: dict[str, Any]) -> str:
    """One line on what a build gives: the policy's accuracy and the PRM's.

    Example:
    ```python
    >>> from reasonflux_rl.lab.build import summary
    >>> line = summary({"policy_sampled": {"accuracy": 0.4}, "policy_greedy": {"accuracy": 1.0},
    ...                 "prm": {"step_accuracy": 0.93, "wrong_step_recall": 0.9}, "seconds": {"policy": 60, "prm": 50}})
    >>> for part in line.split("; "):
    ...     print(part)
    policy: held-out accuracy 40% sampled (T=1), 100% greedy
    PRM: step accuracy 93%, recall on wrong steps 90%
    built in 1m50s

    ```
    """
    seconds = round(sum(report["seconds"].values()))
    return (
        f"policy: held-out accuracy {report['policy_sampled']['accuracy']:.0%} sampled (T=1), "
        f"{report['policy_greedy']['accuracy']:.0%} greedy; PRM: step accuracy {report['prm']['step_accuracy']:.0%}, "
        f"recall on wrong steps {report['prm']['wrong_step_recall']:.0%}; built in {seconds // 60}m{seconds % 60:02d}s"
    )
