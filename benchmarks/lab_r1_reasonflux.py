"""The R1-style lab's trajectory-aware PRM trained from the paper's own step targets (``reasonflux``: alignment,
quality and coherence, softmax-fused) against the same PRM from the judge's labels (``given``), on the same pairs,
with the same training. One JSON object.

    python benchmarks/lab_r1_reasonflux.py [--quick] [--pairs N] [--out DIR]

The design, fixed before any of its runs was read:

- Pairs: the lab build's PRM data (``write_r1_trajectories``: 8,000 training pairs, its 400 held-out pairs, same
  styles and seed), so the ``given`` arm is the build's trajectory-aware PRM trained again beside the new one.
- ``reasonflux`` targets: the function ``prm label --method reasonflux`` calls (``reasonflux_targets``, its defaults:
  ``position`` matching, coherence temperature 0.1 with 8 negatives, chunks of 64 rows seeded by chunk) with
  - quality: **the lab's judge behind the ``StepJudge`` interface** ([`LabJudge`]: 1 for a step the judge calls
    right, 0 otherwise; a corrected detour is no error), not a model: the lab has no judge model that reads prompts,
    and a perfect judge isolates what the fusion with alignment and coherence does to its verdicts;
  - alignment and coherence: the lab policy's decoder as the sentence encoder (``SentenceEncoder``, mean-pooled last
    hidden states), the only encoder that knows the lab's notation;
  - the trajectory target: the row's outcome (``prm label``'s default), as for ``given``.
- Training and evaluation: ``prm train`` with the build's settings (``lambda_final 1``, 3 epochs) from the policy's
  decoder on each arm's targets; each PRM's held-out figures by step kind and score-distribution overlap
  (``prm_figures``, the build's table), and its scores of finished and unfinished trajectories (``unfinished``, the
  probe that explained the hacking in ``learning.py --lab r1``).
- Hypotheses (verdicts in ``hypotheses``): (1) alignment and coherence under this encoder carry a signal of the
  judge's errors (``error_auroc`` of each component above 0.6); (2) the paper's claim: the ``reasonflux`` PRM tells
  right- from wrong-answer trajectories better than the ``given`` PRM (trajectory overlap lower by at least 0.05;
  higher by 0.05: contradicted); (3) it does not pay for unfinished trajectories (its unfinished score below its
  finished-right score, where the ``given`` PRM's is above).

The ``reasonflux`` PRM is saved in ``DIR/reasonflux/prm``; ``learning.py --lab r1`` trains its ``reasonflux_targets``
arms with the copy in ``benchmarks/results/lab_r1_reasonflux/prm``. ``--quick`` (a few pairs, 1 epoch) checks the
script.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from lab_r1_mc import POLICY, error_auroc, run_arm, targets_by_kind  # noqa: E402
from learning import prm_unfinished, unfinished_rows  # noqa: E402

from reasonflux_rl.lab.build import LabBuildArguments  # noqa: E402
from reasonflux_rl.lab.r1_build import write_r1_trajectories  # noqa: E402
from reasonflux_rl.prm_training.fields import LabelledPair  # noqa: E402
from reasonflux_rl.prm_training.reasonflux_targets import (  # noqa: E402
    COMPONENTS,
    PairSteps,
    SentenceEncoder,
    StepQuery,
    reasonflux_targets,
)

CHUNK = 64  # prm label's chunk_size default
COLUMN = "reasonflux_targets"
SIGNAL_AUROC, OVERLAP_MARGIN = 0.6, 0.05


def pair_steps(row: dict[str, Any]) -> PairSteps:
    """A lab row's steps as ``prm label`` splits them (the lab's completions open inside the thinking)."""
    return PairSteps.of(LabelledPair(0, row["problem"], row["completion"]), thinking_prefilled=True)


class LabJudge:
    """The lab's judge as a [`~reasonflux_rl.prm_training.reasonflux_targets.StepJudge`]: a step's rating is the
    judge's label of it (1 right, 0 wrong) in the labelled rows it was built from. A query that is not one of their
    steps is an error, never a guess; so is a step that two rows read alike (the same problem, steps before it and
    response) and label differently (on the build's 8,000 pairs, 19,090 steps recur, none labelled both ways).

    Example:
    ```python
    >>> from lab_r1_reasonflux import LabJudge, pair_steps
    >>> from reasonflux_rl.prm_training.reasonflux_targets import StepQuery
    >>> row = {"problem": "Start at 1.", "completion": "F(1) = 3\\n</think>\\n\\nF(1) = 2", "labels": [False, True]}
    >>> judge = LabJudge([row])
    >>> judge.rate([StepQuery("Start at 1.", (), "F(1) = 3", "F(1) = 2"), StepQuery("Start at 1.", (), "F(1) = 2",
    ...                                                                             "F(1) = 2")])
    [0.0, 1.0]

    ```
    """

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.labels: dict[tuple[str, tuple[str, ...], str, str], float] = {}
        for row in rows:
            steps = pair_steps(row)
            response = "\n\n".join(steps.response)
            for (part, k), label in zip(steps.labelled("both"), row["labels"], strict=True):
                texts = getattr(steps, part)
                key = (steps.problem, texts[:k], texts[k], response)
                if self.labels.setdefault(key, float(label)) != float(label):
                    raise ValueError(f"two rows read the same step {key} and the judge labelled it both ways")

    def rate(self, queries: Sequence[StepQuery]) -> list[float]:
        try:
            return [self.labels[q.problem, q.before, q.step, q.response] for q in queries]
        except KeyError as missing:
            raise RuntimeError(f"the lab's judge has no label for the step {missing}") from None


def label_reasonflux(train: Path, encode: SentenceEncoder, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """``train``'s rows with their ``reasonflux`` step targets (column ``reasonflux_targets``) and each component
    (``step_alignment``, ``step_quality``, ``step_coherence``), a chunk of rows at a time as ``prm label`` does; the
    path and the labelling's counts and seconds."""
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    judge, started = LabJudge(rows), time.perf_counter()
    for number, start in enumerate(range(0, len(rows), CHUNK)):
        chunk = rows[start : start + CHUNK]
        for row, targets in zip(chunk, reasonflux_targets([pair_steps(r) for r in chunk], encode, judge,
                                                          seed=seed + number)):
            row[COLUMN] = targets.fused
            row.update({f"step_{name}": getattr(targets, name) for name in COMPONENTS})
    out = train.with_name("train-reasonflux.jsonl")
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    steps = sum(len(row["labels"]) for row in rows)
    return out, {"rows": len(rows), "steps": steps, "seconds": round(time.perf_counter() - started, 1)}


def component_figures(labelled: Path) -> dict[str, dict[str, Any]]:
    """Per component (and the fused target): its mean on each kind of step and how well it ranks the judge's errors
    below the other steps (``error_auroc``; 0.5: not at all)."""
    return {name: {"error_auroc": _round(error_auroc(labelled, column)),
                   "by_kind": targets_by_kind(labelled, column)}
            for name, column in (("fused", COLUMN), *((c, f"step_{c}") for c in COMPONENTS))}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def hypotheses(components: dict[str, dict[str, Any]], arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The three verdicts of the module docstring, each with its numbers."""
    signal = {c: components[c]["error_auroc"] for c in ("alignment", "coherence")}
    overlap = {arm: arms[arm]["held_out"]["trajectory_overlap"] for arm in arms}
    gain = overlap["given"] - overlap["reasonflux"]
    unfinished = {arm: arms[arm]["unfinished"] for arm in arms}
    pays = {arm: u["unfinished"] > u["finished_right"] for arm, u in unfinished.items()}
    return {
        "alignment_and_coherence_carry_error_signal": {
            "error_auroc": signal,
            "verdict": "supported" if all(v is not None and v > SIGNAL_AUROC for v in signal.values())
            else "contradicted"},
        "reasonflux_prm_separates_answers_better": {
            "trajectory_overlap": overlap, "overlap_reduction": round(gain, 4), "margin": OVERLAP_MARGIN,
            "verdict": "supported" if gain >= OVERLAP_MARGIN else "contradicted" if gain <= -OVERLAP_MARGIN
            else "inconclusive"},
        "reasonflux_prm_does_not_pay_for_unfinished": {
            "pays_for_unfinished": pays,
            "verdict": "inconclusive" if not pays["given"] else "contradicted" if pays["reasonflux"] else "supported"},
    }


def measure(pairs: int, epochs: float, held_out: int, out: Path) -> dict[str, Any]:
    args = LabBuildArguments(task="r1", prm_examples=pairs, prm_held_out=held_out, prm_epochs=epochs)
    data = write_r1_trajectories(args, out / "data")
    held_out_rows = [json.loads(line) for line in data["test"].read_text().splitlines()]
    labelled, labelling = label_reasonflux(data["train"], SentenceEncoder(str(POLICY), device="cpu"), args.seed)
    probe, arms = unfinished_rows(), {}
    for name, train, column in (("given", data["train"], "labels"), ("reasonflux", labelled, COLUMN)):
        began = time.perf_counter()
        arms[name] = run_arm(name, train, column, data, args, out, held_out_rows)
        arms[name]["unfinished"] = prm_unfinished(out / name / "prm", probe)
        arms[name]["seconds"] = round(time.perf_counter() - began, 1)
    components = component_figures(labelled)
    return {
        "benchmark": "lab_r1_reasonflux", "pairs": pairs, "prm_epochs": epochs, "held_out_pairs": len(held_out_rows),
        "judge": "the lab's judge (LabJudge: 1 right, 0 wrong)", "encoder": str(POLICY.relative_to(REPO)),
        "labelling": labelling, "components": components, "arms": arms,
        "hypotheses": hypotheses(components, arms),
    }


KIND_ORDER = ("right", "wrong_uncorrected", "wrong_corrected", "correction", "check", "response_right",
              "response_wrong")


def plot(report: dict[str, Any], path: Path) -> Path | None:
    """Two panels by kind of step: each training target's mean (the judge's labels, the fused target and its
    alignment and coherence), and each PRM's mean held-out score; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    components = report["components"]
    panels = (("training targets (8,000 pairs)" if not report["quick"] else "training targets",
               {"judge (given)": components["quality"]["by_kind"], "fused (reasonflux)": components["fused"]["by_kind"],
                "alignment": components["alignment"]["by_kind"], "coherence": components["coherence"]["by_kind"]},
               "mean_target"),
              ("the PRMs on held-out pairs", {f"PRM from {arm}": report["arms"][arm]["held_out"]["kinds"]
                                              for arm in report["arms"]}, "mean_score"))
    figure, axes = plt.subplots(1, 2, figsize=(12, 4), dpi=120, sharey=True)
    kinds = [k for k in KIND_ORDER if k in components["fused"]["by_kind"]]
    for axis, (title, series, key) in zip(axes, panels):
        width = 0.8 / len(series)
        for index, (name, by_kind) in enumerate(series.items()):
            axis.bar([k + index * width for k in range(len(kinds))],
                     [by_kind[kind][key] if kind in by_kind else 0.0 for kind in kinds], width, label=name)
        axis.set_xticks([k + 0.4 - width / 2 for k in range(len(kinds))], [k.replace("_", "\n") for k in kinds],
                        fontsize=8)
        axis.set(title=title, ylim=(0, 1.25))
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8, loc="upper center", ncol=len(series))
    axes[0].set_ylabel("mean, by kind of step")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 pairs, 8 held out, 1 epoch: a check")
    parser.add_argument("--pairs", type=int, default=LabBuildArguments().prm_examples)
    parser.add_argument("--epochs", type=float, default=LabBuildArguments().prm_epochs)
    parser.add_argument("--out", type=Path, default=None, help="where data, targets, PRMs and the JSON go")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="lab-r1-reasonflux-"))
    settings = (16, 1.0, 8) if args.quick else (args.pairs, args.epochs, LabBuildArguments().prm_held_out)
    started = time.perf_counter()
    with redirect_stdout(sys.stderr):  # the JSON alone on stdout
        report = {**measure(*settings, out), "quick": args.quick}
    report["seconds"] = round(time.perf_counter() - started)
    out.mkdir(parents=True, exist_ok=True)
    figure = plot(report, out / "lab_r1_reasonflux.png")
    report["figure"] = None if figure is None else figure.name
    (out / "lab_r1_reasonflux.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
