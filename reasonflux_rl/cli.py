"""The ``reasonflux-rl`` command: ``train``, ``prm``, ``tiny-models``, ``score``, ``select``, ``bon``, ``serve-prm``
and ``lab`` (see ``USAGE``); ``COMMANDS`` maps each to the ``main`` that runs it."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

USAGE = """usage: reasonflux-rl <command> [options]

commands:
  train        GRPO training with the mixed outcome + PRM reward (reasonflux-rl train --config FILE.yaml)
  prm          label trajectory-response rows and train a PRM on them (reasonflux-rl prm label|train --config F)
  tiny-models  write a tiny tokenizer, policy and PRMs for dry runs and tests (reasonflux-rl tiny-models --out DIR)
  score        score a JSONL file with a PRM (reasonflux-rl score --prm DIR --input IN.jsonl --output OUT.jsonl)
  select       keep the PRM's top rows of a dataset (reasonflux-rl select --input F --prm DIR --top-k K --output OUT)
  bon          Best-of-N accuracy: PRM pick vs majority vote, random, oracle (reasonflux-rl bon --input F --prm DIR
               --output B.json)
  serve-prm    serve a local step-classifier PRM over vLLM's pooling API, for dry runs of PRM servers on CPU
               (reasonflux-rl serve-prm --prm DIR --port 8001)
  lab          build the lab's policy and PRM(s), or write its labelled solutions (reasonflux-rl lab build|trajectories
               --out DIR)

Run `reasonflux-rl <command> --help` for a command's options.
"""

# Imported only when their command runs, so that `reasonflux-rl --help` loads neither torch nor TRL.
COMMANDS: dict[str, str] = {
    "train": "reasonflux_rl.train.launch:main",
    "prm": "reasonflux_rl.prm_training.launch:main",
    "tiny-models": "reasonflux_rl.cli:tiny_models",
    "score": "reasonflux_rl.tools.score:main",
    "select": "reasonflux_rl.tools.selection:main",
    "bon": "reasonflux_rl.tools.bon:main",
    "serve-prm": "reasonflux_rl.prm.placement.pooling_server:main",
    "lab": "reasonflux_rl.lab.build_command:main",
}


def tiny_models(argv: Sequence[str]) -> None:
    """``reasonflux-rl tiny-models --out DIR [--seed N]``: write the tiny policy, the tiny step classifier the recipes
    train with, and a tiny PRM of each other kind.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.cli import tiny_models
    >>> tiny_models(["--out", tempfile.mkdtemp()])  # doctest: +ELLIPSIS
    policy: .../policy
    prm: .../prm  (step classifier, the ReasonFlux-PRM-7B layout)
    prm-value-head: .../prm-value-head  (value head, the ReasonFlux-PRM-1.5B layout)
    prm-step-value-head: .../prm-step-value-head  (step value head, the Skywork-o1-Open-PRM layout)
    prm-token-logit: .../prm-token-logit  (token logit: --kind token_logit --step-tag ки --good-token + --bad-token -)

    ```
    """
    from reasonflux_rl.tiny import (
        TINY_TOKEN_LOGIT_TOKENS,
        write_tiny_models,
        write_tiny_step_value_head,
        write_tiny_token_logit,
        write_tiny_value_head,
    )

    parser = argparse.ArgumentParser(prog="reasonflux-rl tiny-models", description=tiny_models.__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write policy/, prm/ and prm-*/ into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    paths = write_tiny_models(out, seed=args.seed)
    tokens = " ".join(f"--{name.replace('_', '-')} {token}" for name, token in TINY_TOKEN_LOGIT_TOKENS.items())
    written = {
        "policy": (paths.policy, ""),
        "prm": (paths.prm, "step classifier, the ReasonFlux-PRM-7B layout"),
        "prm-value-head": (write_tiny_value_head(out / "prm-value-head", seed=args.seed),
                           "value head, the ReasonFlux-PRM-1.5B layout"),
        "prm-step-value-head": (write_tiny_step_value_head(out / "prm-step-value-head", seed=args.seed),
                                "step value head, the Skywork-o1-Open-PRM layout"),
        "prm-token-logit": (write_tiny_token_logit(out / "prm-token-logit", seed=args.seed),
                            f"token logit: --kind token_logit {tokens}"),
    }
    for name, (path, what) in written.items():
        print(f"{name}: {path}" + (f"  ({what})" if what else ""))


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch ``reasonflux-rl <command>``; a bad configuration ends with a one-line error and exit status 2.

    Example:
    ```python
    >>> from reasonflux_rl.cli import main
    >>> try:
    ...     main(["--help"])
    ... except SystemExit as done:
    ...     print("exit status", done.code)  # doctest: +ELLIPSIS
    usage: reasonflux-rl <command> [options]
    ...
    exit status 0

    ```
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"reasonflux-rl: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)
    from reasonflux_rl.errors import ConfigError

    module, function = COMMANDS[command].split(":")
    try:
        getattr(importlib.import_module(module), function)(rest)
    except ConfigError as err:
        print(f"reasonflux-rl {command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
