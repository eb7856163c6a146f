"""Side by side with the public ``autobound`` package (0.1.7): speed and float32 bound quality.

The public package needs Python >= 3.12 and jax <= 0.9.2, so run this in its own environment
with both packages installed, e.g.:

  python3.12 -m venv /tmp/abvenv
  /tmp/abvenv/bin/pip install "autobound==0.1.7" "jax<=0.9.2" "jaxlib<=0.9.2" optax flax
  /tmp/abvenv/bin/pip install --no-deps -e .
  /tmp/abvenv/bin/python benchmarks/compare_autobound.py [--quick]

It measures, on the configuration the public package supports (softplus MLP, squared error,
``h(η) = loss(params + η·u)``, trust region ``[0, η_max]``):

1. the bound pass time of each package (jitted, median of interleaved runs) on an MLP
   784-1000-10 with 10,000 inputs (``--quick``: 784-256-10, 1,000 inputs), beside
   ``value_and_grad`` and the floor any bound pass has (the first layer's two products), which
   caps the speed-up any implementation could show over the public package;
2. the degree-2 interval of each in float32 and float64 by depth, against the true curvature.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from step_time import interleaved_median

from optax_saferate import autobound as ours

try:
    import autobound.jax as theirs
except ImportError:  # pragma: no cover - depends on the environment
    theirs = None


def mlp_direction_loss(depth, width, n, dtype, seed=0, inputs=784):
    """``h(eta, data)`` and its ``data``: passed as jit arguments so XLA cannot fold them."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * depth + 4)
    x = jax.random.uniform(keys[0], (n, inputs), dtype)
    y = jax.nn.one_hot(jax.random.randint(keys[1], (n,), 0, 10), 10, dtype=dtype)
    sizes = [inputs] + [width] * depth + [10]
    weights, directions = [], []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        weights.append((jax.random.normal(keys[2 + 2 * i], (a, b)) / np.sqrt(a)).astype(dtype))
        # An Adam-like first direction: -sign(gradient-ish), scaled down.
        sign = jnp.sign(jax.random.normal(keys[3 + 2 * i], (a, b)))
        directions.append((-1e-2 * sign).astype(dtype))

    def h(eta, data):
        x, y, weights, directions = data
        act = x
        for i, (w, d) in enumerate(zip(weights, directions, strict=True)):
            act = act @ (w + eta * d)
            if i < len(weights) - 1:
                act = jax.nn.softplus(act)
        return jnp.mean((act - y) ** 2)

    return h, (x, y, weights, directions)


def first_layer_products(data):
    """``X·W`` and ``X·D`` of the first layer: a lower limit on any degree-2 bound pass.

    ``h(0)`` needs ``X·W``; the exact slope ``h'(0)`` needs ``X·D`` (or the backward ``Xᵀ·δ``,
    the same size), and so does any curvature bound sharper than one through ``|X|·|D|``.
    Summed so that only the products, not large outputs, are timed.
    """
    x, _, weights, directions = data
    return jnp.sum(x @ weights[0]) + jnp.sum(x @ directions[0])


def bound_fn(package, h, dtype):
    zero = jnp.zeros((), dtype)

    @jax.jit
    def bound(eta_max, data):
        bounds = package.taylor_bounds(lambda eta: h(eta, data), 2)(zero, (zero, eta_max))
        return bounds.coefficients

    return bound


def interval_cell(package, h, data, dtype, eta_max):
    try:
        lo, hi = bound_fn(package, h, dtype)(jnp.asarray(eta_max, dtype), data)[-1]
    except Exception as error:  # noqa: BLE001 - the table reports what the package did
        return f"error: {type(error).__name__}"
    return f"[{float(lo):.4g}, {float(hi):.4g}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--depth", type=int, default=1, help="hidden layers of the timed MLP")
    parser.add_argument("--width", type=int, default=None, help="its hidden width")
    parser.add_argument("--inputs", type=int, default=None, help="its number of inputs")
    args = parser.parse_args()
    if theirs is None:
        raise SystemExit("the public `autobound` package is not installed here; see the docstring")
    width, n, repeats = (256, 1000, 5) if args.quick else (1000, 10000, 7)
    width, n = args.width or width, args.inputs or n

    print(
        f"# optax_saferate.autobound vs autobound 0.1.7 (jax {jax.__version__}, "
        f"{jax.devices()[0].device_kind})\n"
    )
    h, data = mlp_direction_loss(args.depth, width, n, jnp.float32)
    eta = jnp.asarray(1.0, jnp.float32)
    ours_bound, their_bound = bound_fn(ours, h, jnp.float32), bound_fn(theirs, h, jnp.float32)
    value_and_grad = jax.jit(jax.value_and_grad(h))
    floor = jax.jit(first_layer_products)
    runs = [
        lambda: ours_bound(eta, data),
        lambda: their_bound(eta, data),
        lambda: value_and_grad(eta, data),
        lambda: floor(data),
    ]
    for fn in runs:
        jax.block_until_ready(fn())
    blocking = [lambda fn=fn: jax.block_until_ready(fn()) for fn in runs]
    ours_s, theirs_s, vg_s, floor_s = interleaved_median(blocking, repeats)
    layers = "-".join([str(width)] * args.depth)
    print(f"| bound pass, MLP 784-{layers}-10 softplus MSE, {n} inputs | ms | / value_and_grad |")
    print("|---|---|---|")
    print(f"| optax_saferate | {1e3 * ours_s:.1f} | {ours_s / vg_s:.2f}x |")
    print(f"| autobound 0.1.7 | {1e3 * theirs_s:.1f} | {theirs_s / vg_s:.2f}x |")
    print(
        f"| floor: the first layer's `X·W` and `X·D` alone | {1e3 * floor_s:.1f} | "
        f"{floor_s / vg_s:.2f}x |"
    )
    print(f"| speed-up | {theirs_s / ours_s:.2f}x (at most {theirs_s / floor_s:.2f}x) | |\n")

    print(
        "| hidden layers | η_max | true c2 | ours f32 | ours f64 | autobound f32 | autobound f64 |"
    )
    print("|---|---|---|---|---|---|---|")
    for depth in (1, 2, 4, 8):
        h, data32 = mlp_direction_loss(depth, 64, 256, jnp.float32, inputs=32)
        for eta_max in (1e-2, 1.0):
            # float32 with x64 off (how float32 users run); float64 on the same rounded data.
            cells32 = [interval_cell(p, h, data32, jnp.float32, eta_max) for p in (ours, theirs)]
            with jax.enable_x64(True):
                data64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), data32)
                true_c2 = float(jax.grad(jax.grad(h))(jnp.float64(0.0), data64)) / 2
                cells64 = [
                    interval_cell(p, h, data64, jnp.float64, eta_max) for p in (ours, theirs)
                ]
            cells = [cells32[0], cells64[0], cells32[1], cells64[1]]
            print(f"| {depth} | {eta_max:g} | {true_c2:.4g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
