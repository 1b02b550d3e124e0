"""Data shipped with the package: ``smoke_math.jsonl``, 96 small math problems with reference answers."""

from __future__ import annotations

import json
from pathlib import Path

SMOKE_MATH_PATH = Path(__file__).with_name("smoke_math.jsonl")


def load_smoke_math() -> list[dict[str, str]]:
    """The shipped smoke-test problems as ``{"problem", "solution"}`` rows.

    Example:
    ```python
    >>> from reasonflux_rl.data import load_smoke_math
    >>> rows = load_smoke_math()
    >>> len(rows) >= 64, sorted(rows[0])
    (True, ['problem', 'solution'])

    ```
    """
    return [json.loads(line) for line in SMOKE_MATH_PATH.read_text().splitlines() if line]
