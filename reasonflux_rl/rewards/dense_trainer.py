"""[`DenseCreditGRPOTrainer`]: TRL's ``GRPOTrainer`` with the PRM's step scores as token-level advantages.

TRL scores the batch as usual (its advantages, one per completion, are those of the mixed reward); this trainer
then replaces them with ``(1 - beta) * A_outcome + beta * A_process`` per token (see
[`~reasonflux_rl.rewards.credit.token_advantages`]), on every rank from the whole generation batch, before TRL
splits it into steps. TRL's loss takes advantages of shape (B, T) as they are.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from trl import GRPOTrainer

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.rewards.credit import outcome_advantages, token_advantages
from reasonflux_rl.rewards.prm import CreditInputs, MixedReward, gather_batch
from reasonflux_rl.rewards.step_tokens import step_token_ends, token_char_ends

# TRL options whose meaning rests on one advantage per sequence.
_SEQUENCE_LEVEL = (
    ("loss_type", ("vespo", "luspo"), "weights whole sequences by the sign of their one advantage"),
    ("importance_sampling_level", ("sequence",), "clips whole sequences (GSPO), one ratio against many advantages"),
    ("multi_objective_aggregation", ("normalize_then_sum",), "normalises reward functions over the batch, not groups"),
)


def check_dense_credit(args: Any) -> None:
    """Refuse the ``GRPOConfig`` settings whose meaning breaks with per-token advantages.

    Example:
    ```python
    >>> from types import SimpleNamespace
    >>> from reasonflux_rl.rewards.dense_trainer import check_dense_credit
    >>> ok = dict(loss_type="dapo", importance_sampling_level="token", multi_objective_aggregation="sum_then_normalize",
    ...           off_policy_mask_threshold=None)
    >>> check_dense_credit(SimpleNamespace(**ok))
    >>> try:
    ...     check_dense_credit(SimpleNamespace(**{**ok, "importance_sampling_level": "sequence"}))
    ... except ValueError as err:
    ...     print(str(err)[:72])
    prm_credit gives every token its own advantage, but importance_sampling_

    ```
    """
    for key, refused, why in _SEQUENCE_LEVEL:
        value = getattr(args, key, None)
        if value in refused:
            raise ConfigError(
                f"prm_credit gives every token its own advantage, but {key}={value!r} {why}: use prm_credit "
                f"'sequence' or another {key}"
            )
    if getattr(args, "off_policy_mask_threshold", None) is not None:
        raise ConfigError(
            "prm_credit gives every token its own advantage, but off_policy_mask_threshold masks whole sequences by "
            "the sign of their one advantage: unset it or use prm_credit 'sequence'"
        )


class DenseCreditGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose advantages are per token: the outcome's, mixed with the PRM's step scores at the tokens
    they judge.

    ``reward_funcs`` must be one [`~reasonflux_rl.rewards.prm.MixedReward`] with a PRM and dense credit
    (``prm_credit`` ``suffix_sum`` or ``soft_min``), e.g. from
    [`~reasonflux_rl.rewards.build.build_reward_funcs`]. Everything else is TRL's (``steps_per_generation``,
    gradient accumulation, LoRA, generation): only the advantages change. A batch the PRM could not score
    (``prm_on_failure: outcome_only``) trains on the outcome advantages alone, on every rank. Besides the reward's
    metrics it logs ``reasonflux/process_advantage_mean`` and ``_std`` (over tokens), ``step_tokens_mean`` (tokens
    per scored step), ``steps_drift`` (steps per completion minus that of the first batch) and ``credit_unmapped``
    (completions whose tokens do not spell the text the PRM read; their steps all end at their last token).

    Example:
    ```python
    >>> import contextlib, io, tempfile
    >>> from datasets import Dataset
    >>> from trl import GRPOConfig
    >>> from reasonflux_rl.rewards.build import build_reward_funcs
    >>> from reasonflux_rl.rewards.config import RewardArguments
    >>> from reasonflux_rl.rewards.dense_trainer import DenseCreditGRPOTrainer
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> paths = write_tiny_models(tempfile.mkdtemp())
    >>> funcs, _ = build_reward_funcs(RewardArguments(prm_name_or_path=str(paths.prm), prm_beta=0.5,
    ...                               prm_credit="suffix_sum", outcome_num_workers=1), num_generations=2, device="cpu")
    >>> trainer = DenseCreditGRPOTrainer(
    ...     model=str(paths.policy), reward_funcs=funcs,
    ...     train_dataset=Dataset.from_list([{"prompt": "1+1?", "solution": "2"}] * 2),
    ...     args=GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=2, num_generations=2,
    ...                     max_completion_length=8, max_steps=1, use_cpu=True, report_to="none", logging_steps=1))
    >>> with contextlib.redirect_stdout(io.StringIO()):  # the trainer prints its logs
    ...     history = trainer.train()
    >>> "reasonflux/process_advantage_mean" in trainer.state.log_history[0]
    True
    >>> funcs[0].close()

    ```
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        rewards = [f for f in self.reward_funcs if isinstance(f, MixedReward)]
        if len(self.reward_funcs) != 1 or not rewards or not rewards[0].credit.dense or rewards[0].prm is None:
            raise ConfigError(
                "DenseCreditGRPOTrainer needs reward_funcs=[one MixedReward with a PRM and prm_credit 'suffix_sum' or "
                "'soft_min'] (build_reward_funcs gives it): the outcome and the step scores must come from one "
                "reward function"
            )
        check_dense_credit(self.args)
        self.mixed_reward: MixedReward = rewards[0]
        self._first_steps_mean: dict[str, float] = {}

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        scored = self.mixed_reward.last_credit_inputs
        if scored is None or scored.completion_ids is None:
            raise RuntimeError("the mixed reward kept no batch: DenseCreditGRPOTrainer needs TRL's completion_ids")
        output["advantages"] = self._token_advantages(scored, output["completion_ids"])
        return output

    def _token_advantages(self, scored: CreditInputs, completion_ids: torch.Tensor) -> torch.Tensor:
        """This rank's (B, T) advantages, computed over the whole generation batch (every rank's rows)."""
        mode = "train" if self.model.training else "eval"
        rows, unmapped = self._rows(scored)
        everything, offset = gather_batch(rows)
        outcome, scores, ends, lengths, steps = (list(column) for column in zip(*everything))
        options = self.mixed_reward.credit
        group = self.num_generations if mode == "train" else self.num_generations_eval
        # A batch the PRM could not score trains on the outcome alone (unavailability is already agreed by all ranks).
        beta = 0.0 if scored.prm.unavailable else scored.beta
        advantages = token_advantages(
            outcome, scores, ends, lengths, group, beta, options.credit, options.temperature,
            scale_rewards=self.scale_rewards, step_transform=options.step_transform,
            clip_threshold=options.clip_threshold,
        )
        self._log_credit(mode, advantages, outcome, group, beta, ends, steps, sum(gather_batch([unmapped])[0]))
        mine = advantages[offset : offset + len(rows)]
        out = torch.zeros(completion_ids.shape, dtype=torch.float32, device=completion_ids.device)
        for i, row in enumerate(mine):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
        return out

    def _rows(self, scored: CreditInputs) -> tuple[list[tuple], int]:
        """Per completion: outcome, step scores, the token each step ends at, length, number of steps."""
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        rows, unmapped = [], 0
        for i, (text, ids) in enumerate(zip(scored.texts, scored.completion_ids)):
            scores, spans = scored.prm.step_scores[i], scored.prm.step_spans[i]
            char_ends = token_char_ends(tokenizer, ids, text) if spans else []
            if char_ends is None:
                unmapped += 1
                ends = [len(ids) - 1] * len(spans) if ids else []
            else:
                ends = step_token_ends(char_ends, spans)
            if not ids:
                scores, ends = [], []
            outcome = scored.outcome[i]
            rows.append((outcome, list(scores), ends, len(ids), scored.prm.num_steps[i]))
        return rows, unmapped

    def _log_credit(
        self, mode: str, advantages: list[list[float]], outcome: list, group: int, beta: float,
        ends: list[list[int]], steps: list[int], unmapped: int,
    ) -> None:
        metrics = self._metrics[mode]
        if beta > 0:
            # The process part alone: what the mix adds to the outcome advantage, per token.
            base = outcome_advantages(outcome, group, self.scale_rewards)
            process = [(a - (1.0 - beta) * b) / beta for row, b in zip(advantages, base) for a in row]
            if process:
                metrics["reasonflux/process_advantage_mean"].append(statistics.fmean(process))
                metrics["reasonflux/process_advantage_std"].append(statistics.pstdev(process))
        step_lengths = [b - a for row in ends for a, b in zip([-1, *row], row)]
        if step_lengths:
            metrics["reasonflux/step_tokens_mean"].append(statistics.fmean(step_lengths))
        if steps:
            steps_mean = statistics.fmean(steps)
            first = self._first_steps_mean.setdefault(mode, steps_mean)
            metrics["reasonflux/steps_drift"].append(steps_mean - first)
        metrics["reasonflux/credit_unmapped"].append(float(unmapped))
