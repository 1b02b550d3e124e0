"""What the two-process tests share: each rank of a torchrun script writes what it saw, then both leave together;
the test reads the records back."""

import json
from pathlib import Path


def write_and_leave(state, out, record):
    """Write ``record`` to ``out/rank<r>.json``, then wait for the other rank and close the process group. A rank
    that left while the other still held the gloo group open has aborted it in teardown ("terminate called without an
    active exception", about 1 run in 6 of zero3_scoring.py with four sharded PRMs)."""
    (Path(out) / f"rank{state.process_index}.json").write_text(json.dumps(record))
    state.wait_for_everyone()
    state.destroy_process_group()


def read_records(out, ranks=2):
    """The records [`write_and_leave`] wrote into ``out``, in rank order."""
    return [json.loads((Path(out) / f"rank{r}.json").read_text()) for r in range(ranks)]
