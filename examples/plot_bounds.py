"""Draw a function with the quadratic upper and lower bounds that AutoBound proves for it.

Usage::

    python examples/plot_bounds.py                 # writes examples/bounds.png
    python examples/plot_bounds.py --out my.png --eta-max 0.05

Left panel: the full-batch loss of a one-hidden-layer MLP (2-32-3, tanh, softmax cross-entropy,
300 synthetic points in three spiral arms) as a function of the learning rate ``eta`` along an Adam
direction, ``h(eta) = loss(params + eta * u)`` with ``u`` the update of ``optax.adam(1.0)`` after
a few Adam steps. ``taylor_bounds(h, 2)(0, (0, eta_max))`` gives

    h(0) + h'(0) eta + lo eta^2  <=  h(eta)  <=  h(0) + h'(0) eta + hi eta^2   on [0, eta_max];

the step SafeRate takes is the minimiser of the upper quadratic (marked).

Right panel: ``softplus(x)`` around ``x0 = 0.5`` over the two-sided region ``[-2.5, 3.5]``, where
the same bounds hold on both sides of ``x0``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from optax_saferate import autobound as ab  # noqa: E402
from optax_saferate import minimize_quadratic_bound  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "bounds.png"


def spirals(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points in three noisy spiral arms (2-D inputs, labels 0..2)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    radius = rng.uniform(0.1, 1.0, n)
    angle = 4.0 * radius + labels * 2 * np.pi / 3 + rng.normal(0, 0.2, n)
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return points.astype(np.float32), labels.astype(np.int32)


def init_mlp(key, sizes):
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        key, sub = jax.random.split(key)
        params.append(
            {
                "w": jax.random.normal(sub, (fan_in, fan_out)) / np.sqrt(fan_in),
                "b": jnp.zeros((fan_out,)),
            }
        )
    return params


def loss_fn(params, x, y):
    hidden = jnp.tanh(x @ params[0]["w"] + params[0]["b"])
    logits = hidden @ params[1]["w"] + params[1]["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def adam_direction(params, x, y, warmup_steps: int):
    """Params after ``warmup_steps`` Adam steps (lr 0.05), and the next ``optax.adam(1.0)`` update.

    With no warm-up steps the update is Adam's first one, ``-sign(grad)`` (up to Adam's eps).
    """
    trainer = optax.adam(0.05)

    @jax.jit
    def run(params):
        def step(_, carry):
            params, state = carry
            updates, state = trainer.update(jax.grad(loss_fn)(params, x, y), state)
            return optax.apply_updates(params, updates), state

        params, state = jax.lax.fori_loop(0, warmup_steps, step, (params, trainer.init(params)))
        # The same moments with learning rate 1: the direction whose step size SafeRate chooses.
        direction, _ = optax.adam(1.0).update(jax.grad(loss_fn)(params, x, y), state)
        return params, direction

    return run(params)


def quadratic_label(name: str, c2: float) -> str:
    sign = "+" if c2 >= 0 else "−"
    return f"{name}: h(0) + h′(0)·η {sign} {abs(c2):.3g}·η²"


def bound_curves(f, x0, region, grid):
    """The degree-2 bounds of ``f`` over ``region`` at ``x0``; ``f`` and both bounds on ``grid``.

    Also the SafeRate step (the minimiser of the upper bound over ``[x0, region[1]]``) and ``f``
    and the upper bound there. One jitted call.
    """

    @jax.jit
    def compute(x0, region, grid):
        bounds = ab.taylor_bounds(f, 2)(x0, region)
        _, c1, (_, hi) = bounds.coefficients
        step = x0 + minimize_quadratic_bound(c1, hi, region[1] - x0)
        curves = jax.vmap(f)(grid), bounds.lower(grid), bounds.upper(grid)
        return bounds, curves, (step, f(step), bounds.upper(step))

    bounds, curves, at_step = compute(
        jnp.asarray(x0), tuple(map(jnp.asarray, region)), jnp.asarray(grid)
    )
    return bounds, *(np.asarray(c) for c in curves), tuple(float(v) for v in at_step)


def draw_loss_panel(ax, eta_max: float, warmup_steps: int):
    x, y = (jnp.asarray(a) for a in spirals(300))
    params, direction = adam_direction(
        init_mlp(jax.random.PRNGKey(0), [2, 32, 3]), x, y, warmup_steps
    )

    def h(eta):
        return loss_fn(jax.tree.map(lambda p, u: p + eta * u, params, direction), x, y)

    etas = jnp.linspace(0.0, eta_max, 400)
    bounds, values, lower, upper, (step, loss_at_step, upper_at_step) = bound_curves(
        h, 0.0, (0.0, eta_max), etas
    )
    _, _, (lo, hi) = bounds.coefficients

    ax.fill_between(etas, lower, upper, color="tab:blue", alpha=0.12, label="proved enclosure")
    ax.plot(etas, values, color="black", lw=2, label="loss h(η) (true)")
    ax.plot(etas, upper, color="tab:red", lw=1.5, label=quadratic_label("upper", float(hi)))
    ax.plot(etas, lower, color="tab:blue", lw=1.5, label=quadratic_label("lower", float(lo)))
    ax.plot(
        [step],
        [loss_at_step],
        "o",
        color="tab:green",
        ms=8,
        zorder=5,
        label=f"SafeRate step η* = {step:.3g} (loss there)",
    )
    ax.plot(
        [step],
        [upper_at_step],
        "v",
        color="tab:red",
        ms=8,
        zorder=5,
        label="minimum of the upper bound",
    )
    ax.axvline(step, color="tab:green", lw=1, ls=":")
    ax.set_xlim(0, eta_max)
    ax.set_xlabel("learning rate η (along the Adam direction)")
    ax.set_ylabel("full-batch training loss")
    which = (
        "Adam's first update, -sign(grad)"
        if warmup_steps == 0
        else f"Adam update after {warmup_steps} Adam steps"
    )
    ax.set_title(
        f"MLP 2-32-3 (tanh), softmax cross-entropy, 300 points\n{which}; "
        f"trust region [0, {eta_max:g}]"
    )
    ax.legend(loc="upper left", fontsize=8)


def draw_softplus_panel(ax):
    x0, region = 0.5, (-2.5, 3.5)
    xs = jnp.linspace(*region, 400)
    bounds, values, lower, upper, _ = bound_curves(jax.nn.softplus, x0, region, xs)
    _, _, (lo, hi) = bounds.coefficients
    ax.fill_between(xs, lower, upper, color="tab:blue", alpha=0.12, label="proved enclosure")
    ax.plot(xs, values, color="black", lw=2, label="softplus(x)")
    ax.plot(xs, upper, color="tab:red", lw=1.5, label=f"upper (c₂ = {float(hi):.3g})")
    ax.plot(xs, lower, color="tab:blue", lw=1.5, label=f"lower (c₂ = {float(lo):.3g})")
    ax.plot([x0], [float(jax.nn.softplus(x0))], "o", color="black", ms=6, label=f"x₀ = {x0:g}")
    for end in region:
        ax.axvline(end, color="gray", lw=1, ls="--")
    ax.set_xlabel("x")
    ax.set_title(f"softplus over the two-sided region [{region[0]:g}, {region[1]:g}]")
    ax.legend(loc="upper left", fontsize=8)


def main() -> None:
    parser = argparse.ArgumentParser(description="Plot AutoBound quadratic bounds (PNG).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG path")
    parser.add_argument("--eta-max", type=float, default=0.2, help="trust region [0, eta_max]")
    parser.add_argument(
        "--warmup-steps", type=int, default=0, help="Adam steps taken before the plotted one"
    )
    args = parser.parse_args()

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    draw_loss_panel(left, args.eta_max, args.warmup_steps)
    draw_softplus_panel(right)
    fig.suptitle("AutoBound: quadratic upper and lower bounds that hold on the whole trust region")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
