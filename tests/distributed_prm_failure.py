"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): the reward functions called directly,
with rank 1's PRM unavailable on the first call only; each rank records its rewards and the metrics it logged.

argv: prm_dir out_dir
"""

import sys
from pathlib import Path

from accelerate import PartialState
from rank_records import write_and_leave

from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.prm.placement.pooling_client import PRMUnavailableError
from reasonflux_rl.rewards.prm import MixedReward

PROMPTS = ["Compute $2 + 3 \\times 4$."] * 2 + ["What is 7 + 7?"] * 2 + ["What is 2 * 7?"] * 2
COMPLETIONS = [
    "<think>\n3 times 4 is 12.\n\nPlus 2 is 14.\n</think>\n\nThe answer is $\\boxed{14}$.",
    "<think>\n2 + 3 is 5.\n\n5 times 4 is 20.\n</think>\n\nThe answer is $\\boxed{20}$.",
    "</think>\n\nSeven and seven.\n\nThat makes $\\boxed{14}$.",
    "<think>\nHmm.\n\nLet me think about it for a long time",
    "</think>\n\nTwo sevens are $\\boxed{15}$.",
    "<think>\nDouble 7.\n</think>\n\nIt is $\\boxed{12}$.",
]


def boxed_14(completions, **kwargs):
    # Rank 0's slice has two right answers, rank 1's none: a rank-local mean would differ from the batch's.
    return [float("\\boxed{14}" in c) for c in completions]


class UnavailableOnRank(StepScorer):
    """The tiny PRM, except that on ``failing_rank`` its first call finds no server (as a remote scorer would)."""

    failing_rank = 1

    def score(self, problems, completions):
        self.calls = getattr(self, "calls", 0) + 1
        if PartialState().process_index == self.failing_rank and self.calls == 1:
            raise PRMUnavailableError("no PRM server answered within the deadline")
        return super().score(problems, completions)


def main():
    prm, out = sys.argv[1], Path(sys.argv[2])
    # cpu=True as a CPU trainer (use_cpu) sets it up: without it accelerate sees no distributed run on CPU.
    state = PartialState(cpu=True)
    mine = slice(3 * state.process_index, 3 * state.process_index + 3)
    # Groups of two: the middle group straddles the ranks, so the fallback must agree across them.
    mixed = MixedReward(boxed_14, UnavailableOnRank.from_pretrained(prm), beta=0.5, normalisation="group_zscore",
                        num_generations=2, on_failure="outcome_only")
    calls = []
    for _ in range(2):
        metrics = {}
        rewards = mixed(prompts=PROMPTS[mine], completions=COMPLETIONS[mine], log_metric=metrics.__setitem__)
        calls.append({"prompts": PROMPTS[mine], "completions": COMPLETIONS[mine], "rewards": rewards,
                      "metrics": metrics, "scorer_calls": mixed.prm.scorer.calls})
    write_and_leave(state, out, {"world_size": state.num_processes, "calls": calls})


if __name__ == "__main__":
    main()
