"""The R1-style lab's build (``reasonflux-rl lab build --task r1``): the warm-start policy (the shipped lab policy,
which knows the functions, continued on R1-style solutions, as R1's distills start from a model that knows its
arithmetic), and two PRMs trained by ``prm train`` from its decoder on the same solutions, written by
[`~reasonflux_rl.lab.thinking.write_solution`]:

- ``standard``: the responses alone, one label per step (right or wrong), as Math-Shepherd-style and Qwen2.5-Math
  PRMs are trained; it never sees a thinking trajectory;
- ``trajectory_aware``: the trajectory-response pairs with the paper's joint objective (step targets on thinking and
  response steps from the judge, ``given``: a corrected detour is no error; plus the trajectory target, the outcome).

Both are measured on held-out pairs, by step kind ([`prm_figures`]), and the score distributions of trajectories with
a right and a wrong final answer are drawn side by side.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from reasonflux_rl.lab.build import (
    TASKS,
    LabBuildArguments,
    label_and_train_prm,
    prm_scorer,
    sample_completions,
    train_policy,
    write_jsonl,
)
from reasonflux_rl.lab.task import Problem, boxed_answer, problems
from reasonflux_rl.lab.thinking import (
    KINDS,
    RESPONSE_RIGHT,
    RESPONSE_WRONG,
    WRONG_CORRECTED,
    WRONG_UNCORRECTED,
    ThinkingStyle,
    judge,
    labelled_r1_solutions,
    response_rows,
)
from reasonflux_rl.tools.overlap import overlap_coefficient

PRMS = ("standard", "trajectory_aware")


@dataclass(frozen=True)
class R1LabPaths:
    """Where [`build_r1_lab`] put each asset."""

    policy: Path
    prms: dict[str, Path]
    report: Path
    figure: Path | None


def write_r1_trajectories(args: LabBuildArguments, out: str | Path) -> dict[str, Path]:
    """The rows both PRMs are trained and evaluated on: ``train.jsonl``/``test.jsonl`` (trajectory-response pairs of
    train and held-out problems, thinking in the style ``args.prm_thinking``, labelled and kinded by the judge) and
    ``train-response.jsonl``/``test-response.jsonl`` (the same solutions' responses alone).

    Example:
    ```python
    >>> import json, tempfile
    >>> from reasonflux_rl.lab.build import LabBuildArguments
    >>> from reasonflux_rl.lab.r1_build import write_r1_trajectories
    >>> paths = write_r1_trajectories(LabBuildArguments(task="r1", prm_examples=3, prm_held_out=2), tempfile.mkdtemp())
    >>> sorted(paths), len(paths["test-response"].read_text().splitlines())
    (['test', 'test-response', 'train', 'train-response'], 2)

    ```
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    style, paths = ThinkingStyle(*args.prm_thinking), {}
    for name, split, count, stream in (("train", "train", args.prm_examples, "prm"),
                                       ("test", "eval", args.prm_held_out, "prm-held-out")):
        rows = labelled_r1_solutions(problems(split, args.functions, args.lengths), count, style,
                                     random.Random(f"r1-{stream}-{args.seed}"))
        paths[name] = write_jsonl(rows, folder / f"{name}.jsonl")
        paths[f"{name}-response"] = write_jsonl(response_rows(rows), folder / f"{name}-response.jsonl")
    return paths


def r1_policy_accuracy(model: Any, tokenizer: Any, problems_: Sequence[Problem], samples: int,
                       temperature: float | None, seed: int = 0) -> dict[str, float]:
    """Share of the policy's completions whose boxed answer (after ``</think>``) is the gold one, of those the judge
    can read, and of their thinking steps by kind (``temperature=None``: greedy).

    Example:
    ```python
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from reasonflux_rl.lab.build import SHIPPED
    >>> from reasonflux_rl.lab.r1_build import r1_policy_accuracy
    >>> from reasonflux_rl.lab.task import problems
    >>> policy = AutoModelForCausalLM.from_pretrained(SHIPPED / "r1" / "policy")
    >>> tokenizer = AutoTokenizer.from_pretrained(SHIPPED / "r1" / "policy")
    >>> figures = r1_policy_accuracy(policy, tokenizer, problems("eval", lengths=(6, 7, 8))[:2], 1, None)
    >>> figures["well_formed"], sorted(figures)[:3]
    (1.0, ['accuracy', 'share_check', 'share_correction'])

    ```
    """
    batch, texts = sample_completions(model, tokenizer, problems_, samples, temperature,
                                      TASKS["r1"].completion_tokens, seed)
    right, verdicts = 0, []
    for problem, text in zip(batch, texts):
        right += boxed_answer(text) == problem.answer
        verdicts.append(judge(problem, text))
    kinds = [kind for v in verdicts if v for kind in v.thinking]
    return {"accuracy": right / len(batch), "well_formed": sum(v is not None for v in verdicts) / len(batch),
            **{f"share_{kind}": kinds.count(kind) / len(kinds) if kinds else 0.0 for kind in KINDS}}


def prm_figures(model: Any, tokenizer: Any, rows: Sequence[dict]) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """A PRM's held-out figures on labelled trajectory-response rows: per step kind, how many steps and the share
    it says are right (score above 0.5) and their mean score; its step accuracy against the labels, its recall on
    wrong steps never corrected, its mean score of wrong steps later corrected; and the overlap of the mean step
    scores of trajectories with a right and a wrong final answer (the paper's diagnostic; 1: indistinguishable).
    Also those mean scores, by answer, for the figure.

    Example:
    ```python
    >>> import random
    >>> from transformers import AutoTokenizer
    >>> from reasonflux_rl.lab.build import SHIPPED
    >>> from reasonflux_rl.lab.r1_build import prm_figures
    >>> from reasonflux_rl.lab.task import problems
    >>> from reasonflux_rl.lab.thinking import ThinkingStyle, labelled_r1_solutions
    >>> from reasonflux_rl.prm.kinds.step_classifier_model import Qwen2ForProcessRewardModel
    >>> prm = Qwen2ForProcessRewardModel.from_pretrained(SHIPPED / "r1" / "prm_trajectory_aware")
    >>> tokenizer = AutoTokenizer.from_pretrained(SHIPPED / "r1" / "prm_trajectory_aware")
    >>> rows = labelled_r1_solutions(problems("eval", lengths=(6, 7, 8)), 4, ThinkingStyle(0.2, 0.4, 0.2, 0.1),
    ...                              random.Random(0))
    >>> figures, by_answer = prm_figures(prm, tokenizer, rows)
    >>> 0 <= figures["step_accuracy"] <= 1, sum(len(v) for v in by_answer.values())
    (True, 4)

    ```
    """
    scorer = prm_scorer(model, tokenizer)
    results = scorer.score([row["problem"] for row in rows], [row["completion"] for row in rows])
    by_kind: dict[str, list[float]] = {}
    said_right_when = []
    by_answer: dict[str, list[float]] = {"right answer": [], "wrong answer": []}
    for row, result in zip(rows, results):
        for score, kind, label in zip(result.step_scores, row["kinds"], row["labels"]):
            by_kind.setdefault(kind, []).append(score)
            said_right_when.append((score > 0.5, label))
        answer_right = boxed_answer(row["completion"]) == int(row["solution"])
        by_answer["right answer" if answer_right else "wrong answer"].append(statistics.fmean(result.step_scores))
    kinds = {kind: {"steps": len(scores), "said_right": sum(s > 0.5 for s in scores) / len(scores),
                    "mean_score": statistics.fmean(scores)}
             for kind, scores in sorted(by_kind.items())}
    figures = {
        "step_accuracy": sum(said == label for said, label in said_right_when) / len(said_right_when),
        "recall_wrong_uncorrected": 1 - kinds.get(WRONG_UNCORRECTED, {"said_right": 1.0})["said_right"],
        "recall_response_wrong": 1 - kinds.get(RESPONSE_WRONG, {"said_right": 1.0})["said_right"],
        "mean_score_wrong_corrected": kinds.get(WRONG_CORRECTED, {}).get("mean_score"),
        "mean_score_response_right": kinds.get(RESPONSE_RIGHT, {}).get("mean_score"),
        "trajectory_overlap": overlap_coefficient(by_answer["right answer"], by_answer["wrong answer"]),
        "kinds": kinds,
    }
    return figures, by_answer


def _draw(distributions: dict[str, dict[str, list[float]]], overlaps: dict[str, float], path: Path) -> Path | None:
    """Both PRMs' score distributions of right- and wrong-answer trajectories, side by side, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(1, len(distributions), figsize=(10, 3.6), dpi=120, sharey=True)
    edges = [i / 20 for i in range(21)]
    for axis, (name, groups) in zip(axes, distributions.items()):
        for colour, (label, values) in zip(("#2a7", "#c33"), groups.items()):
            axis.hist(values, bins=edges, density=True, alpha=0.4, color=colour, label=f"{label} (n={len(values)})")
        axis.set(title=f"{name} PRM: overlap {overlaps[name]:.2f}", xlabel="mean step score of the trajectory")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("density")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def build_r1_lab(args: LabBuildArguments) -> R1LabPaths:
    """Build and save the R1-style lab's tokenizer, policy and two PRMs into ``args.out``, measure them on held-out
    problems, and write ``lab.json`` and ``prm_scores.png``."""
    out = Path(args.out)
    paths = R1LabPaths(out / "policy", {name: out / f"prm_{name}" for name in PRMS}, out / "lab.json",
                       out / "prm_scores.png")
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.r1_base)
    policy = train_policy(tokenizer, args)
    policy.save_pretrained(paths.policy)
    tokenizer.save_pretrained(paths.policy)
    seconds = {"policy": round(time.perf_counter() - start, 1)}
    data = write_r1_trajectories(args, tempfile.mkdtemp(prefix="lab-r1-data-"))
    held_out_rows = [json.loads(line) for line in data["test"].read_text().splitlines()]
    report: dict[str, Any] = {"arguments": asdict(args), "prms": {}}
    distributions, overlaps = {}, {}
    for name, suffix, lambda_final in (("standard", "-response", 0.0), ("trajectory_aware", "", 1.0)):
        began = time.perf_counter()
        prm, verdict = label_and_train_prm(paths.policy, paths.prms[name], data[f"train{suffix}"],
                                           data[f"test{suffix}"], args, lambda_final=lambda_final)
        figures, distributions[name] = prm_figures(prm, tokenizer, held_out_rows)
        overlaps[name] = figures["trajectory_overlap"]
        report["prms"][name] = {"training": verdict, "trained_on": f"train{suffix}.jsonl", "lambda_final": lambda_final,
                                "held_out": figures}
        seconds[f"prm_{name}"] = round(time.perf_counter() - began, 1)
    held_out = problems("eval", args.functions, args.lengths)
    report.update({
        "policy_sampled": r1_policy_accuracy(policy, tokenizer, held_out, args.eval_samples, 1.0, args.seed),
        "policy_greedy": r1_policy_accuracy(policy, tokenizer, held_out, 1, None, args.seed),
        "policy_parameters": sum(p.numel() for p in policy.parameters()),
        "held_out_problems": len(held_out), "held_out_pairs": len(held_out_rows), "seconds": seconds,
    })
    paths.report.write_text(json.dumps(report, indent=2) + "\n")
    figure = _draw(distributions, overlaps, paths.figure)
    return R1LabPaths(paths.policy, paths.prms, paths.report, figure)


def r1_summary(report: dict[str, Any]) -> str:
    """What an R1-style build gives, in a few lines: the policy's accuracy, and each PRM's held-out figures.

    Example:
    ```python
    >>> from reasonflux_rl.lab.r1_build import r1_summary
    >>> figures = {"step_accuracy": 0.8, "recall_wrong_uncorrected": 0.7, "mean_score_wrong_corrected": 0.4,
    ...            "trajectory_overlap": 0.5}
    >>> print(r1_summary({"policy_sampled": {"accuracy": 0.2}, "policy_greedy": {"accuracy": 0.6},
    ...                   "prms": {"standard": {"held_out": figures}}, "seconds": {"policy": 100, "prm": 50}}))
    policy: held-out accuracy 20% sampled (T=1), 60% greedy; built in 2m30s
    standard PRM: step accuracy 80%, recall on uncorrected slips 70%, mean score of corrected slips 0.40, \
trajectory overlap 0.50

    ```
    """
    seconds = round(sum(report["seconds"].values()))
    lines = [f"policy: held-out accuracy {report['policy_sampled']['accuracy']:.0%} sampled (T=1), "
             f"{report['policy_greedy']['accuracy']:.0%} greedy; built in {seconds // 60}m{seconds % 60:02d}s"]
    for name, prm in report["prms"].items():
        figures = prm["held_out"]
        corrected = figures["mean_score_wrong_corrected"]
        lines.append(f"{name} PRM: step accuracy {figures['step_accuracy']:.0%}, recall on uncorrected slips "
                     f"{figures['recall_wrong_uncorrected']:.0%}, mean score of corrected slips "
                     f"{'n/a' if corrected is None else f'{corrected:.2f}'}, trajectory overlap "
                     f"{figures['trajectory_overlap']:.2f}")
    return "\n".join(lines)
