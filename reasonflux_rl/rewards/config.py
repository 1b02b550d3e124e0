"""The reward's configuration, parsed the TRL way (``TrlParser``) beside ``GRPOConfig`` and ``ModelConfig``.

Field names carry a ``prm_``/``outcome_`` prefix because they share one command line with ``GRPOConfig``, whose
``beta`` is the KL coefficient; the mixing weight of eq. 12 of the paper is ``prm_beta`` here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.checkpoint import KINDS
from reasonflux_rl.prm.engine.format import DEFAULT_SYSTEM_PROMPT, PARTS
from reasonflux_rl.prm.engine.truncation import TRUNCATIONS
from reasonflux_rl.prm.placement.resolve import PLACEMENTS, resolve_placement
from reasonflux_rl.rewards.formula import AGGREGATIONS, NORMALISATIONS
from reasonflux_rl.rewards.schedule import SCHEDULES

REWARD_MODES: tuple[str, ...] = ("mixed", "separate")
ON_FAILURE: tuple[str, ...] = ("error", "outcome_only")
# `trl grpo` gives a reward function no config of its own: it reads these variables (REASONFLUX_PRM_BETA, ...).
ENV_PREFIX = "REASONFLUX_"


@dataclass
class RewardArguments:
    """How the GRPO reward ``r = (1 - prm_beta) * r_outcome + prm_beta * normalise(r_prm)`` is computed.

    Bad values raise [`~reasonflux_rl.errors.ConfigError`] (a ``ValueError``) naming the key and the allowed values
    as soon as the dataclass is built, before anything is loaded.

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
    prm_placement: str = field(
        default="auto",
        metadata={"help": f"Where the PRM runs: one of {PLACEMENTS}. 'replica': whole on every rank; 'zero3': "
                  "partitioned with DeepSpeed ZeRO-3 beside a ZeRO-3 policy (launch with a ZeRO-3 config), ranks "
                  "scoring in lockstep; 'server': on the vLLM servers of prm_server_urls; 'auto': 'server' when "
                  "prm_server_urls is set, else 'replica'."},
    )
    prm_server_urls: list[str] | None = field(
        default=None,
        metadata={"help": "Score with the PRM served by vLLM at these base URLs (e.g. http://prm-node:8001) instead "
                  "of a replica on every rank; prm_name_or_path then needs only the PRM's config.json and tokenizer."},
    )
    prm_server_model: str | None = field(
        default=None, metadata={"help": "Served model name of the PRM servers (default: the one model they serve)."}
    )
    prm_server_max_inflight: int = field(
        default=64,
        metadata={"help": "PRM requests in flight from the whole job; each of N ranks keeps at most 1/N of them."},
    )
    prm_server_timeout_seconds: float = field(
        default=120.0, metadata={"help": "Seconds one PRM request may take before it is retried elsewhere."}
    )
    prm_server_retries: int = field(
        default=3, metadata={"help": "Retries of a failed PRM request (connection errors, timeouts, HTTP 5xx)."}
    )
    prm_server_deadline_seconds: float = field(
        default=600.0, metadata={"help": "Seconds the PRM scoring of one batch may take in all, retries included."}
    )
    prm_on_failure: str = field(
        default="error",
        metadata={"help": f"When the PRM servers cannot score a batch in time: one of {ON_FAILURE}. 'error' stops "
                  "training with the reason; 'outcome_only' trains that batch on the outcome reward alone and counts "
                  "it in reasonflux/prm_unavailable."},
    )
    prm_kind: str = field(
        default="auto",
        metadata={"help": f"PRM kind: auto (step classifier or value head, told by their weights) or one of {KINDS}; "
                  "token_logit must be named, with prm_step_tag, prm_good_token and prm_bad_token."},
    )
    prm_step_tag: str | None = field(default=None, metadata={"help": "Step tag token of a token_logit PRM."})
    prm_good_token: str | None = field(default=None, metadata={"help": "'Good step' token of a token_logit PRM."})
    prm_bad_token: str | None = field(default=None, metadata={"help": "'Bad step' token of a token_logit PRM."})
    prm_truncation: str = field(
        default="drop_oldest",
        metadata={"help": f"What happens to steps past prm_max_length: one of {TRUNCATIONS}."},
    )
    prm_window_overlap: int | None = field(
        default=None, metadata={"help": "Context tokens a window repeats (truncation: windows); default a quarter."}
    )
    prm_alpha: float | None = field(
        default=None,
        metadata={"help": "Weight of the trajectory-level score in eq. 11: r = aggregate(steps) + alpha * r_traj."},
    )
    prm_trajectory_name_or_path: str | None = field(
        default=None, metadata={"help": "A value-head PRM (ReasonFlux-PRM-1.5B) giving the trajectory score for alpha."}
    )
    prm_normalisation: str = field(
        default="none",
        metadata={"help": f"How PRM trajectory scores are normalised before mixing: one of {NORMALISATIONS}."},
    )
    prm_aggregation: str = field(
        default="mean",
        metadata={"help": f"How step scores become one trajectory score: one of {AGGREGATIONS}."},
    )
    prm_parts: str = field(
        default="both",
        metadata={"help": f"Which part of the completion the PRM scores: one of {PARTS}."},
    )
    prm_max_steps: int | None = field(
        default=None, metadata={"help": "Cap on steps per completion; steps past it merge into the last one."}
    )
    prm_max_length: int | None = field(
        default=None,
        metadata={"help": "PRM context in tokens (default: the checkpoint's max_position_embeddings). Oldest steps "
                  "that do not fit are dropped, never scored."},
    )
    prm_batch_tokens: int = field(
        default=16384, metadata={"help": "Padded tokens per PRM forward pass (length-sorted batches)."}
    )
    prm_dtype: str = field(default="auto", metadata={"help": "PRM dtype: auto (bf16 on GPU, fp32 on CPU) or a name."})
    prm_system_prompt: str | None = field(
        default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "System message of the PRM input; empty string for none."}
    )
    thinking_prefilled: bool | None = field(
        default=None,
        metadata={"help": "Whether the policy's chat template opens the thinking in the prompt (DeepSeek-R1-Distill "
                  "ends it with <think>), so a completion without </think> is cut-off thinking. Default: read from "
                  "the policy's chat template by `reasonflux-rl train`; false elsewhere."},
    )
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
        if not 0.0 <= self.prm_beta <= 1.0:
            raise ConfigError(f"prm_beta={self.prm_beta} is out of range: it must be in [0, 1]")
        for key, allowed in (
            ("prm_beta_schedule", SCHEDULES),
            ("reward_mode", REWARD_MODES),
            ("prm_normalisation", NORMALISATIONS),
            ("prm_kind", ("auto", *KINDS)),
            ("prm_truncation", TRUNCATIONS),
            ("prm_aggregation", AGGREGATIONS),
            ("prm_parts", PARTS),
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
        if self.prm_server_urls:
            if isinstance(self.prm_server_urls, str):
                self.prm_server_urls = self.prm_server_urls.replace(",", " ").split()
            bad = [url for url in self.prm_server_urls if not url.startswith(("http://", "https://"))]
            if bad:
                raise ConfigError(f"prm_server_urls={bad} must be base URLs such as http://prm-node:8001")
            if not self.prm_name_or_path:
                raise ConfigError(
                    "prm_server_urls needs prm_name_or_path: a local directory with the served PRM's config.json and "
                    "tokenizer (the inputs are formatted and tokenised here)"
                )
            if self.prm_kind not in ("auto", "step_classifier"):
                raise ConfigError(
                    f"prm_kind={self.prm_kind!r} cannot be served remotely: prm_server_urls serve step classifiers"
                )
        resolve_placement(self.prm_placement, self.prm_server_urls)
        for key in ("prm_server_timeout_seconds", "prm_server_deadline_seconds"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key}={getattr(self, key)} must be positive")
        if self.prm_server_retries < 0:
            raise ConfigError(f"prm_server_retries={self.prm_server_retries} must be 0 or more")
        for key in ("prm_max_steps", "prm_max_length", "prm_beta_schedule_steps", "outcome_num_workers",
                    "prm_server_max_inflight"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key}={value} must be a positive integer or unset")
        if self.prm_kind == "token_logit" and not (self.prm_step_tag and self.prm_good_token and self.prm_bad_token):
            raise ConfigError("prm_kind='token_logit' needs prm_step_tag, prm_good_token and prm_bad_token")
        if self.prm_alpha is not None and self.prm_alpha < 0:
            raise ConfigError(f"prm_alpha={self.prm_alpha} must be >= 0")
        if self.prm_window_overlap is not None and self.prm_window_overlap < 1:
            raise ConfigError(f"prm_window_overlap={self.prm_window_overlap} must be a positive integer")
        if self.problem_column == "prompt":
            raise ConfigError(
                "problem_column='prompt' is not allowed: TRL passes the prompt separately, not as a column; a "
                "string 'prompt' column is kept as the problem automatically"
            )
        if self.prm_batch_tokens < 1:
            raise ConfigError(f"prm_batch_tokens={self.prm_batch_tokens} must be a positive integer")
        if self.outcome_timeout_seconds <= 0:
            raise ConfigError(f"outcome_timeout_seconds={self.outcome_timeout_seconds} must be positive")
        if self.prm_dtype != "auto" and not isinstance(getattr(torch, self.prm_dtype, None), torch.dtype):
            raise ConfigError(f"prm_dtype={self.prm_dtype!r} is not allowed: use 'auto' or a torch dtype name")
        if self.prm_system_prompt == "":
            self.prm_system_prompt = None


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
