"""One declaration of each PRM option (reasonflux_rl.prm.declaration.PRMOptions) drives the three surfaces: the
training config's keys, the commands' flags and load_scorer's keywords (and which kind reads which)."""

import argparse
import dataclasses
import inspect
import subprocess
import sys
import typing

import pytest
from transformers import HfArgumentParser

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.checkpoint import STEP_CLASSIFIER, TOKEN_LOGIT, VALUE_HEAD
from reasonflux_rl.prm.kinds.step_classifier import StepScorer
from reasonflux_rl.prm.kinds.token_logit import TokenLogitScorer
from reasonflux_rl.prm.kinds.value_head import ValueHeadScorer
from reasonflux_rl.prm.loader import load_scorer
from reasonflux_rl.prm.options import (
    AGGREGATE,
    LOAD_OPTIONS,
    OPTIONS,
    TRAJECTORY,
    PRMOptions,
    add_prm_arguments,
    on_surface,
    prm_settings,
    read_by,
)
from reasonflux_rl.prm.placement.remote import RemoteStepScorer
from reasonflux_rl.prm.placement.resolve import SERVER
from reasonflux_rl.rewards.config import RewardArguments

# The config keys of the mix itself (not PRM options) and of the outcome reward: the only keys written by hand.
OWN_KEYS = {
    "prm_beta", "prm_beta_schedule", "prm_beta_schedule_steps", "reward_mode", "prm_name_or_path", "prm_normalisation",
    "prm_on_failure", "outcome_require_closed_thinking", "outcome_timeout_seconds", "outcome_num_workers",
    "solution_column", "problem_column", "prm_credit", "prm_credit_temperature", "prm_step_transform",
    "prm_step_clip_threshold",
}
# Flags of the commands that are not PRM options: the checkpoint itself and how the commands work.
OWN_FLAGS = {"prm", "chunk_size", "no_progress"}
# Options shown on one surface only, or only as load_scorer keywords: a new option has to pick its surfaces.
CONFIG_ONLY = {"placement", "request_timeout", "retries", "deadline"}
FLAG_ONLY = {"device"}
KEYWORD_ONLY = {"attn_implementation", "packed", "padding_side", "step_tag_id", "good_token_id", "bad_token_id", "check"}
KIND_CLASSES = {STEP_CLASSIFIER: StepScorer, VALUE_HEAD: ValueHeadScorer, TOKEN_LOGIT: TokenLogitScorer,
                SERVER: RemoteStepScorer, TRAJECTORY: ValueHeadScorer}


def prm_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_prm_arguments(parser)
    return parser


def test_every_option_is_a_config_key_with_its_declared_type_default_and_help():
    keys = {f.name: f for f in dataclasses.fields(RewardArguments)}
    hints = typing.get_type_hints(RewardArguments)
    for name, option in OPTIONS.items():
        if option.config is None:
            continue
        shown, default, annotation = on_surface(name, "config")
        assert shown.name in keys, name
        assert keys[shown.name].default == default and hints[shown.name] == annotation, name
        assert keys[shown.name].metadata == {"help": shown.help or option.help}, name


def test_the_config_declares_no_prm_option_by_hand():
    generated = {option.config.name for option in OPTIONS.values() if option.config is not None}
    assert {f.name for f in dataclasses.fields(RewardArguments)} == generated | OWN_KEYS
    assert not generated & OWN_KEYS


def test_every_option_with_a_flag_is_a_flag_of_the_commands():
    actions = {action.dest: action for action in prm_parser()._actions if action.dest != "help"}
    flagged = {name for name, option in OPTIONS.items() if option.flag is not None}
    assert set(actions) == flagged | OWN_FLAGS
    for name in flagged:
        assert actions[name].option_strings == [OPTIONS[name].flag.name]
        assert actions[name].default == on_surface(name, "flag")[1]


def test_options_off_a_surface_are_marked_so():
    assert {n for n, o in OPTIONS.items() if o.config is not None and o.flag is None} == CONFIG_ONLY
    assert {n for n, o in OPTIONS.items() if o.config is None and o.flag is not None} == FLAG_ONLY
    assert {n for n, o in OPTIONS.items() if o.config is None and o.flag is None} == KEYWORD_ONLY


def test_surface_specific_names_and_defaults():
    assert OPTIONS["trajectory_prm"].config.name == "prm_trajectory_name_or_path"
    assert OPTIONS["trajectory_prm"].flag.name == "--trajectory-prm"
    assert OPTIONS["server_urls"].config.name == "prm_server_urls" and OPTIONS["server_urls"].flag.name == "--server-url"
    assert on_surface("max_inflight", "config")[:2] == (OPTIONS["max_inflight"].config, 64)
    assert on_surface("max_inflight", "flag")[1] == PRMOptions().max_inflight == 8
    args = prm_parser().parse_args(["--prm", "p", "--server-url", "http://a:1", "--server-url", "http://b:1"])
    assert PRMOptions.from_flags(args).server_urls == ["http://a:1", "http://b:1"]


def test_load_scorer_accepts_exactly_the_declared_load_options():
    assert set(LOAD_OPTIONS) == {n for n, o in OPTIONS.items() if set(o.readers) - {AGGREGATE}}
    assert set(read_by(AGGREGATE)) == {"aggregation", "alpha"} and not set(read_by(AGGREGATE)) & set(LOAD_OPTIONS)
    with pytest.raises(TypeError, match=r"unknown options \['batch_size'\]; known: (.*)") as error:
        load_scorer("/not/read", batch_size=4)
    assert str(sorted(LOAD_OPTIONS)) in str(error.value)
    with pytest.raises(TypeError, match=r"unknown options \['aggregation'\]"):
        load_scorer("/not/read", aggregation="min")


def keyword_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keywords ``cls.from_pretrained`` and its constructors take (the loading step first, as it consumes them)."""
    found: dict[str, inspect.Parameter] = {}
    for method in ("from_pretrained", "__init__"):
        for klass in cls.__mro__:
            function = klass.__dict__.get(method)
            if function is None:
                continue
            for parameter in inspect.signature(getattr(function, "__func__", function)).parameters.values():
                if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                    found.setdefault(parameter.name, parameter)
    return found


@pytest.mark.parametrize("reader", sorted(KIND_CLASSES))
def test_each_kind_takes_the_options_it_reads_with_the_declared_defaults(reader):
    parameters = keyword_parameters(KIND_CLASSES[reader])
    defaults = PRMOptions()
    for name in read_by(reader):
        assert name in parameters, f"{KIND_CLASSES[reader].__name__} does not take {name}"
        if parameters[name].default is not inspect.Parameter.empty:
            assert parameters[name].default == getattr(defaults, name), name


def test_the_config_and_the_flags_give_the_same_options():
    config = RewardArguments(
        prm_beta=0, prm_kind="token_logit", prm_step_tag="ки", prm_good_token="+", prm_bad_token="-",
        prm_trajectory_name_or_path="traj", prm_parts="response", thinking_prefilled=True, prm_max_steps=3,
        prm_max_length=512, prm_truncation="windows", prm_window_overlap=64, prm_system_prompt="", prm_alpha=0.5,
        prm_aggregation="min", prm_dtype="float32", prm_batch_tokens=2048, prm_server_max_inflight=8,
    ).prm_options()
    flags = PRMOptions.from_flags(prm_parser().parse_args([
        "--prm", "p", "--kind", "token_logit", "--step-tag", "ки", "--good-token", "+", "--bad-token", "-",
        "--trajectory-prm", "traj", "--parts", "response", "--thinking-prefilled", "--max-steps", "3",
        "--max-length", "512", "--truncation", "windows", "--window-overlap", "64", "--system-prompt", "",
        "--alpha", "0.5", "--aggregation", "min", "--dtype", "float32", "--batch-tokens", "2048",
    ]))
    assert config == flags
    assert config.read_by(TOKEN_LOGIT)["step_tag"] == "ки" and config.system_prompt is None


def test_the_job_wide_inflight_bound_is_shared_out_by_the_config_alone():
    config = RewardArguments(prm_beta=0, prm_server_max_inflight=64)
    assert config.prm_options().max_inflight == 64 and config.prm_options(num_processes=16).max_inflight == 4


@pytest.mark.parametrize(
    ("config", "argv", "message"),
    [
        ({"prm_window_overlap": 0}, ["--window-overlap", "0"], "{key}=0 must be a positive integer$"),
        ({"prm_max_steps": 0}, ["--max-steps", "0"], "{key}=0 must be a positive integer{unset}$"),
        ({"prm_alpha": -1.0}, ["--alpha", "-1"], "{key}=-1.0 must be >= 0$"),
        ({"prm_dtype": "float99"}, ["--dtype", "float99"], "{key}='float99' is not allowed: use 'auto' or a torch dtype"),
    ],
)
def test_one_rule_names_the_key_as_each_surface_names_it(config, argv, message):
    (key,) = config
    with pytest.raises(ConfigError, match="^" + message.format(key=key, unset=" or unset")):
        RewardArguments(prm_beta=0, **config)
    with pytest.raises(ConfigError, match="^" + message.format(key=argv[0], unset="")):
        prm_settings(prm_parser().parse_args(["--prm", "p", *argv]))


def test_the_config_keys_parse_as_before():
    (args,) = HfArgumentParser(RewardArguments).parse_args_into_dataclasses(args=[
        "--prm_beta", "0", "--prm_server_urls", "http://a:1", "http://b:1", "--prm_name_or_path", "p",
        "--thinking_prefilled", "true", "--prm_batch_tokens", "512", "--prm_aggregation", "last",
    ])
    assert args.prm_server_urls == ["http://a:1", "http://b:1"] and args.thinking_prefilled is True
    options = args.prm_options()
    assert (options.batch_tokens, options.aggregation, options.placement) == (512, "last", "auto")


def test_the_declaration_and_the_reward_formula_load_no_torch():
    code = ("import sys, reasonflux_rl.rewards.formula, reasonflux_rl.prm.declaration; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
