"""Draw universal MM on a 1-D logistic regression: the loss, the iterates and their majorizers.

Usage::

    python examples/mm.py                 # writes examples/mm.png
    python examples/mm.py --out my.png --start -4 --steps 8

Left panel: the loss ``f(w) = mean_i softplus(-y_i·x_i·w)`` of 40 synthetic points, and for each
step ``j`` of :func:`optax_saferate.mm.minimize` its majorizer
``f(w_j) + g_j·t + q_j·t²`` drawn over its box ``|t| <= r_j`` (AutoBound proves it lies above
``f`` there); the next iterate is the majorizer's minimiser on the box (marked). Right panel:
``f(w_j) - f*`` against the step (log scale, where positive): it never goes up.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from optax_saferate import mm  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "mm.png"


def logistic_loss(n: int = 40, seed: int = 0):
    """The loss of a 1-D logistic regression (labels ±1, no intercept) on ``n`` noisy points."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = np.where(x + 0.8 * rng.normal(size=n) > 0, 1.0, -1.0)
    margins = jnp.asarray(-y * x, jnp.float32)
    return lambda w: jnp.mean(jax.nn.softplus(margins * w[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    parser.add_argument("--start", type=float, default=-3.0, help="the first iterate w_0")
    parser.add_argument("--steps", type=int, default=10, help="MM steps to draw")
    args = parser.parse_args()

    loss = logistic_loss()
    result = mm.minimize(loss, jnp.array([args.start]), max_iterations=args.steps)
    w = result.iterates[:, 0]
    best = float(mm.minimize(loss, jnp.array([args.start]), max_iterations=200).value)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    span = np.linspace(min(w.min(), 0.0) - 0.5, max(w.max(), 0.0) + 0.5, 400)
    left.plot(span, jax.vmap(loss)(jnp.asarray(span)[:, None]), "k", lw=2, label="loss f(w)")
    colors = plt.cm.viridis(np.linspace(0, 0.9, result.iterations))
    for j in range(result.iterations):
        radius = result.radii[j, 0]
        t = np.linspace(-radius, radius, 200)
        q = result.values[j] + result.gradients[j, 0] * t + result.majorizers[j, 0, 0] * t**2
        label = "majorizer on its box" if j == 0 else None
        left.plot(w[j] + t, q, color=colors[j], lw=1, label=label)
        left.plot(w[j + 1], result.values[j + 1], "o", color=colors[j], ms=5)
    left.plot(w[0], result.values[0], "ks", ms=6, label="w_0")
    top = float(result.values[0])
    left.set_ylim(best - 0.1 * (top - best), top + 0.4 * (top - best))
    left.set_xlabel("w")
    left.set_ylabel("loss")
    left.set_title("MM iterates and each step's majorizer on its box")
    left.legend(loc="upper right")

    gap = result.values - best
    above = gap > 0  # float32: the last iterates reach f* exactly
    right.semilogy(np.arange(len(gap))[above], gap[above], "o-")
    right.set_xlabel("step")
    right.set_ylabel("f(w_j) - f*")
    right.set_title(f"stopped: {result.reason}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}: {result.iterations} steps, f = {float(result.value):.6f}")


if __name__ == "__main__":
    main()
