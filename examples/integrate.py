"""Draw verified integration: ``f``, the adaptive cells and each cell's polynomial bounds.

Usage::

    python examples/integrate.py                 # writes examples/integrate.png
    python examples/integrate.py --degree 3 --width 1e-9 --out my.png

Integrates ``∫_0^1 (1.5 e^{3x} - 25 x²) dx = (e³ - 1)/2 - 25/3 = 1.20944…`` with
``ab.integrate`` and prints the interval, its width and the number of cells. Left panel: ``f``
and, for a coarse run (``--draw-width``, so that the cells can be seen), the cells that
``ab.integrate`` chose and on each cell ``[l, r]`` with midpoint ``m`` the lower and upper
polynomials of its degree-``k`` enclosure, ``Σ_{i<k} c_i t^i + [lo, hi]·t^k`` with ``t = x - m``
(the bound whose exact integrals over the cells add up to the interval). Right panel: the cell
lengths of the run at ``--width`` for degrees 1 to 4 (the cells shrink where ``f``'s higher
derivatives grow).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from optax_saferate import autobound as ab  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "integrate.png"
EXACT = 0.5 * (math.e**3 - 1) - 25 / 3


def f(x):
    return 1.5 * jnp.exp(3 * x) - 25 * x**2


def draw_cells(ax, result: ab.IntegralBounds, degree: int) -> None:
    """``f`` and, on each cell, the lower and upper polynomials of its enclosure."""
    bound = jax.jit(ab.taylor_bounds(f, degree))
    for j, (left, right) in enumerate(result.cells):
        mid = left + (right - left) / 2  # the reference point ab.integrate uses
        enclosure = bound(jnp.float64(mid), (jnp.float64(left), jnp.float64(right)))
        x = np.linspace(left, right, 60)
        lower, upper = np.asarray(enclosure.lower(x)), np.asarray(enclosure.upper(x))
        ax.fill_between(x, lower, upper, color="C1", alpha=0.25, lw=0)
        ax.plot(x, upper, "C3", lw=1, label="upper polynomial" if j == 0 else None)
        ax.plot(x, lower, "C0", lw=1, label="lower polynomial" if j == 0 else None)
        ax.axvline(left, color="0.6", lw=0.6)
    ax.axvline(result.cells[-1, 1], color="0.6", lw=0.6)
    x = np.linspace(result.cells[0, 0], result.cells[-1, 1], 400)
    ax.plot(x, f(jnp.asarray(x)), "k", lw=1.5, label="f(x) = 1.5 e^(3x) − 25 x²")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    parser.add_argument("--width", type=float, default=1e-6, help="requested interval width")
    parser.add_argument("--degree", type=int, default=2, help="enclosure degree, 1 to 4")
    parser.add_argument("--draw-width", type=float, default=0.2, help="width of the drawn run")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)  # the cells and polynomials are float64

    result = ab.integrate(f, 0.0, 1.0, width=args.width, degree=args.degree)
    inside = result.lower <= EXACT <= result.upper
    print(
        f"∫_0^1 (1.5 e^(3x) - 25 x²) dx ∈ [{result.lower:.12f}, {result.upper:.12f}]: "
        f"width {result.width:.3g} (requested {args.width:g}), {len(result.cells)} cells, "
        f"degree {args.degree}, stopped on {result.stop_reason}; "
        f"exact (e³ - 1)/2 - 25/3 = {EXACT:.12f} {'inside' if inside else 'OUTSIDE'}"
    )

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    coarse = ab.integrate(f, 0.0, 1.0, width=args.draw_width, degree=args.degree)
    draw_cells(left, coarse, args.degree)
    left.set_xlabel("x")
    left.set_title(
        f"degree-{args.degree} bounds on {len(coarse.cells)} cells: "
        f"∫ ∈ [{coarse.lower:.4f}, {coarse.upper:.4f}]"
    )
    left.legend(loc="upper left", fontsize=8)

    shortest = math.inf
    for degree in (1, 2, 3, 4):
        run = result if degree == args.degree else ab.integrate(
            f, 0.0, 1.0, width=args.width, degree=degree, max_cells=1 << 14
        )  # fmt: skip
        lengths = run.cells[:, 1] - run.cells[:, 0]
        shortest = min(shortest, lengths.min())
        ends = np.append(run.cells[:, 0], run.cells[-1, 1])
        right.stairs(lengths, ends, baseline=None, color=f"C{degree - 1}", lw=1.5,
                     label=f"degree {degree}: {len(run.cells)} cells")  # fmt: skip
    right.set_yscale("log")
    right.set_ylim(bottom=shortest / 50)  # room for the legend below the lines
    right.set_xlabel("x")
    right.set_ylabel("cell length")
    right.set_title(f"adaptive cells for width {args.width:g}")
    right.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
