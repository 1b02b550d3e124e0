"""Regenerate ``smoke_math.jsonl``: small, varied math problems with reference answers, written by this project.

Run ``python -m reasonflux_rl.data.make_smoke_math``; the output is deterministic.
"""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction
from pathlib import Path


def _frac(value: Fraction) -> str:
    # LaTeX golds go between $...$: math-verify's default gold extraction reads bare text as a plain expression.
    if value.denominator == 1:
        return str(value.numerator)
    return f"$\\frac{{{value.numerator}}}{{{value.denominator}}}$"


def _compute(rng: random.Random) -> dict[str, str]:
    a, b, c = rng.randint(2, 30), rng.randint(2, 30), rng.randint(2, 9)
    return {"problem": f"Compute ${a} + {b} \\times {c}$.", "solution": str(a + b * c)}


def _fractions(rng: random.Random) -> dict[str, str]:
    p, q, r, s = (rng.randint(1, 9) for _ in range(4))
    return {"problem": f"Simplify $\\frac{{{p}}}{{{q}}} + \\frac{{{r}}}{{{s}}}$.",
            "solution": _frac(Fraction(p, q) + Fraction(r, s))}


def _linear(rng: random.Random) -> dict[str, str]:
    x, a, b = rng.randint(-9, 9), rng.randint(2, 9), rng.randint(-20, 20)
    return {"problem": f"Solve for $x$: ${a}x + ({b}) = {a * x + b}$.", "solution": str(x)}


def _gcd(rng: random.Random) -> dict[str, str]:
    a, b = rng.randint(12, 200), rng.randint(12, 200)
    return {"problem": f"What is the greatest common divisor of {a} and {b}?", "solution": str(math.gcd(a, b))}


def _series(rng: random.Random) -> dict[str, str]:
    n = rng.randint(5, 40)
    return {"problem": f"What is the sum of the integers from 1 to {n}?", "solution": str(n * (n + 1) // 2)}


def _percent(rng: random.Random) -> dict[str, str]:
    base, pct = rng.randint(2, 40) * 10, rng.choice([5, 10, 15, 20, 25, 40, 50, 75])
    return {"problem": f"What is {pct}\\% of {base}?", "solution": _frac(Fraction(pct * base, 100))}


def _roots(rng: random.Random) -> dict[str, str]:
    r1, r2 = sorted(rng.sample(range(-6, 7), 2))
    return {"problem": f"Find the solution set of $x^2 - ({r1 + r2})x + ({r1 * r2}) = 0$.",
            "solution": f"$\\{{{r1}, {r2}\\}}$"}


def _arrangements(rng: random.Random) -> dict[str, str]:
    n = rng.randint(3, 10)
    return {"problem": f"How many ways can {n} distinct books be arranged on a shelf?",
            "solution": str(math.factorial(n))}


def _radicals(rng: random.Random) -> dict[str, str]:
    a = rng.randint(2, 12)
    return {"problem": f"Simplify $\\sqrt{{{a * a * 2}}}$.", "solution": f"${a}\\sqrt{{2}}$"}


KINDS = [(_compute, 16), (_fractions, 16), (_linear, 16), (_gcd, 8), (_series, 8), (_percent, 8), (_roots, 8),
         (_arrangements, 8), (_radicals, 8)]


def problems(seed: int = 2506) -> list[dict[str, str]]:
    """The shipped problems: ``count`` distinct problems of each kind (a repeat would be trained on twice)."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for make, count in KINDS:
        made = 0
        while made < count:
            row = make(rng)
            if row["problem"] not in seen:
                seen.add(row["problem"])
                rows.append(row)
                made += 1
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("smoke_math.jsonl")
    out.write_text("".join(json.dumps(row) + "\n" for row in problems()))
    print(f"wrote {out}")
