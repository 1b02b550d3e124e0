"""Run by tests/test_distributed.py under torchrun: a real GRPO run whose reward calls are recorded per rank.

argv: policy_dir prm_dir out_dir normalisation
"""

import sys
from pathlib import Path

from accelerate import PartialState
from datasets import Dataset
from rank_records import write_and_leave
from trl import GRPOConfig, GRPOTrainer

from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.rewards.prm import MixedReward


def parity_outcome(completions, **kwargs):
    # Deterministic and cheap: the test checks how the PRM part is normalised across ranks, not answer checking.
    return [float(len(c[0]["content"] if isinstance(c, list) else c) % 2) for c in completions]


def main():
    policy, prm, out, normalisation = sys.argv[1:5]
    out = Path(out)
    mixed = MixedReward(parity_outcome, StepScorer.from_pretrained(prm), beta=0.5, normalisation=normalisation,
                        num_generations=2)
    calls = []

    def recorded_reward(prompts, completions, **kwargs):
        rewards = mixed(prompts=prompts, completions=completions, **kwargs)
        calls.append({"prompts": prompts, "completions": completions, "rewards": rewards})
        return rewards

    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "solution": str(2 * i)} for i in range(12)]
    args = GRPOConfig(
        output_dir=str(out / "run"), use_cpu=True, ddp_backend="gloo", per_device_train_batch_size=3,
        num_generations=2, max_completion_length=24, max_steps=2, report_to="none", save_strategy="no", seed=0,
        logging_steps=1,
    )
    trainer = GRPOTrainer(model=policy, reward_funcs=[recorded_reward], args=args, train_dataset=Dataset.from_list(rows))
    trainer.train()
    state = PartialState()
    write_and_leave(state, out, {"world_size": state.num_processes, "calls": calls})


if __name__ == "__main__":
    main()
