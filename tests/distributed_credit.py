"""Run by tests/test_credit.py under torchrun: dense credit on two ranks, each rank's inputs and advantages recorded.

argv: policy_dir prm_dir out_dir
"""

import sys
from pathlib import Path

from accelerate import PartialState
from datasets import Dataset
from distributed_grpo import parity_outcome
from rank_records import write_and_leave
from trl import GRPOConfig

from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.rewards.credit import CreditOptions
from reasonflux_rl.rewards.dense_trainer import DenseCreditGRPOTrainer
from reasonflux_rl.rewards.prm import MixedReward


class RecordingTrainer(DenseCreditGRPOTrainer):
    calls: list = []

    def _token_advantages(self, scored, completion_ids):
        advantages = super()._token_advantages(scored, completion_ids)
        self.calls.append({
            "texts": scored.texts, "ids": scored.completion_ids, "outcome": scored.outcome,
            "scores": scored.prm.step_scores, "spans": scored.prm.step_spans,
            "advantages": [row[: len(ids)].tolist() for row, ids in zip(advantages, scored.completion_ids)],
        })
        return advantages


def main():
    policy, prm, out = sys.argv[1:4]
    out = Path(out)
    mixed = MixedReward(parity_outcome, StepScorer.from_pretrained(prm), beta=0.5, num_generations=2,
                        credit=CreditOptions("suffix_sum"))
    rows = [{"prompt": f"What is {i} + {i}?\n\nThink.", "solution": str(2 * i)} for i in range(12)]
    args = GRPOConfig(
        output_dir=str(out / "run"), use_cpu=True, ddp_backend="gloo", per_device_train_batch_size=3,
        num_generations=2, max_completion_length=24, max_steps=2, report_to="none", save_strategy="no", seed=0,
    )
    trainer = RecordingTrainer(model=policy, reward_funcs=[mixed], args=args, train_dataset=Dataset.from_list(rows))
    trainer.train()
    state = PartialState()
    write_and_leave(state, out, {"world_size": state.num_processes, "calls": trainer.calls})


if __name__ == "__main__":
    main()
