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


def problems(seed: int = 2506) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for _ in range(16):
        a, b, c = rng.randint(2, 30), rng.randint(2, 30), rng.randint(2, 9)
        rows.append({"problem": f"Compute ${a} + {b} \\times {c}$.", "solution": str(a + b * c)})
    for _ in range(16):
        p, q, r, s = (rng.randint(1, 9) for _ in range(4))
        rows.append({"problem": f"Simplify $\\frac{{{p}}}{{{q}}} + \\frac{{{r}}}{{{s}}}$.",
                     "solution": _frac(Fraction(p, q) + Fraction(r, s))})
    for _ in range(16):
        x, a, b = rng.randint(-9, 9), rng.randint(2, 9), rng.randint(-20, 20)
        rows.append({"problem": f"Solve for $x$: ${a}x + ({b}) = {a * x + b}$.", "solution": str(x)})
    for _ in range(8):
        a, b = rng.randint(12, 200), rng.randint(12, 200)
        rows.append({"problem": f"What is the greatest common divisor of {a} and {b}?", "solution": str(math.gcd(a, b))})
    for _ in range(8):
        n = rng.randint(5, 40)
        rows.append({"problem": f"What is the sum of the integers from 1 to {n}?", "solution": str(n * (n + 1) // 2)})
    for _ in range(8):
        base, pct = rng.randint(2, 40) * 10, rng.choice([5, 10, 15, 20, 25, 40, 50, 75])
        rows.append({"problem": f"What is {pct}\\% of {base}?", "solution": _frac(Fraction(pct * base, 100))})
    for _ in range(8):
        r1, r2 = sorted(rng.sample(range(-6, 7), 2))
        rows.append({"problem": f"Find the solution set of $x^2 - ({r1 + r2})x + ({r1 * r2}) = 0$.",
                     "solution": f"$\\{{{r1}, {r2}\\}}$"})
    for _ in range(8):
        n = rng.randint(3, 8)
        rows.append({"problem": f"How many ways can {n} distinct books be arranged on a shelf?",
                     "solution": str(math.factorial(n))})
    for _ in range(8):
        a = rng.randint(2, 12)
        rows.append({"problem": f"Simplify $\\sqrt{{{a * a * 2}}}$.", "solution": f"${a}\\sqrt{{2}}$"})
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("smoke_math.jsonl")
    out.write_text("".join(json.dumps(row) + "\n" for row in problems()))
    print(f"wrote {out}")
