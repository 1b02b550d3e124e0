"""``reasonflux-rl prm label``: step and trajectory targets for trajectory-response rows, resumably.

``reasonflux-rl prm label --config label.yaml [--key value ...]`` (or flags alone). The input is read as ``score``
reads it (a local file, a ``save_to_disk`` directory, a hub dataset, ``builtin:`` sets; the layouts of
[`~reasonflux_rl.prm_training.fields`]), every row checked before any model loads. The output holds the same rows
with ``step_targets`` (one number in [0, 1] per step, in the scorer's split and order; ``null``: no target) and
``trajectory_target``; a bad row skipped with ``on_bad_row: skip`` is left out and named on stderr.

Rows are labelled a chunk at a time (``chunk_size`` rows) and each chunk is stored (``OUTPUT.labels.jsonl``, a
[`~reasonflux_rl.tools.store.ScoreStore`]) before the next starts: a run that stops loses at most the chunk in
flight, and the same command continues after the stored rows. ``mc`` seeds each chunk with ``seed`` + its number,
so a resumed run labels exactly as an uninterrupted one. Before ``mc`` starts, one line says what it will cost
(prefixes x rollouts); a progress bar counts the continuations. ``reasonflux`` says its judge calls and encoder texts,
seeds each chunk's coherence negatives the same way, and writes each fused score beside the targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.declaration import config_fields
from reasonflux_rl.prm_training.chat_judge import ANSWERS, GRADE_PROMPT, ChatJudge
from reasonflux_rl.prm_training.fields import (
    STEP_TARGETS,
    TRAJECTORY_TARGET,
    LabelledPair,
    TrajectoryFields,
    read_labelled,
)
from reasonflux_rl.prm_training.labels import (
    METHODS,
    TRAJECTORY_TARGETS,
    PolicyCompleter,
    judged_text,
    mc_targets,
    rollout_count,
)
from reasonflux_rl.prm_training.reasonflux_targets import (
    COMPONENTS,
    MATCH_RULES,
    QUALITY_PROMPT,
    LocalJudge,
    PairSteps,
    SentenceEncoder,
    reasonflux_targets,
)
from reasonflux_rl.prm_training.template_target import GUIDED_PROMPT, TEMPLATE_PROMPT, template_targets
from reasonflux_rl.tools.outputs import output_format, sibling, write_rows
from reasonflux_rl.tools.pipeline import fingerprint
from reasonflux_rl.tools.rows import BAD_ROW_POLICIES, BadRow, describe_bad_rows, handle_bad_rows
from reasonflux_rl.tools.sampling import BACKENDS
from reasonflux_rl.tools.store import ScoreStore

# The step split the targets follow: the scorer's, declared once with the PRM options (prm_parts, thinking_prefilled).
SPLIT_KEYS = ("prm_parts", "thinking_prefilled")
# reasonflux also writes each score it fused, one column each (step_alignment, step_quality, step_coherence).
COMPONENT_COLUMNS = tuple(f"step_{name}" for name in COMPONENTS)
# trajectory_target template also writes the template the judge wrote.
TEMPLATE_COLUMN = "trajectory_template"


@dataclass
class _LabelArguments:
    """What is labelled, how, and where the targets go."""

    input: str | None = field(default=None, metadata={"help": "Rows to label: a .jsonl/.json/.parquet/.csv file, a "
                              "save_to_disk directory, a hub dataset or builtin:lab / builtin:smoke_math."})
    output: str | None = field(default=None, metadata={"help": "The labelled rows: .jsonl, .parquet or a directory "
                               "(save_to_disk); OUTPUT.labels.jsonl beside it holds the progress."})
    dataset_config: str | None = field(default=None, metadata={"help": "Config name of a hub dataset (OpenThoughts-"
                                       "114K: metadata)."})
    split: str = field(default="train", metadata={"help": "Split of a hub dataset or DatasetDict."})
    on_bad_row: str = field(default="error", metadata={"help": f"One of {BAD_ROW_POLICIES}: a bad row stops the run "
                            "before any labelling, or is left out and named."})
    problem_field: str | None = field(default=None, metadata={"help": "The problem (default: problem, prompt or "
                                      "question)."})
    completion_field: str | None = field(default=None, metadata={"help": "One text, split at its last </think> "
                                         "(default: completion)."})
    thinking_field: str | None = field(default=None, metadata={"help": "The thinking, with response_field "
                                       "(default: deepseek_reasoning)."})
    response_field: str | None = field(default=None, metadata={"help": "The response (default: deepseek_solution)."})
    steps_field: str | None = field(default=None, metadata={"help": "A list of steps, joined into one response "
                                    "(default: completions, TRL's stepwise layout)."})
    gold_field: str | None = field(default=None, metadata={"help": "The gold answer (default: solution, "
                                   "ground_truth_solution or answer)."})
    method: str = field(default="given", metadata={"help": f"How step targets are made: one of {METHODS} "
                        "(reasonflux: the paper's alignment, quality and coherence, fused)."})
    step_targets_field: str | None = field(default=None, metadata={"help": "given: the column of step targets "
                                           "(default: step_targets or labels)."})
    trajectory_target: str = field(default="outcome", metadata={"help": f"One of {TRAJECTORY_TARGETS}: the row's "
                                   "own outcome against the gold answer, trajectory_target_field's value, none, or "
                                   "the paper's template-guided target (the judge writes the reasoning's template, "
                                   "policy answers the problem template_rollouts times with it: the fraction right)."})
    template_rollouts: int = field(default=8, metadata={"help": "trajectory_target template: the policy's answers "
                                   "per row."})
    template_prompt: str = field(default=str(TEMPLATE_PROMPT), metadata={"help": "trajectory_target template: the "
                                 "judge's prompt, a file with {problem}, {thinking} and {response}."})
    template_guided_prompt: str = field(default=str(GUIDED_PROMPT), metadata={"help": "trajectory_target template: "
                                        "the policy's problem text, a file with {problem} and {template}."})
    template_max_tokens: int = field(default=512, metadata={"help": "trajectory_target template: longest template, "
                                     "in tokens."})
    trajectory_target_field: str = field(default=TRAJECTORY_TARGET, metadata={"help": "trajectory_target: given: "
                                         "its column."})
    policy: str | None = field(default=None, metadata={"help": "mc: the completer policy; trajectory_target template: "
                               "the policy answering with the template (a local checkpoint). Its sampling: the keys "
                               "backend to prompts_per_batch."})
    backend: str = field(default="auto", metadata={"help": f"mc: one of {BACKENDS} (auto: vLLM when installed)."})
    rollouts: int = field(default=8, metadata={"help": "mc: continuations per step prefix (Math-Shepherd: 8)."})
    temperature: float = field(default=1.0, metadata={"help": "mc: sampling temperature of the continuations."})
    top_p: float = field(default=1.0, metadata={"help": "mc: nucleus sampling of the continuations."})
    max_new_tokens: int = field(default=1024, metadata={"help": "mc: longest continuation, in tokens."})
    hard: bool = field(default=False, metadata={"help": "mc: 1 when any continuation is right (Math-Shepherd's hard "
                       "label), else the fraction right."})
    prompts_per_batch: int = field(default=16, metadata={"help": "mc, transformers: prefixes per generate call."})
    encoder: str | None = field(default=None, metadata={"help": "reasonflux: the sentence encoder of alignment and "
                                "coherence (a local transformers checkpoint; mean-pooled last hidden states)."})
    judge: str | None = field(default=None, metadata={"help": "reasonflux: the judge of each step's quality, a local "
                              "causal LM: P(judge_yes) against P(judge_no) as its first answer token (or judge_urls)."})
    judge_urls: list[str] | None = field(default=None, metadata={"help": "reasonflux: OpenAI-compatible chat servers "
                                         "of the judge instead (vllm serve, a hosted API), base URLs."})
    judge_model: str | None = field(default=None, metadata={"help": "reasonflux: the judge servers' model name "
                                    "(default: the one model they serve)."})
    judge_answer: str = field(default="auto", metadata={"help": f"reasonflux, judge_urls: one of {ANSWERS}: the "
                              "first answer token's logprobs, a parsed 0-10 grade (judge_grade_prompt), or logprobs "
                              "until the servers give none."})
    judge_grade_prompt: str = field(default=str(GRADE_PROMPT), metadata={"help": "reasonflux, judge_urls: the prompt "
                                    "asking a 0-10 grade, with the placeholders of judge_prompt."})
    judge_max_inflight: int = field(default=8, metadata={"help": "reasonflux, judge_urls: requests in flight at once."})
    judge_timeout_seconds: float = field(default=120.0, metadata={"help": "reasonflux, judge_urls: seconds one "
                                         "request may take."})
    judge_retries: int = field(default=3, metadata={"help": "reasonflux, judge_urls: further attempts after a failed "
                               "request (or an answer without a grade)."})
    judge_deadline_seconds: float = field(default=3600.0, metadata={"help": "reasonflux, judge_urls: seconds the "
                                          "judge may take for one chunk in all."})
    judge_prompt: str = field(default=str(QUALITY_PROMPT), metadata={"help": "reasonflux: the judge's prompt, a "
                              "file with {problem}, {before}, {step} and {response}."})
    judge_yes: str = field(default="Yes", metadata={"help": "reasonflux: the judge's answer for a right step (one "
                           "token)."})
    judge_no: str = field(default="No", metadata={"help": "reasonflux: the judge's answer for a wrong step (one "
                          "token)."})
    match: str = field(default="position", metadata={"help": f"reasonflux: one of {MATCH_RULES}: thinking step t "
                       "with response step t, extra thinking steps merged into the step before (position), or each "
                       "step with the most similar step of the other part (best)."})
    coherence_temperature: float = field(default=0.1, metadata={"help": "reasonflux: temperature of the contrastive "
                                         "coherence score."})
    coherence_negatives: int = field(default=8, metadata={"help": "reasonflux: negatives per step of the coherence "
                                     "score, drawn from other rows of the chunk."})
    batch_size: int = field(default=16, metadata={"help": "reasonflux: texts per forward of the encoder and the "
                            "judge."})
    device: str | None = field(default=None, metadata={"help": "mc, reasonflux: where the completer (the encoder, "
                               "the judge) runs (default: cuda if available)."})
    seed: int = field(default=0, metadata={"help": "mc: seed of the rollouts; reasonflux: of the coherence "
                       "negatives (chunk k is seeded seed + k)."})
    chunk_size: int = field(default=64, metadata={"help": "Rows labelled and stored at a time."})
    outcome_num_workers: int | None = field(default=None, metadata={"help": "Answer-verification worker processes."})
    outcome_timeout_seconds: float = field(default=5.0, metadata={"help": "Time limit of one answer verification."})
    no_progress: bool = field(default=False, metadata={"help": "No progress bar."})


_SPLIT_FIELDS = [f for f in config_fields() if f[0] in SPLIT_KEYS]
_Base = dataclasses.make_dataclass("_Base", _SPLIT_FIELDS, bases=(_LabelArguments,),
                                   namespace={"__module__": __name__})


@dataclass
class PRMLabelArguments(_Base):
    """The keys of ``prm label``; ``prm_parts`` and ``thinking_prefilled`` say which steps get targets, as the PRM
    will read them (the same keys as ``train``'s).

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.label_command import PRMLabelArguments
    >>> PRMLabelArguments(input="in.jsonl", output="out.jsonl", method="mc", policy="p").rollouts
    8
    >>> try:
    ...     PRMLabelArguments(input="in.jsonl", output="out.jsonl", method="mc")
    ... except ValueError as err:
    ...     print(err)
    method='mc' needs policy: the completer whose continuations judge each step prefix

    ```
    """

    def __post_init__(self) -> None:
        for key, allowed in (("method", METHODS), ("trajectory_target", TRAJECTORY_TARGETS),
                             ("on_bad_row", BAD_ROW_POLICIES), ("backend", BACKENDS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}={getattr(self, key)!r} is not allowed: choose one of {list(allowed)}")
        for key in ("input", "output"):
            if not getattr(self, key):
                raise ConfigError(f"{key} is required")
        output_format(self.output)
        if self.method == "mc" and not self.policy:
            raise ConfigError("method='mc' needs policy: the completer whose continuations judge each step prefix")
        if self.trajectory_target == "template":
            if not self.policy:
                raise ConfigError("trajectory_target='template' needs policy: the policy that answers with the "
                                  "template")
            if bool(self.judge) == bool(self.judge_urls):
                raise ConfigError("trajectory_target='template' needs one judge to write the templates: judge (a "
                                  "local checkpoint) or judge_urls (chat servers)")
            for key in ("template_prompt", "template_guided_prompt"):
                if not Path(getattr(self, key)).is_file():
                    raise ConfigError(f"{key}={getattr(self, key)!r} is not a file")
        if self.method == "reasonflux":
            if not self.encoder:
                raise ConfigError("method='reasonflux' needs encoder: the sentence encoder of alignment and coherence")
            if bool(self.judge) == bool(self.judge_urls):
                raise ConfigError("method='reasonflux' needs one judge of each step's quality: judge (a local "
                                  "checkpoint) or judge_urls (chat servers)")
            if self.judge_answer not in ANSWERS:
                raise ConfigError(f"judge_answer={self.judge_answer!r} is not allowed: choose one of {list(ANSWERS)}")
            if self.match not in MATCH_RULES:
                raise ConfigError(f"match={self.match!r} is not allowed: choose one of {list(MATCH_RULES)}")
            for key in ("judge_prompt", "judge_grade_prompt"):
                if not Path(getattr(self, key)).is_file():
                    raise ConfigError(f"{key}={getattr(self, key)!r} is not a file")
            if not self.coherence_temperature > 0 or self.coherence_negatives < 0:
                raise ConfigError(f"coherence_temperature={self.coherence_temperature} must be > 0 and "
                                  f"coherence_negatives={self.coherence_negatives} >= 0")
        for key in ("rollouts", "max_new_tokens", "prompts_per_batch", "chunk_size", "batch_size",
                    "template_rollouts", "template_max_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)} must be a positive integer")
        if not self.temperature > 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"temperature={self.temperature} must be > 0 and top_p={self.top_p} in (0, 1]")
        self.thinking_prefilled = bool(self.thinking_prefilled)

    @property
    def named_fields(self) -> dict[str, str | None]:
        """The fields named by the keys, for [`~reasonflux_rl.prm_training.fields.detect_fields`]."""
        return {
            "problem": self.problem_field, "completion": self.completion_field, "thinking": self.thinking_field,
            "response": self.response_field, "steps": self.steps_field, "gold": self.gold_field,
            "step_targets": (self.step_targets_field or "auto") if self.method == "given" else None,
            "trajectory_target": self.trajectory_target_field if self.trajectory_target == "given" else None,
        }

    @property
    def component_columns(self) -> tuple[str, ...]:
        """The columns written beside the targets: the scores ``reasonflux`` fuses, the template of ``template``."""
        return ((COMPONENT_COLUMNS if self.method == "reasonflux" else ())
                + ((TEMPLATE_COLUMN,) if self.trajectory_target == "template" else ()))

    @property
    def samples_policy(self) -> bool:
        """``mc`` and the ``template`` target sample the policy."""
        return self.method == "mc" or self.trajectory_target == "template"

    @property
    def uses_judge(self) -> bool:
        """``reasonflux`` rates steps with the judge, the ``template`` target has it write templates."""
        return self.method == "reasonflux" or self.trajectory_target == "template"

    @property
    def judge_name(self) -> str:
        """The judge as the cost line names it: its checkpoint, or its servers."""
        return self.judge or ", ".join(self.judge_urls or [])

    @property
    def needs_gold(self) -> bool:
        """``mc`` and the ``outcome`` trajectory target judge answers against the gold."""
        return self.method == "mc" or self.trajectory_target in ("outcome", "template")

    def settings(self, fields: TrajectoryFields) -> dict[str, Any]:
        """What changes the targets, for the store: a resumed run must use the same."""
        keys = ["method", "trajectory_target", "prm_parts", "thinking_prefilled"]
        prompts: list[str] = []
        if self.samples_policy or self.uses_judge:
            keys += ["seed", "chunk_size"]
        if self.samples_policy:
            keys += ["backend", "temperature", "top_p", "max_new_tokens"]
        if self.method == "mc":
            keys += ["rollouts", "hard"]
        models = {"policy": self.policy}
        if self.uses_judge:
            keys += ["judge_urls", "judge_model"]
            models["judge"] = self.judge
        if self.method == "reasonflux":
            keys += ["judge_yes", "judge_no", "judge_answer", "match", "coherence_temperature", "coherence_negatives"]
            models["encoder"] = self.encoder
            prompts += ["judge_prompt", "judge_grade_prompt"]
        if self.trajectory_target == "template":
            keys += ["template_rollouts", "template_max_tokens"]
            prompts += ["template_prompt", "template_guided_prompt"]
        paths = {key: str(Path(path).resolve()) if path else None for key, path in models.items()}
        paths.update({f"{key}_text": Path(getattr(self, key)).read_text() for key in prompts})
        return {**{key: getattr(self, key) for key in keys}, **paths, "fields": dataclasses.asdict(fields)}


def parse_arguments(argv: Sequence[str]) -> PRMLabelArguments:
    """The keys of ``--config FILE.yaml`` and the flags, the TRL way (``TrlParser``: flags override the file).

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.label_command import parse_arguments
    >>> args = parse_arguments(["--input", "in.jsonl", "--output", "out.jsonl", "--prm_parts", "response"])
    >>> args.prm_parts, args.method, args.trajectory_target
    ('response', 'given', 'outcome')

    ```
    """
    from trl import TrlParser

    parser = TrlParser((PRMLabelArguments,), prog="reasonflux-rl prm label",
                       description="Step and trajectory targets for trajectory-response rows; resumable.")
    (args,) = parser.parse_args_and_config(list(argv))
    return args


@dataclass
class _Labelling:
    """A run's input, its judge of answers, its store and what is left to label."""

    args: PRMLabelArguments
    pairs: list[LabelledPair]
    bad: list[BadRow]
    table: Any
    outcomes: dict[int, float | None]
    store: ScoreStore


def _judge(args: PRMLabelArguments) -> Any:
    from reasonflux_rl.rewards.outcome import OutcomeReward

    return OutcomeReward(num_workers=args.outcome_num_workers, timeout_seconds=args.outcome_timeout_seconds,
                         thinking_prefilled=args.thinking_prefilled)


def _outcomes(args: PRMLabelArguments, pairs: Sequence[LabelledPair], judge: Any) -> dict[int, float | None]:
    """Each row's own outcome against its gold (``None``: the gold cannot be parsed), when a target needs it."""
    if not args.needs_gold:
        return {}
    scores = judge.score([judged_text(p, p.completion, args.thinking_prefilled) for p in pairs],
                         [p.gold for p in pairs])
    return {pair.row: score for pair, score in zip(pairs, scores)}


def _open(args: PRMLabelArguments, judge: Any) -> _Labelling:
    """Read and check every row, judge the rows' own answers and open the store: everything before the models."""
    fields_args = argparse.Namespace(input=args.input, dataset_config=args.dataset_config, split=args.split,
                                     on_bad_row=args.on_bad_row)
    rows, fields = read_labelled(fields_args, args.named_fields, "prm label", parts=args.prm_parts,
                                 thinking_prefilled=args.thinking_prefilled, need_gold=args.needs_gold,
                                 output_columns=[STEP_TARGETS, TRAJECTORY_TARGET, *args.component_columns])
    outcomes = _outcomes(args, rows.items, judge)
    unparseable = [rows.table.bad_row(row, "the gold answer cannot be parsed by math-verify")
                   for row, score in outcomes.items() if score is None]
    handle_bad_rows(unparseable, args.on_bad_row, "before labelling", "prm label")
    pairs = [p for p in rows.items if outcomes.get(p.row, 0.0) is not None]
    bad = sorted([*rows.bad, *unparseable], key=lambda b: b.row)
    store = ScoreStore(sibling(args.output, ".labels.jsonl"), args.settings(fields), _fingerprint(pairs, bad))
    return _Labelling(args, pairs, bad, rows.table, outcomes, store)


def _fingerprint(pairs: Sequence[LabelledPair], bad: Sequence[BadRow]) -> str:
    """The store's fingerprint of the input: the texts (as ``score``'s), and the golds and given targets the labels
    are made from, so an input edited in place is refused."""
    answers = json.dumps([[p.gold, p.step_targets, p.trajectory_target] for p in pairs])
    return hashlib.sha256((fingerprint([*pairs, *bad]) + answers).encode()).hexdigest()


def _cost(run: _Labelling) -> str:
    args = run.args
    steps = sum(len(p.steps) for p in run.pairs)
    line = f"prm label: {len(run.pairs)} rows, {steps} steps ({len(run.bad)} bad rows left out); method {args.method}"
    if args.method == "mc":
        prefixes = steps - len(run.pairs)
        line += (f": {prefixes} step prefixes x {args.rollouts} rollouts = {prefixes * args.rollouts} continuations "
                 f"of {args.policy} (at most {args.max_new_tokens} tokens each; each row's last step is its own "
                 "outcome)")
    if args.method == "reasonflux":
        split = [PairSteps.of(p, args.thinking_prefilled) for p in run.pairs]
        texts = sum(len(s.thinking) + len(s.response) for s in split)
        line += (f": {steps} judge calls of {args.judge_name}, {texts} step texts (and the merged blocks) through "
                 f"{args.encoder}")
    if args.trajectory_target == "template":
        line += (f"; trajectory target template: {len(run.pairs)} templates written by "
                 f"{args.judge_name}, {len(run.pairs)} x {args.template_rollouts} = "
                 f"{len(run.pairs) * args.template_rollouts} answers of {args.policy}")
    return line


def _model_keys(args: PRMLabelArguments) -> list[str]:
    """The keys naming the local models the run loads."""
    keys = ({"policy"} if args.samples_policy else set()) | ({"encoder"} if args.method == "reasonflux" else set())
    if args.judge and args.uses_judge:
        keys.add("judge")
    return sorted(keys)


def _check_models(args: PRMLabelArguments, keys: Sequence[str]) -> None:
    """A clear error unless each model of ``keys`` is a local checkpoint directory: before any long work."""
    for key in keys:
        path = Path(getattr(args, key))
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ConfigError(f"{key} {getattr(args, key)!r} is not a local checkpoint directory with a config.json")


def _quality_judge(args: PRMLabelArguments) -> Any:
    """The judge of step quality the keys name: a local causal LM, or the chat servers of ``judge_urls``."""
    if args.judge:
        judge = LocalJudge(args.judge, prompt=args.judge_prompt, yes=args.judge_yes, no=args.judge_no,
                           device=args.device, batch_size=args.batch_size)
        if args.method == "reasonflux":
            judge.answer_ids  # noqa: B018 - refuses answers of several tokens before any labelling
        return judge
    return ChatJudge(args.judge_urls, args.judge_model, prompt=args.judge_prompt, grade_prompt=args.judge_grade_prompt,
                     yes=args.judge_yes, no=args.judge_no, answer=args.judge_answer,
                     max_inflight=args.judge_max_inflight, timeout=args.judge_timeout_seconds,
                     retries=args.judge_retries, deadline=args.judge_deadline_seconds)


@dataclass
class _Models:
    """What a run loads: the policy sampler (``mc``'s completer, ``template``'s answers), the sentence encoder, the
    judge (of step quality; the writer of templates)."""

    sampler: Any = None
    encoder: Any = None
    judge: Any = None


def _load_models(args: PRMLabelArguments) -> _Models:
    from reasonflux_rl.tools.sampling import load_sampler

    _check_models(args, [key for key in _model_keys(args) if key != "policy"])  # load_sampler checks the policy
    models = _Models()
    if args.samples_policy:
        models.sampler = load_sampler(args.policy, backend=args.backend, temperature=args.temperature,
                                      top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                                      prompts_per_batch=args.prompts_per_batch, seed=args.seed, device=args.device)
    if args.method == "reasonflux":
        models.encoder = SentenceEncoder(args.encoder, device=args.device, batch_size=args.batch_size)
    if args.uses_judge:
        models.judge = _quality_judge(args)
    return models


def _chunk_targets(run: _Labelling, chunk: Sequence[LabelledPair], number: int, models: _Models, judge: Any,
                   on_rollouts: Any = None) -> list[dict[str, Any]]:
    """The stored records of one chunk of rows; ``judge``: the outcome reward; ``on_rollouts(k)``: ``mc`` did ``k``
    more continuations."""
    args = run.args
    if args.method == "mc":
        completer = PolicyCompleter(models.sampler, seed=args.seed + number, on_batch=on_rollouts)
        steps = mc_targets(chunk, [run.outcomes[p.row] for p in chunk], completer, judge.score,
                           rollouts=args.rollouts, hard=args.hard, parts=args.prm_parts,
                           thinking_prefilled=args.thinking_prefilled)
    components: list[dict[str, Any]] = [{} for _ in chunk]
    if args.method == "reasonflux":
        rows = reasonflux_targets([PairSteps.of(p, args.thinking_prefilled) for p in chunk], models.encoder,
                                  models.judge,
                                  parts=args.prm_parts, match=args.match, temperature=args.coherence_temperature,
                                  negatives=args.coherence_negatives, seed=args.seed + number)
        steps = [row.fused for row in rows]
        components = [{f"step_{name}": getattr(row, name) for name in COMPONENTS} for row in rows]
    elif args.method == "given":
        steps = [list(p.step_targets) for p in chunk]  # type: ignore[arg-type]
    finals: list[float | None] = [{"outcome": run.outcomes.get(p.row), "given": p.trajectory_target}.get(
        args.trajectory_target) for p in chunk]
    if args.trajectory_target == "template":
        finals, templates = template_targets(
            chunk, models.judge, models.sampler, judge.score, rollouts=args.template_rollouts,
            template_prompt=args.template_prompt, guided_prompt=args.template_guided_prompt,
            max_template_tokens=args.template_max_tokens, seed=args.seed + number,
            thinking_prefilled=args.thinking_prefilled)
        for extra, template in zip(components, templates):
            extra[TEMPLATE_COLUMN] = template
    records = []
    for pair, targets, final, extra in zip(chunk, steps, finals, components):
        if len(targets) != len(pair.steps):
            raise RuntimeError(f"row {pair.row}: {len(targets)} targets for its {len(pair.steps)} steps")
        records.append({"index": pair.row, STEP_TARGETS: targets, TRAJECTORY_TARGET: final, **extra})
    return records


def label(run: _Labelling, judge: Any) -> dict[int, dict[str, Any]]:
    """Label every row not stored yet, a chunk at a time, each chunk stored before the next; the records of all."""
    from tqdm.auto import tqdm

    args = run.args
    done = run.store.load()
    chunks = [run.pairs[k : k + args.chunk_size] for k in range(0, len(run.pairs), args.chunk_size)]
    left = [(number, chunk) for number, chunk in enumerate(chunks) if any(p.row not in done for p in chunk)]
    mc = args.method == "mc"
    total = rollout_count(run.pairs, args.rollouts) if mc else len(run.pairs)
    left_count = sum(rollout_count(c, args.rollouts) if mc else len(c) for _, c in left)
    with tqdm(total=total, initial=total - left_count, desc="prm label", unit="rollout" if mc else "row",
              disable=args.no_progress) as bar:
        models = _load_models(args) if left else _Models()
        for number, chunk in left:
            records = _chunk_targets(run, chunk, number, models, judge, bar.update)
            run.store.append([r for r in records if r["index"] not in done])
            done.update((r["index"], r) for r in records)
            if not mc:
                bar.update(len(chunk))
    return done


def write_output(run: _Labelling, records: dict[int, dict[str, Any]]) -> Path:
    """The input rows that were labelled, each with its targets, written atomically to the output."""
    rows = []
    for pair in run.pairs:
        row = dict(run.table.rows[pair.row])
        record = records[pair.row]
        for column in (STEP_TARGETS, TRAJECTORY_TARGET, *run.args.component_columns):
            row[column] = record[column]
        rows.append(row)
    return write_rows(rows, run.args.output)


def summary(run: _Labelling, records: dict[int, dict[str, Any]], seconds: float) -> str:
    """One line: how many rows and steps got targets, their means, and where they went.

    Example:
    ```python
    >>> from types import SimpleNamespace
    >>> from reasonflux_rl.prm_training.label_command import summary
    >>> run = SimpleNamespace(pairs=[SimpleNamespace(row=0)], bad=[], args=SimpleNamespace(output="out.jsonl"),
    ...                       store=SimpleNamespace(loaded=0))
    >>> summary(run, {0: {"step_targets": [1.0, 0.5], "trajectory_target": 1.0}}, 3.2)
    'labelled 1 rows (2 steps, mean step target 0.75; trajectory target 1.00; 0 bad) in 3.2 s; output: out.jsonl'

    ```
    """
    steps = [t for p in run.pairs for t in records[p.row][STEP_TARGETS] if t is not None]
    finals = [records[p.row][TRAJECTORY_TARGET] for p in run.pairs if records[p.row][TRAJECTORY_TARGET] is not None]
    mean = f"mean step target {sum(steps) / len(steps):.2f}" if steps else "no step target"
    final = f"trajectory target {sum(finals) / len(finals):.2f}" if finals else "no trajectory target"
    resumed = f", {run.store.loaded} stored before" if run.store.loaded else ""
    return (f"labelled {len(run.pairs)} rows ({len(steps)} steps, {mean}; {final}; {len(run.bad)} bad{resumed}) in "
            f"{seconds:.1f} s; output: {run.args.output}")


def main(argv: Sequence[str]) -> None:
    """Run ``reasonflux-rl prm label`` with ``argv``: read and check the rows, say the cost, label them resumably,
    write the labelled rows, print a one-line summary. ``--dry-run`` stops after the cost (and a look at the
    checkpoints of the models the method loads), labelling nothing.

    Example:
    ```python
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.prm_training.label_command import main
    >>> d = Path(tempfile.mkdtemp())
    >>> row = {"problem": "1+1?", "completion": "Add.\\n</think>\\n\\n\\\\boxed{2}", "solution": "2", "labels": [1, 1]}
    >>> _ = (d / "in.jsonl").write_text(json.dumps(row) + "\\n")
    >>> main(["--input", str(d / "in.jsonl"), "--output", str(d / "out.jsonl"), "--no_progress", "true",
    ...       "--outcome_num_workers", "1"])  # doctest: +ELLIPSIS
    prm label: 1 rows, 2 steps (0 bad rows left out); method given
    labelled 1 rows (2 steps, mean step target 1.00; trajectory target 1.00; 0 bad) in ... s; output: .../out.jsonl
    >>> labelled = json.loads((d / "out.jsonl").read_text())
    >>> labelled["step_targets"], labelled["trajectory_target"]
    ([1.0, 1.0], 1.0)

    ```
    """
    started = time.monotonic()
    argv = list(argv)
    dry_run = "--dry-run" in argv
    args = parse_arguments([a for a in argv if a != "--dry-run"])
    with _judge(args) as judge:
        run = _open(args, judge)
        print(_cost(run), flush=True)
        if dry_run:
            _check_models(args, _model_keys(args))
            print("prm label: dry run: the rows and keys are good; nothing was labelled")
            return
        try:
            records = label(run, judge)
        except BaseException:
            if run.store.loaded is not None and not run.store.discard_if_empty():
                print(f"reasonflux-rl prm label: {run.store.stored} of {len(run.pairs)} rows are stored in "
                      f"{run.store.path}; run the same command again to resume after them", file=sys.stderr)
            raise
    if run.bad and args.on_bad_row == "skip":
        print(f"reasonflux-rl prm label: left out {describe_bad_rows(run.bad)}", file=sys.stderr)
    write_output(run, records)
    print(summary(run, records, time.monotonic() - started))
