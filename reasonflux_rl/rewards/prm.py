"""The reward callables TRL calls: [`MixedReward`] (eq. 12 in one function) and [`PRMReward`] (the PRM term alone, for
two reward functions with ``reward_weights``), with the metrics they log.

Group normalisations work on the ``num_generations`` completions of one prompt. TRL hands each rank only its slice
of the generation batch and a group can straddle two ranks, so raw scores are gathered across ranks before any
group or batch statistic is taken; every rank then keeps its own slice. The formula itself is
[`~reasonflux_rl.rewards.formula`].
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reasonflux_rl.prm.engine.results import Scorer, StepScores
from reasonflux_rl.prm.placement.pooling_client import PRMUnavailableError
from reasonflux_rl.rewards.config import ON_FAILURE
from reasonflux_rl.rewards.credit import CreditOptions
from reasonflux_rl.rewards.diagnostics import CompletionShape, completion_shape, shape_metrics
from reasonflux_rl.rewards.formula import Score, aggregate, mix, normalise, trajectory_reward
from reasonflux_rl.rewards.schedule import beta_at
from reasonflux_rl.trajectory import completion_text, prompt_text

logger = logging.getLogger(__name__)


def gather_batch(values: Sequence[Any]) -> tuple[list[Any], int]:
    """The whole generation batch of a per-row list (every rank's slice, in rank order) and this rank's offset in it.

    TRL hands each rank its slice of the generation batch, in rank order; a single process has the whole batch.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.prm import gather_batch
    >>> gather_batch([0.2, 0.6])  # single process
    ([0.2, 0.6], 0)

    ```
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    if state.num_processes == 1:
        return list(values), 0
    per_rank = gather_object([list(values)])
    offset = sum(len(part) for part in per_rank[: state.process_index])
    return [value for part in per_rank for value in part], offset


def gather_normalise(scores: list[Score], method: str, group_size: int | None) -> list[Score]:
    """[`normalise`] over the global batch when running distributed; returns this rank's slice.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.prm import gather_normalise
    >>> gather_normalise([0.2, 0.6], "group_minmax", group_size=2)  # single process: same as normalise
    [0.0, 1.0]

    ```
    """
    if method == "none":
        return list(scores)
    flat, offset = gather_batch(scores)
    return normalise(flat, method, group_size)[offset : offset + len(scores)]


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2 or statistics.pstdev(xs) < 1e-12 or statistics.pstdev(ys) < 1e-12:
        return None
    return statistics.correlation(xs, ys)


def _mean(values: Sequence[Score]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


@dataclass
class PRMBatch:
    """What [`PRMReward.score`] computed for this rank's slice of one batch.

    ``unavailable`` is set when the PRM servers could not score the batch (on any rank) and the policy is
    ``outcome_only``: every raw score is then ``None``.
    """

    raw: list[Score]
    normalised: list[Score]
    step_scores: list[list[float]]
    num_steps: list[int]
    dropped_fraction: list[float]
    unavailable: bool = False
    step_spans: list[list[tuple[int, int]]] = field(default_factory=list)


@dataclass
class CreditInputs:
    """What dense credit needs of the batch [`MixedReward`] last scored (this rank's rows): the texts the PRM read,
    the policy's token ids, the outcome, the PRM's steps and the beta of that step.
    """

    texts: list[str]
    completion_ids: list[list[int]] | None
    outcome: list[Score]
    prm: PRMBatch | None
    beta: float


def log_batch(
    log_metric: Callable[[str, float], None],
    prm: PRMBatch | None,
    outcome: Sequence[Score] | None = None,
    mixed: Sequence[Score] | None = None,
    shapes: Sequence[CompletionShape] | None = None,
) -> None:
    """Log the reward metrics of one generation batch, computed over the whole batch (all ranks), with the shares of
    [`~reasonflux_rl.rewards.diagnostics.shape_metrics`] when the completions' ``shapes`` are given.

    Every rank logs the same values, so TRL's average over ranks keeps them: means, standard deviation, the PRM /
    outcome correlation and the counts of missing parts are those of the global batch, not of one rank's slice.
    A metric with nothing to average is not logged (a NaN would poison TRL's running mean).
    """
    columns: dict[str, Sequence[Any]] = {}
    if prm is not None:
        columns.update(prm_mean=prm.raw, prm_normalised_mean=prm.normalised, steps_mean=prm.num_steps,
                       dropped_step_frac=prm.dropped_fraction)
    if outcome is not None:
        columns["outcome_mean"] = outcome
    if mixed is not None:
        columns["mixed_mean"] = mixed
    if shapes is not None:
        columns["shape"] = shapes
    rows, _ = gather_batch(list(zip(*columns.values())))
    batch = {name: [row[i] for row in rows] for i, name in enumerate(columns)}
    for name, value in shape_metrics(batch.pop("shape", [])).items():
        log_metric(f"reasonflux/{name}", value)
    for name, values in batch.items():
        value = _mean(values)
        if value is not None:
            log_metric(f"reasonflux/{name}", value)
    if prm is not None:
        present = [v for v in batch["prm_mean"] if v is not None]
        if present:
            log_metric("reasonflux/prm_std", statistics.pstdev(present))
        log_metric("reasonflux/prm_missing", float(len(batch["prm_mean"]) - len(present)))
        log_metric("reasonflux/prm_unavailable", float(prm.unavailable))
    if outcome is not None:
        log_metric("reasonflux/outcome_missing", float(sum(o is None for o in batch["outcome_mean"])))
    if prm is not None:
        steps = batch["steps_mean"]
        if steps:
            log_metric("reasonflux/single_step_frac", sum(n == 1 for n in steps) / len(steps))
            log_metric("reasonflux/no_step_frac", sum(n == 0 for n in steps) / len(steps))
    if prm is not None and outcome is not None:
        pairs = [(o, p) for o, p in zip(batch["outcome_mean"], batch["prm_mean"]) if o is not None and p is not None]
        corr = _pearson([o for o, _ in pairs], [p for _, p in pairs])
        if corr is not None:
            log_metric("reasonflux/prm_outcome_corr", corr)
        _log_disagreement(log_metric, pairs)


def _log_disagreement(log_metric: Callable[[str, float], None], pairs: list[tuple[float, float]]) -> None:
    """How often the PRM and the outcome disagree: a raw PRM score of at least 0.5 on a wrong answer (outcome below
    0.5), and below 0.5 on a right one; each a fraction of the wrong (right) completions."""
    wrong = [p for o, p in pairs if o < 0.5]
    right = [p for o, p in pairs if o >= 0.5]
    if wrong:
        log_metric("reasonflux/prm_high_when_wrong", sum(p >= 0.5 for p in wrong) / len(wrong))
    if right:
        log_metric("reasonflux/prm_low_when_right", sum(p < 0.5 for p in right) / len(right))


class PRMReward:
    """TRL reward function returning the normalised PRM trajectory score of each completion.

    Use it on its own, or beside the outcome reward with ``reward_weights: [1 - beta, beta]`` (see the README for how
    that interacts with ``multi_objective_aggregation``; ``beta`` is then only logged). It logs
    ``reasonflux/prm_mean`` (raw), ``prm_std``, ``prm_normalised_mean``, ``prm_missing``, ``prm_unavailable``,
    ``steps_mean``, ``dropped_step_frac`` and the completions' shapes (``correction_frac``, ``no_boxed_frac``, read as
    ``thinking_prefilled`` says) over the whole batch (see [`log_batch`]), this rank's PRM wall seconds
    (``prm_seconds``), a remote scorer's transport
    counts as ``reasonflux/prm_server_<count>`` (per rank), and the step scores as a ``prm_step_scores`` column of
    the completions table.

    When the scorer raises [`~reasonflux_rl.prm.placement.pooling_client.PRMUnavailableError`] (PRM servers down or past
    their deadline), ``on_failure="error"`` stops training with the reason, and ``"outcome_only"`` leaves every PRM
    score of that batch missing, on every rank, so that the batch trains on the outcome reward alone.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.rewards.prm import PRMReward
    >>> from reasonflux_rl.prm.kinds.step_classifier import StepScorer
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> prm = PRMReward(StepScorer.from_pretrained(write_tiny_models(tempfile.mkdtemp()).prm),
    ...                 normalisation="group_minmax", num_generations=2)
    >>> prm(prompts=["1+1?"] * 2, completions=["2", "It is 2.\\n\\nSo \\\\boxed{2}."])
    [1.0, 0.0]

    ```
    """

    __name__ = "prm"

    def __init__(
        self,
        scorer: Scorer,
        *,
        normalisation: str = "none",
        aggregation: str = "mean",
        alpha: float | None = None,
        num_generations: int | None = None,
        problem_column: str = "problem",
        on_failure: str = "error",
        beta: float | None = None,
        thinking_prefilled: bool = False,
    ) -> None:
        normalise([], normalisation, num_generations or 1)
        aggregate([], aggregation)
        if on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure={on_failure!r} is not one of {ON_FAILURE}")
        self.scorer = scorer
        self.normalisation = normalisation
        self.aggregation = aggregation
        self.alpha = alpha
        self.num_generations = num_generations
        self.problem_column = problem_column
        self.on_failure = on_failure
        self.beta = beta
        self.thinking_prefilled = thinking_prefilled

    def shapes(self, completions: list[Any]) -> list[CompletionShape]:
        """The shapes of ``completions`` ([`~reasonflux_rl.rewards.diagnostics.completion_shape`])."""
        return [completion_shape(completion_text(c), self.thinking_prefilled) for c in completions]

    def score(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> PRMBatch:
        """Score and normalise one batch (this rank's slice; normalisation statistics are global)."""
        problems = kwargs.get(self.problem_column) or [prompt_text(p) for p in prompts]
        texts = [completion_text(c) for c in completions]
        failure = None
        try:
            results = self.scorer.score(list(problems), texts)
        except PRMUnavailableError as err:
            if self.on_failure == "error":
                raise PRMUnavailableError(
                    f"{err}. Training stops (prm_on_failure: error); with prm_on_failure: outcome_only such a batch "
                    "trains on the outcome reward alone"
                ) from None
            failure = err
        unavailable = failure is not None
        if self.on_failure == "outcome_only":
            # One rank's failure drops the PRM from the whole batch, so no group mixes rows with and without it.
            unavailable = any(gather_batch([unavailable])[0])
        if unavailable:
            reason = failure if failure is not None else "another rank's PRM could not score its part of the batch"
            logger.warning("PRM servers unavailable, this batch trains on the outcome reward alone: %s", reason)
            results = [StepScores() for _ in texts]
        raw = [trajectory_reward(r.step_scores, r.trajectory_score, self.aggregation, self.alpha) for r in results]
        return PRMBatch(
            raw=raw,
            normalised=gather_normalise(raw, self.normalisation, self.num_generations),
            step_scores=[r.step_scores for r in results],
            num_steps=[r.num_steps for r in results],
            dropped_fraction=[r.dropped_fraction for r in results],
            unavailable=unavailable,
            step_spans=[r.step_spans for r in results],
        )

    def report(
        self,
        batch: PRMBatch,
        log_metric: Callable[[str, float], None] | None,
        log_extra: Callable[[str, list], None] | None,
    ) -> None:
        """What is logged per rank: a remote scorer's transport counts (reset on reading) and the step scores as a
        column of the completions table (the batch metrics are [`log_batch`]'s)."""
        metrics = getattr(self.scorer, "metrics", None)
        if metrics is not None and log_metric is not None:
            for name, value in sorted(metrics().items()):
                log_metric(f"reasonflux/prm_server_{name}", float(value))
        if log_extra is not None:
            log_extra("prm_step_scores", [[round(s, 4) for s in row] for row in batch.step_scores])

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        log_metric: Callable[[str, float], None] | None = None,
        log_extra: Callable[[str, list], None] | None = None,
        **kwargs: Any,
    ) -> list[Score]:
        start = time.perf_counter()
        batch = self.score(prompts, completions, **kwargs)
        if log_metric is not None:
            log_metric("reasonflux/prm_seconds", time.perf_counter() - start)
            log_batch(log_metric, batch, shapes=self.shapes(completions))
            if self.beta is not None:
                log_metric("reasonflux/beta", self.beta)
        self.report(batch, log_metric, log_extra)
        return batch.normalised


class MixedReward:
    """TRL reward function for ``(1 - beta) * r_outcome + beta * normalise(r_prm)``.

    ``outcome`` is a TRL reward callable (e.g. [`~reasonflux_rl.rewards.outcome.OutcomeReward`]); ``scorer`` any PRM
    scorer ([`~reasonflux_rl.prm.load_scorer`]), or ``None`` for beta 0. ``beta_schedule`` (see
    [`~reasonflux_rl.rewards.schedule.beta_at`]) moves beta over ``beta_schedule_steps`` optimizer steps (default: the
    run's ``max_steps``), read from TRL's ``trainer_state``; called without ``trainer_state`` (outside a trainer) a
    schedule is at step 0 and gives its start value (see [`current_beta`]). Besides [`PRMReward`]'s metrics it logs
    ``reasonflux/outcome_mean``, ``mixed_mean``, ``beta``, ``outcome_missing`` and ``prm_outcome_corr`` (Pearson
    correlation of raw PRM score and outcome within the batch), the completions' shapes
    (``reasonflux/correction_frac``, ``no_boxed_frac``: [`~reasonflux_rl.rewards.diagnostics`], read as
    ``thinking_prefilled`` says), and this rank's wall seconds in the outcome reward and the PRM
    (``reasonflux/outcome_seconds``, ``prm_seconds``).

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.rewards.prm import MixedReward
    >>> from reasonflux_rl.prm.kinds.step_classifier import StepScorer
    >>> from reasonflux_rl.tiny import write_tiny_models
    >>> scorer = StepScorer.from_pretrained(write_tiny_models(tempfile.mkdtemp()).prm)
    >>> exact = lambda completions, solution, **kw: [float(c == s) for c, s in zip(completions, solution)]
    >>> reward = MixedReward(exact, scorer, beta=0.0)
    >>> reward(prompts=["1+1?", "1+1?"], completions=["2", "3"], solution=["2", "2"])
    [1.0, 0.0]

    ```
    """

    __name__ = "mixed_reward"

    def __init__(
        self,
        outcome: Callable[..., list[Score]],
        scorer: Scorer | None,
        *,
        beta: float = 0.75,
        beta_schedule: str = "constant",
        beta_schedule_steps: int | None = None,
        normalisation: str = "none",
        aggregation: str = "mean",
        alpha: float | None = None,
        num_generations: int | None = None,
        problem_column: str = "problem",
        on_failure: str = "error",
        credit: CreditOptions | None = None,
        thinking_prefilled: bool = False,
    ) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta={beta} must be in [0, 1]")
        if scorer is None and beta > 0:
            raise ValueError(f"beta={beta} > 0 needs a PRM scorer")
        self.credit = credit or CreditOptions()
        if scorer is None and self.credit.credit != "sequence":
            raise ValueError(f"credit={self.credit.credit!r} needs a PRM scorer")
        beta_at(beta_schedule, beta, 0, beta_schedule_steps or 1)
        self.outcome = outcome
        self.prm = None
        if scorer is not None:
            self.prm = PRMReward(
                scorer,
                normalisation=normalisation,
                aggregation=aggregation,
                alpha=alpha,
                num_generations=num_generations,
                problem_column=problem_column,
                on_failure=on_failure,
                thinking_prefilled=thinking_prefilled,
            )
        self.beta = beta
        self.beta_schedule = beta_schedule
        self.beta_schedule_steps = beta_schedule_steps
        self.thinking_prefilled = thinking_prefilled
        self.last_credit_inputs: CreditInputs | None = None

    def close(self) -> None:
        """Release what the outcome reward holds (its verification worker processes), if it holds anything."""
        close = getattr(self.outcome, "close", None)
        if close is not None:
            close()

    def current_beta(self, trainer_state: Any = None) -> float:
        """Beta at the trainer's current optimizer step: the schedule at ``trainer_state.global_step`` of
        ``beta_schedule_steps`` (default: ``trainer_state.max_steps``).

        Without ``trainer_state`` (outside a trainer) the step is 0, and a schedule gives its start value whether or
        not its length is known: 0 for ``linear_warmup``, ``beta`` for ``linear_decay``, ``cosine`` and
        ``constant``. Past step 0 a schedule with neither ``beta_schedule_steps`` nor the trainer's ``max_steps``
        raises ``ValueError``.
        """
        if self.beta_schedule == "constant":
            return self.beta
        step = getattr(trainer_state, "global_step", 0) or 0
        total = self.beta_schedule_steps or getattr(trainer_state, "max_steps", None)
        if not total:
            if step > 0:
                raise ValueError(
                    f"beta_schedule={self.beta_schedule!r} at step {step} needs its length: set beta_schedule_steps, "
                    "or pass a trainer_state with max_steps"
                )
            # The start of a schedule does not depend on its length, so step 0 needs none.
            total = 1
        return beta_at(self.beta_schedule, self.beta, step, total)

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        log_metric: Callable[[str, float], None] | None = None,
        log_extra: Callable[[str, list], None] | None = None,
        trainer_state: Any = None,
        **kwargs: Any,
    ) -> list[Score]:
        completion_ids = kwargs.pop("completion_ids", None)
        beta = self.current_beta(trainer_state)
        start = time.perf_counter()
        outcome = self.outcome(completions=completions, log_metric=log_metric, log_extra=log_extra, **kwargs)
        seconds = {"outcome": time.perf_counter() - start}
        if self.prm is None:
            mixed = mix(outcome, [None] * len(outcome), beta)
            batch = None
        else:
            start = time.perf_counter()
            batch = self.prm.score(prompts, completions, **kwargs)
            seconds["prm"] = time.perf_counter() - start
            self.prm.report(batch, log_metric, log_extra)
            # With beta = 0 the PRM must not change a row, not even by turning a None outcome into 0.
            mixed = mix(outcome, batch.normalised if beta > 0 else [None] * len(outcome), beta)
        texts = [completion_text(c) for c in completions]
        if log_metric is not None:
            log_metric("reasonflux/beta", beta)
            for part, value in seconds.items():
                log_metric(f"reasonflux/{part}_seconds", value)
            log_batch(log_metric, batch, outcome, mixed,
                      [completion_shape(text, self.thinking_prefilled) for text in texts])
        self.last_credit_inputs = CreditInputs(
            texts=texts,
            completion_ids=None if completion_ids is None else [list(ids) for ids in completion_ids],
            outcome=list(outcome),
            prm=batch,
            beta=beta,
        )
        return mixed
