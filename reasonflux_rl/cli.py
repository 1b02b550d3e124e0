"""The ``reasonflux-rl`` command: ``train``, ``tiny-models``, ``score``, ``select``, ``bon`` and ``serve-prm`` (see
``USAGE``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

USAGE = """usage: reasonflux-rl <command> [options]

commands:
  train        GRPO training with the mixed outcome + PRM reward (reasonflux-rl train --config FILE.yaml)
  tiny-models  write a tiny tokenizer, policy and PRM for dry runs and tests (reasonflux-rl tiny-models --out DIR)
  score        score a JSONL file with a PRM (reasonflux-rl score --prm DIR --input IN.jsonl --output OUT.jsonl)
  select       keep the PRM's top rows of a dataset (reasonflux-rl select --input F --prm DIR --top-k K --output OUT)
  bon          Best-of-N accuracy: PRM pick vs majority vote, random, oracle (reasonflux-rl bon --input F --prm DIR
               --output B.json)
  serve-prm    serve a local step-classifier PRM over vLLM's pooling API, for dry runs of PRM servers on CPU
               (reasonflux-rl serve-prm --prm DIR --port 8001)

Run `reasonflux-rl <command> --help` for a command's options.
"""


def _tiny_models(argv: Sequence[str]) -> None:
    from reasonflux_rl.tiny import write_tiny_models

    parser = argparse.ArgumentParser(prog="reasonflux-rl tiny-models", description=write_tiny_models.__doc__)
    parser.add_argument("--out", required=True, help="directory to write policy/ and prm/ into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_tiny_models(args.out, seed=args.seed)
    print(f"policy: {paths.policy}\nprm:    {paths.prm}")


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch ``reasonflux-rl <command>``; the training command's flags are TRL's and ours (see ``train --help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    from reasonflux_rl.errors import ConfigError

    try:
        if command == "train":
            from reasonflux_rl.train.launch import main as train

            train(rest)
        elif command == "tiny-models":
            _tiny_models(rest)
        elif command == "score":
            from reasonflux_rl.tools.score import main as score

            score(rest)
        elif command == "select":
            from reasonflux_rl.tools.selection import main as select

            select(rest)
        elif command == "bon":
            from reasonflux_rl.tools.bon import main as bon

            bon(rest)
        elif command == "serve-prm":
            from reasonflux_rl.prm.placement.pooling_server import main as serve_prm

            serve_prm(rest)
        else:
            print(f"reasonflux-rl: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
            raise SystemExit(2)
    except ConfigError as err:
        print(f"reasonflux-rl {command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
