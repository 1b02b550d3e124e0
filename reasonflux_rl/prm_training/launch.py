"""``reasonflux-rl prm label|train``: the two jobs of training a PRM, each with its own options (``--help``)."""

from __future__ import annotations

from collections.abc import Sequence

USAGE = """usage: reasonflux-rl prm <label|train> [--config FILE.yaml] [--key value ...]

  label   step and trajectory targets for trajectory-response rows (given, mc); resumable
  train   train a step-classifier PRM on labelled rows with the trajectory-aware objective

Run `reasonflux-rl prm <label|train> --help` for a job's keys.
"""


def main(argv: Sequence[str]) -> None:
    """Run ``reasonflux-rl prm label ...`` or ``reasonflux-rl prm train ...``.

    Example:
    ```python
    >>> from reasonflux_rl.prm_training.launch import main
    >>> try:
    ...     main(["score"])
    ... except SystemExit as done:
    ...     print(str(done.code).splitlines()[0])
    usage: reasonflux-rl prm <label|train> [--config FILE.yaml] [--key value ...]

    ```
    """
    argv = list(argv)
    if not argv or argv[0] not in ("label", "train"):
        raise SystemExit(USAGE)
    if argv[0] == "label":
        from reasonflux_rl.prm_training.label_command import main as run
    else:
        from reasonflux_rl.prm_training.train_command import main as run
    run(argv[1:])
