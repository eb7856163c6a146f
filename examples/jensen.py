"""Draw sharper Jensen bounds: ``f``, its degree-2 bounds at the mean, and the gap intervals.

Usage::

    python examples/jensen.py                    # writes examples/jensen.png
    python examples/jensen.py --function softplus --a -2 --b 3 --out my.png

Left panel: ``f`` on ``[a, b]`` with the lower and upper quadratics of its degree-2 enclosure
at the mean ``μ`` of a Beta(2, 5) law scaled to ``[a, b]`` (whose density is shaded),
``f(μ) + f'(μ)·t + [lo, hi]·t²``, which AutoBound proves hold on the whole of ``[a, b]``.
Right panel: for four laws on ``[a, b]``, the intervals that ``ab.jensen_gap`` gives for
``E f(X) - f(μ)`` (degree 2 from the variance, degree 4 from ``m_2 … m_4``) and the classical
``½[min f'', max f'']·Var X``, each divided by the true gap (so the truth is at 1).
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

DEFAULT_OUT = Path(__file__).resolve().parent / "jensen.png"
FUNCTIONS = {"softplus": jax.nn.softplus, "exp": jnp.exp}


def gauss_legendre_law(density, a: float, b: float, nodes: int = 400):
    """A finite law (atoms, probabilities) with the moments of ``density`` on ``[a, b]`` to
    about 1e-15 (Gauss–Legendre): its expectations are then finite sums."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    atoms = a + (b - a) * (x + 1) / 2
    probabilities = w * density(atoms)
    return atoms, probabilities / probabilities.sum()


def laws(a: float, b: float) -> dict:
    length = b - a
    return {
        "Beta(2,5)": gauss_legendre_law(lambda x: (x - a) * (b - x) ** 4, a, b),
        "uniform": gauss_legendre_law(np.ones_like, a, b),
        "truncated normal": gauss_legendre_law(
            lambda x: np.exp(-0.5 * ((x - a - 0.3 * length) / (0.25 * length)) ** 2), a, b
        ),
        "two-point 1:2": (np.array([a, b]), np.array([1.0, 2.0]) / 3),
    }


def summary(f, atoms, probabilities):
    """(mean, (m_2, m_3, m_4), E f(X) - f(mean)), in float64."""
    mean = math.fsum(probabilities * atoms)
    moments = tuple(math.fsum(probabilities * (atoms - mean) ** j) for j in (2, 3, 4))
    values = np.asarray(f(jnp.asarray(atoms)))
    return mean, moments, math.fsum(probabilities * values) - float(f(jnp.float64(mean)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    parser.add_argument("--function", choices=sorted(FUNCTIONS), default="exp")
    parser.add_argument("--a", type=float, default=-1.0, help="left end of the support")
    parser.add_argument("--b", type=float, default=2.0, help="right end of the support")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)  # the true gaps are sums of float64 values
    f, a, b = FUNCTIONS[args.function], args.a, args.b

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    all_laws = laws(a, b)
    mean, moments, _ = summary(f, *all_laws["Beta(2,5)"])
    enclosure = ab.jensen_gap(f, a, b, mean, variance=moments[0]).enclosure
    x = np.linspace(a, b, 400)
    left.plot(x, f(jnp.asarray(x)), "k", lw=2, label=f"{args.function}(x)")
    left.plot(x, enclosure.upper(x), "C3", label="upper quadratic")
    left.plot(x, enclosure.lower(x), "C0", label="lower quadratic")
    left.axvline(mean, color="0.5", ls=":", label="μ")
    density = left.twinx()
    density.fill_between(x, (x - a) * (b - x) ** 4, color="C2", alpha=0.15)
    density.set_ylim(bottom=0)
    density.set_yticks([])
    left.set_xlabel("x")
    left.set_title(f"degree-2 bounds at μ of Beta(2,5) on [{a:g}, {b:g}] (shaded)")
    left.legend(loc="upper left")

    rows = []
    for name, law in all_laws.items():
        mean, moments, gap = summary(f, *law)
        sharp2 = ab.jensen_gap(f, a, b, mean, variance=moments[0])
        sharp4 = ab.jensen_gap(f, a, b, mean, moments=moments, degree=4)
        rows.append((name, gap, sharp2, sharp4))
    kinds = [
        ("classical ½[min f'', max f'']·Var", "0.6", lambda r: r[2].classical_lower,
         lambda r: r[2].classical_upper),
        ("degree 2 (Var)", "C0", lambda r: r[2].lower, lambda r: r[2].upper),
        ("degree 4 (m_2, m_3, m_4)", "C3", lambda r: r[3].lower, lambda r: r[3].upper),
    ]  # fmt: skip
    for i, row in enumerate(rows):
        for j, (label, color, low, high) in enumerate(kinds):
            y = i + 0.25 * (1 - j)
            lo, hi = low(row) / row[1], high(row) / row[1]
            lo, hi = min(lo, hi), max(lo, hi)  # a negative gap swaps the ends
            # End ticks keep the narrow degree-4 intervals visible.
            right.plot([lo, hi], [y, y], color=color, lw=6, solid_capstyle="butt", marker="|",
                       ms=12, label=label if i == 0 else None)  # fmt: skip
    right.axvline(1.0, color="k", lw=1.5, label="true gap")
    right.set_yticks(range(len(rows)), [f"{r[0]}\ngap {r[1]:.4g}" for r in rows])
    right.set_xlabel("interval ÷ true gap  E f(X) − f(μ)")
    right.set_title("Jensen-gap intervals")
    right.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    ratios = ", ".join(
        f"{name} {sharp2.classical_width / sharp2.width:.2f}x / "
        f"{sharp2.classical_width / sharp4.width:.1f}x"
        for name, _, sharp2, sharp4 in rows
    )
    print(f"wrote {args.out}; classical width over degree 2 / degree 4: {ratios}")


if __name__ == "__main__":
    main()
