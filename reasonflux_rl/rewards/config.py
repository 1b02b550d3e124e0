"""The reward's configuration, parsed the TRL way (``TrlParser``) beside ``GRPOConfig`` and ``ModelConfig``.

Field names carry a ``prm_``/``outcome_`` prefix because they share one command line with ``GRPOConfig``, whose
``beta`` is the KL coefficient; the mixing weight of eq. 12 of the paper is ``prm_beta`` here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.options import CONFIG, OPTIONS, PRMOptions, check_declared, config_fields
from reasonflux_rl.prm.placement.resolve import check_served_kind, resolve_placement
from reasonflux_rl.rewards.credit import CREDITS, STEP_TRANSFORMS, CreditOptions
from reasonflux_rl.rewards.formula import NORMALISATIONS
from reasonflux_rl.rewards.schedule import SCHEDULES

REWARD_MODES: tuple[str, ...] = ("mixed", "separate")
ON_FAILURE: tuple[str, ...] = ("error", "outcome_only")
# `trl grpo` gives a reward function no config of its own: it reads these variables (REASONFLUX_PRM_BETA, ...).
ENV_PREFIX = "REASONFLUX_"


@dataclass
class _MixingArguments:
    """The keys of the mix itself (eq. 12): its weight and schedule, the PRM's path, the normalisation and what a
    failed PRM batch does."""

    prm_beta: float = field(
        default=0.75,
        metadata={"help": "Weight of the normalised PRM score in the mixed reward, in [0, 1]; 0 is outcome only."},
    )
    prm_beta_schedule: str = field(
        default="constant",
        metadata={"help": f"How beta moves over training: one of {SCHEDULES}; schedules end at prm_beta "
                  "(warm-up) or start from it (decays)."},
    )
    prm_beta_schedule_steps: int | None = field(
        default=None, metadata={"help": "Optimizer steps the beta schedule spans (default: the run's max_steps)."}
    )
    reward_mode: str = field(
        default="mixed",
        metadata={"help": "'mixed': one reward function returning the mix; 'separate': outcome and PRM as two TRL "
                  "reward functions with reward_weights [1 - prm_beta, prm_beta] (constant beta only)."},
    )
    prm_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Local directory of the PRM checkpoint (e.g. ReasonFlux-PRM-7B). Required when prm_beta > 0."},
    )
    prm_normalisation: str = field(
        default="none",
        metadata={"help": f"How PRM trajectory scores are normalised before mixing: one of {NORMALISATIONS}."},
    )
    prm_credit: str = field(
        default="sequence",
        metadata={"help": f"How the PRM's step scores reach the tokens: one of {CREDITS}. 'sequence' mixes one score "
                  "per completion (eq. 12); 'suffix_sum' (DeepSeekMath) and 'soft_min' (PURE) give each token the "
                  "normalised scores of the steps at or after it, mixed with the outcome advantage by prm_beta "
                  "(DenseCreditGRPOTrainer, docs/reward.md)."},
    )
    prm_credit_temperature: float = field(
        default=0.1, metadata={"help": "Softmin temperature of prm_credit 'soft_min' (PURE); smaller is closer to min."}
    )
    prm_step_transform: str = field(
        default="none",
        metadata={"help": f"Step-score transform against reward hacking before dense credit: one of {STEP_TRANSFORMS} "
                  "(Gao et al. 2024: 'clip' makes each step min(score - prm_step_clip_threshold, 0), 'delta' the "
                  "difference to the next step's score)."},
    )
    prm_step_clip_threshold: float = field(
        default=0.5, metadata={"help": "Threshold of prm_step_transform 'clip'."}
    )
    prm_on_failure: str = field(
        default="error",
        metadata={"help": f"When the PRM servers cannot score a batch in time: one of {ON_FAILURE}. 'error' stops "
                  "training with the reason; 'outcome_only' trains that batch on the outcome reward alone and counts "
                  "it in reasonflux/prm_unavailable."},
    )


# The PRM's keys (prm_kind, prm_max_steps, ..., thinking_prefilled) are made from their one declaration,
# reasonflux_rl.prm.options.PRMOptions: the same names, types, defaults and help as keys written by hand.
_PRMArguments = dataclasses.make_dataclass(
    "_PRMArguments", config_fields(), bases=(_MixingArguments,), namespace={"__module__": __name__}
)


@dataclass
class RewardArguments(_PRMArguments):
    """How the GRPO reward ``r = (1 - prm_beta) * r_outcome + prm_beta * normalise(r_prm)`` is computed.

    The PRM's keys are those of [`~reasonflux_rl.prm.options.PRMOptions`] (``prm_kind``, ``prm_max_steps``, ...);
    [`prm_options`] reads them back. Bad values raise [`~reasonflux_rl.errors.ConfigError`] (a ``ValueError``)
    naming the key and the allowed values as soon as the dataclass is built, before anything is loaded.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.config import RewardArguments
    >>> RewardArguments(prm_beta=0.0).prm_beta
    0.0
    >>> try:
    ...     RewardArguments(prm_beta=1.5)
    ... except ValueError as err:
    ...     print(err)
    prm_beta=1.5 is out of range: it must be in [0, 1]

    ```
    """

    outcome_require_closed_thinking: bool = field(
        default=True,
        metadata={"help": "A completion that never closes its thinking (cut at the length limit) scores 0."},
    )
    outcome_timeout_seconds: float = field(
        default=5.0, metadata={"help": "Hard per-item time limit of answer verification, in seconds."}
    )
    outcome_num_workers: int | None = field(
        default=None,
        metadata={"help": "Verification worker processes (default: the cores available divided by LOCAL_WORLD_SIZE, the "
                  "ranks on this node; at least 1)."},
    )
    solution_column: str = field(default="solution", metadata={"help": "Dataset column holding the reference answer."})
    problem_column: str = field(
        default="problem",
        metadata={"help": "Dataset column holding the problem text shown to the PRM (default: the prompt's last user "
                  "message when the column is absent)."},
    )

    def __post_init__(self) -> None:
        self._check_mixing()
        self._check_prm()
        self._check_outcome()

    def prm_options(self, num_processes: int = 1) -> PRMOptions:
        """The PRM options of this config, for one of ``num_processes`` ranks: the job-wide
        ``prm_server_max_inflight`` is shared out among them (at least one request each).

        Example:
        ```python
        >>> from reasonflux_rl.rewards.config import RewardArguments
        >>> options = RewardArguments(prm_beta=0, prm_max_steps=4).prm_options(num_processes=8)
        >>> options.max_steps, options.max_inflight, options.batch_tokens, options.thinking_prefilled
        (4, 8, 16384, False)

        ```
        """
        options = PRMOptions.from_config(self)
        # Every rank is a client: the job-wide bound is shared out among them.
        return dataclasses.replace(options, max_inflight=max(1, -(-options.max_inflight // num_processes)))

    def credit_options(self) -> CreditOptions:
        """How step scores reach the tokens (``prm_credit`` and its settings).

        Example:
        ```python
        >>> from reasonflux_rl.rewards.config import RewardArguments
        >>> RewardArguments(prm_name_or_path="prm", prm_credit="soft_min").credit_options().credit
        'soft_min'

        ```
        """
        try:
            return CreditOptions(self.prm_credit, self.prm_credit_temperature, self.prm_step_transform,
                                 self.prm_step_clip_threshold)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def _check_mixing(self) -> None:
        if not 0.0 <= self.prm_beta <= 1.0:
            raise ConfigError(f"prm_beta={self.prm_beta} is out of range: it must be in [0, 1]")
        for key, allowed in (
            ("prm_beta_schedule", SCHEDULES),
            ("reward_mode", REWARD_MODES),
            ("prm_normalisation", NORMALISATIONS),
            ("prm_on_failure", ON_FAILURE),
        ):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}={getattr(self, key)!r} is not allowed: choose one of {list(allowed)}")
        if self.prm_beta > 0 and not self.prm_name_or_path:
            raise ConfigError(
                f"prm_name_or_path is missing but prm_beta={self.prm_beta} > 0: give the PRM checkpoint directory, "
                "or set prm_beta: 0 for the outcome reward alone"
            )
        if self.reward_mode == "separate" and self.prm_beta_schedule != "constant":
            raise ConfigError(
                f"prm_beta_schedule={self.prm_beta_schedule!r} needs reward_mode='mixed': TRL's reward_weights are "
                "fixed for the whole run"
            )
        if self.reward_mode == "separate" and not self.prm_name_or_path:
            raise ConfigError("reward_mode='separate' needs prm_name_or_path (the second reward function is the PRM)")
        if self.credit_options().dense and not (self.prm_name_or_path and self.reward_mode == "mixed"):
            raise ConfigError(
                f"prm_credit={self.prm_credit!r} needs prm_name_or_path and reward_mode 'mixed': the step scores and "
                "the outcome come from one reward function"
            )
        if self.prm_beta_schedule_steps is not None and self.prm_beta_schedule_steps < 1:
            raise ConfigError(f"prm_beta_schedule_steps={self.prm_beta_schedule_steps} must be a positive integer or unset")

    def _check_prm(self) -> None:
        if isinstance(self.prm_server_urls, str):
            self.prm_server_urls = self.prm_server_urls.replace(",", " ").split()
        check_declared({name: getattr(self, o.config.name) for name, o in OPTIONS.items() if o.config}, CONFIG)
        if self.prm_server_urls:
            self._check_servers()
        resolve_placement(self.prm_placement, self.prm_server_urls)
        if self.prm_kind == "token_logit" and not (self.prm_step_tag and self.prm_good_token and self.prm_bad_token):
            raise ConfigError("prm_kind='token_logit' needs prm_step_tag, prm_good_token and prm_bad_token")
        if self.prm_system_prompt == "":
            self.prm_system_prompt = None

    def _check_servers(self) -> None:
        bad = [url for url in self.prm_server_urls if not url.startswith(("http://", "https://"))]
        if bad:
            raise ConfigError(f"prm_server_urls={bad} must be base URLs such as http://prm-node:8001")
        if not self.prm_name_or_path:
            raise ConfigError(
                "prm_server_urls needs prm_name_or_path: a local directory with the served PRM's config.json and "
                "tokenizer (the inputs are formatted and tokenised here)"
            )
        check_served_kind(self.prm_kind, f"prm_kind={self.prm_kind!r}")

    def _check_outcome(self) -> None:
        if self.outcome_num_workers is not None and self.outcome_num_workers < 1:
            raise ConfigError(f"outcome_num_workers={self.outcome_num_workers} must be a positive integer or unset")
        if self.problem_column == "prompt":
            raise ConfigError(
                "problem_column='prompt' is not allowed: TRL passes the prompt separately, not as a column; a "
                "string 'prompt' column is kept as the problem automatically"
            )
        if self.outcome_timeout_seconds <= 0:
            raise ConfigError(f"outcome_timeout_seconds={self.outcome_timeout_seconds} must be positive")


def reward_arguments_from_env(environ: dict[str, str] | None = None) -> RewardArguments:
    """Parse [`RewardArguments`] from ``REASONFLUX_<FIELD>`` environment variables (unset fields keep defaults).

    Example:
    ```python
    >>> from reasonflux_rl.rewards.config import reward_arguments_from_env
    >>> reward_arguments_from_env({"REASONFLUX_PRM_BETA": "0", "REASONFLUX_PRM_AGGREGATION": "min"}).prm_aggregation
    'min'

    ```
    """
    environ = os.environ if environ is None else environ
    argv: list[str] = []
    for f in dataclasses.fields(RewardArguments):
        value = environ.get(ENV_PREFIX + f.name.upper())
        if value is not None:
            # A list (prm_server_urls) is written comma- or space-separated in one variable.
            argv += [f"--{f.name}", *(value.replace(",", " ").split() if "list" in str(f.type) else [value])]
    (args,) = HfArgumentParser(RewardArguments).parse_args_into_dataclasses(args=argv)
    return args
