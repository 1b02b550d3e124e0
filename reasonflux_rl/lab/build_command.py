"""``reasonflux-rl lab build|trajectories``: the command line of the lab's builds, the lab's
([`~reasonflux_rl.lab.build`]) and the R1-style lab's ([`~reasonflux_rl.lab.r1_build`], ``--task r1``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from transformers import HfArgumentParser

from reasonflux_rl.lab.build import LabBuildArguments, build_lab, summary, write_trajectories
from reasonflux_rl.lab.build import __doc__ as build_doc
from reasonflux_rl.lab.r1_build import build_r1_lab, r1_summary, write_r1_trajectories

USAGE = ("usage: reasonflux-rl lab build [--out DIR] [--task chains|r1] [--key value ...]  (the policy and the PRMs)\n"
         "       reasonflux-rl lab trajectories --out DIR [--key value ...]  (labelled solutions, for prm label)")


def main(argv: Sequence[str]) -> None:
    """``reasonflux-rl lab build [--out DIR] [--key value ...]``: build the lab's policy and PRM (``--task r1``: the
    R1-style lab's policy and two PRMs; see [`LabBuildArguments`]) and print what they score; ``reasonflux-rl lab
    trajectories --out DIR``: write the labelled solutions the PRMs are trained on.

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.lab.build_command import main
    >>> main(["trajectories", "--out", tempfile.mkdtemp(), "--prm_examples", "4", "--prm_held_out", "2"])
    ... # doctest: +ELLIPSIS
    train: .../train.jsonl (4 labelled solutions)
    test:  .../test.jsonl (2 labelled solutions)

    ```
    """
    if not argv or argv[0] not in ("build", "trajectories"):
        raise SystemExit(USAGE)
    parser = HfArgumentParser(LabBuildArguments, prog=f"reasonflux-rl lab {argv[0]}",
                              description=build_doc.splitlines()[0])
    (args,) = parser.parse_args_into_dataclasses(args=list(argv[1:]))
    if args.task == "r1":
        _r1_main(argv[0], args)
    elif argv[0] == "trajectories":
        train, test = write_trajectories(args, args.out)
        print(f"train: {train} ({args.prm_examples} labelled solutions)\ntest:  {test} ({args.prm_held_out} labelled "
              "solutions)")
    else:
        paths = build_lab(args)
        print(summary(json.loads(paths.report.read_text())))
        print(f"policy: {paths.policy}\nprm:    {paths.prm}\nreport: {paths.report}")


def _r1_main(command: str, args: LabBuildArguments) -> None:
    if command == "trajectories":
        for name, path in write_r1_trajectories(args, args.out).items():
            print(f"{name}: {path}")
        return
    paths = build_r1_lab(args)
    print(r1_summary(json.loads(paths.report.read_text())))
    prms = "\n".join(f"prm ({name}): {path}" for name, path in paths.prms.items())
    print(f"policy: {paths.policy}\n{prms}\nreport: {paths.report}\nfigure: {paths.figure}")
