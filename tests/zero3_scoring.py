"""Run by tests/test_zero3.py under torchrun (2 CPU processes, gloo): PRMs sharded with ZeRO-3 score uneven slices.

argv: deepspeed_json prm_dir value_head_dir token_logit_dir step_value_head_dir out_dir
Writes out_dir/rank<r>.json with, per case, this rank's scores, its forward passes and which weights it holds.
"""

import sys

from accelerate import PartialState
from rank_records import write_and_leave
from transformers.integrations import HfDeepSpeedConfig

from reasonflux_rl.prm import load_scorer
from reasonflux_rl.tiny import TINY_TOKEN_LOGIT_TOKENS

# Small enough that the long completions each get a forward pass of their own.
BATCH_TOKENS = 160


def completion(steps: int) -> str:
    return "\n\n".join(f"Step {k}: {k} + {k} = {2 * k}." for k in range(steps)) + "\n\nSo \\boxed{2}."


# Per case, the completions each rank scores: uneven counts and lengths, and a rank with none at all.
CASES = {
    "uneven": {0: [completion(n) for n in (1, 12, 3, 20, 6)], 1: [completion(2)]},
    "rank1_empty": {0: [completion(n) for n in (9, 1, 4)], 1: []},
    "rank0_empty": {0: [], 1: [completion(n) for n in (15, 2)]},
}


def shard_sizes(module) -> dict:
    weight = module.layers[0].mlp.gate_proj.weight
    return {"local": weight.ds_tensor.numel(), "full": weight.ds_numel, "dtype": str(weight.dtype)}


def main() -> None:
    config, prm, value_head, token_logit, step_value_head, out = sys.argv[1:7]
    state = PartialState(cpu=True)
    zero3 = HfDeepSpeedConfig(config)  # what GRPOConfig(deepspeed=...) makes alive: transformers loads partitioned
    rank = state.process_index
    scorers = {
        "step_classifier+value_head": load_scorer(
            prm, trajectory_prm=value_head, placement="zero3", batch_tokens=BATCH_TOKENS, device=state.device
        ),
        "token_logit": load_scorer(
            token_logit, kind="token_logit", placement="zero3", batch_tokens=BATCH_TOKENS, device=state.device,
            **TINY_TOKEN_LOGIT_TOKENS,
        ),
        "step_value_head": load_scorer(
            step_value_head, placement="zero3", batch_tokens=BATCH_TOKENS, device=state.device
        ),
    }
    engines = {
        "step_classifier": scorers["step_classifier+value_head"].steps,
        "value_head": scorers["step_classifier+value_head"].trajectory,
        "token_logit": scorers["token_logit"],
        "step_value_head": scorers["step_value_head"],
    }
    passes = dict.fromkeys(engines, 0)
    for name, scorer in engines.items():
        scorer.engine.register_forward_hook(lambda *_, name=name: passes.__setitem__(name, passes[name] + 1))
    shards = {
        "step_classifier": shard_sizes(engines["step_classifier"].model.model),
        "value_head": shard_sizes(engines["value_head"].backbone),
        "token_logit": shard_sizes(engines["token_logit"].backbone),
        "step_value_head": shard_sizes(engines["step_value_head"].backbone),
    }
    results = {}
    for case, per_rank in CASES.items():
        completions = per_rank[rank]
        problems = [f"What is {k} + {k}?" for k in range(len(completions))]
        for kind, scorer in scorers.items():
            before = dict(passes)
            scored = scorer.score(problems, completions)
            results[f"{case}/{kind}"] = {
                "completions": completions,
                "problems": problems,
                "steps": [r.step_scores for r in scored],
                "trajectory": [r.trajectory_score for r in scored],
                "passes": {name: passes[name] - before[name] for name in passes},
            }
    record = {"world_size": state.num_processes, "shards": shards, "results": results}
    del zero3
    write_and_leave(state, out, record)


if __name__ == "__main__":
    main()
