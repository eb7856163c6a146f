"""Verified integration: the cells that adaptive bisection needs against a uniform grid.

Usage::

    python benchmarks/integration_cells.py               # five integrands, degrees 1-4
    python benchmarks/integration_cells.py --quick       # notebook example and bump, degrees 2, 4

For each integrand and degree ``k`` it prints, as a Markdown table, the cells that
``ab.integrate`` (adaptive: start from one cell, bisect the cells with the largest gap) needs to
reach the requested width, and the smallest uniform grid (``initial_cells == max_cells == n``)
that reaches the same width. The uniform ``n`` is found by doubling from 1 until the width is
reached and then bisecting between the last failing and the first reaching power of two; this
assumes that the uniform width shrinks as ``n`` grows, which is typical but not guaranteed, so
the ``n`` found always reaches the width and ``n - 1`` does not, but a smaller ``n`` might. The
last column says whether both intervals contain the reference value (``mpmath.quad`` at 30
digits, split at the integrand's features).
"""

from __future__ import annotations

import argparse
import time

import jax.numpy as jnp
import mpmath

from optax_saferate import autobound as ab

mpmath.mp.dps = 30

# (name, f, the same f in mpmath, a, b, points where mpmath.quad splits [a, b])
CASES = [
    (
        "1.5 e^(3x) - 25 x² on [0, 1]",
        lambda x: 1.5 * jnp.exp(3 * x) - 25 * x**2,
        lambda x: 1.5 * mpmath.exp(3 * x) - 25 * x**2,
        0.0,
        1.0,
        (),
    ),
    (
        "exp(sin 3x) on [0, 2]",
        lambda x: jnp.exp(jnp.sin(3 * x)),
        lambda x: mpmath.exp(mpmath.sin(3 * x)),
        0.0,
        2.0,
        (mpmath.pi / 6, mpmath.pi / 2),
    ),
    (
        "1/(1 + 25x²) on [-1, 1] (Runge)",
        lambda x: 1 / (1 + 25 * x**2),
        lambda x: 1 / (1 + 25 * x**2),
        -1.0,
        1.0,
        (0,),
    ),
    (
        "sqrt(x + 0.01) on [0, 1]",
        lambda x: jnp.sqrt(x + 0.01),
        lambda x: mpmath.sqrt(x + mpmath.mpf("0.01")),
        0.0,
        1.0,
        (mpmath.mpf("0.01"), mpmath.mpf("0.1")),
    ),
    (
        "exp(-((x - 0.3)/0.05)²) on [0, 1] (bump)",
        lambda x: jnp.exp(-(((x - 0.3) / 0.05) ** 2)),
        lambda x: mpmath.exp(-(((x - mpmath.mpf("0.3")) / mpmath.mpf("0.05")) ** 2)),
        0.0,
        1.0,
        (mpmath.mpf("0.2"), mpmath.mpf("0.3"), mpmath.mpf("0.4")),
    ),
]
QUICK_CASES = (0, 4)  # the notebook example and the bump
QUICK_DEGREES = (2, 4)
MAX_UNIFORM = 1 << 17


def reference(exact_f, a: float, b: float, splits) -> mpmath.mpf:
    value, error = mpmath.quad(exact_f, [a, *splits, b], error=True)
    assert error < mpmath.mpf("1e-20"), error
    return value


def uniform(f, a: float, b: float, degree: int, n: int, width: float) -> ab.IntegralBounds:
    return ab.integrate(f, a, b, width=width, degree=degree, initial_cells=n, max_cells=n)


def smallest_uniform(f, a: float, b: float, degree: int, width: float):
    """``(n, result)``: doubling, then bisection between the last two powers of two."""
    n, result = 1, uniform(f, a, b, degree, 1, width)
    while not result.reached:
        if n >= MAX_UNIFORM:
            return None, result
        n *= 2
        result = uniform(f, a, b, degree, n, width)
    failing = n // 2  # 0 when one cell already reaches the width
    while n - failing > 1:
        middle = (failing + n) // 2
        trial = uniform(f, a, b, degree, middle, width)
        if trial.reached:
            n, result = middle, trial
        else:
            failing = middle
    return n, result


def contains(result: ab.IntegralBounds, value: mpmath.mpf) -> bool:
    return result.lower <= value <= result.upper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1e-6, help="requested interval width")
    parser.add_argument("--quick", action="store_true", help="two integrands, degrees 2 and 4")
    args = parser.parse_args()
    cases = [CASES[i] for i in QUICK_CASES] if args.quick else CASES
    degrees = QUICK_DEGREES if args.quick else (1, 2, 3, 4)
    start = time.perf_counter()
    print(f"Requested width {args.width:g}; reference: mpmath.quad at {mpmath.mp.dps} digits.\n")
    print(
        "| integrand | reference | degree | adaptive cells | uniform cells "
        "| uniform / adaptive | adaptive interval | contains reference (adaptive, uniform) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, f, exact_f, a, b, splits in cases:
        value = reference(exact_f, a, b, splits)
        for degree in degrees:
            adaptive = ab.integrate(f, a, b, width=args.width, degree=degree, max_cells=MAX_UNIFORM)
            n, grid = smallest_uniform(f, a, b, degree, args.width)
            cells = len(adaptive.cells) if adaptive.reached else f"- ({adaptive.stop_reason})"
            ratio = f"{n / len(adaptive.cells):.1f}" if n and adaptive.reached else "-"
            inside = ", ".join("yes" if contains(r, value) else "NO" for r in (adaptive, grid))
            row = [
                name,
                mpmath.nstr(value, 12),
                str(degree),
                str(cells),
                str(n) if n else f"> {MAX_UNIFORM}",
                ratio,
                f"[{adaptive.lower:.10f}, {adaptive.upper:.10f}]",
                inside,
            ]
            print("| " + " | ".join(row) + " |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
