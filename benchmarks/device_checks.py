"""Issue 6's GPU column, and what a GPU changes about soundness: one short script for a lent GPU.

Run it on a machine with an accelerator (it also runs on the CPU, e.g. with ``--quick`` to
check it before spending device time):

  python benchmarks/device_checks.py --data DIR_OR_NPZ [--quick]

``--data`` is a directory of Fashion-MNIST IDX files or an ``.npz`` holding ``images`` (uint8,
N×28×28) and ``labels``; random pixels are used without it. It prints four Markdown tables:

1. ``step_time.py``'s table (SafeRate(Adam) step vs Adam step: time, its floor, temporary
   memory, compile time, traces) for the relu MLP 784-1000-10, the 4x512 relu MLP and the CNN;
2. the bound pass over ``value_and_grad`` on the softplus + squared-error MLPs of
   ``compare_autobound.py`` (depth 1, 2, 4);
3. matmul precision: on GPUs JAX's default float32 matmul may run in TF32 (10-bit mantissa).
   The table gives the relative error of a default-precision ``X @ W`` against ``'highest'``,
   and whether the bound of ``h(η)`` computed at each precision contains ``h`` evaluated at
   ``'highest'`` precision on a grid of ``η`` (worst violation relative to ``|h|``);
4. full-batch SafeRate(Adam) training at each precision: the largest relative rise of the loss
   between consecutive steps (SafeRate promises none beyond rounding) and the final loss;
5. only when asked (``--sections steps-highest``): table 1 with every matmul at ``'highest'``.
"""

from __future__ import annotations

import argparse
import time
import traceback
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import step_time
from compare_autobound import bound_fn
from compare_autobound import mlp_direction_loss
from problems import mlp

import optax_saferate as osr
from optax_saferate import autobound as ab


def load(data: str | None, count: int):
    path = Path(data) if data else None
    if path is not None and path.suffix == ".npz" and path.is_file():
        arrays = np.load(path)
        images = arrays["images"][:count].astype(np.float32) / 255.0
        labels = arrays["labels"][:count].astype(np.int32)
        return images.reshape(len(images), 28, 28, 1), labels, "Fashion-MNIST"
    return step_time.load_images(data, count)


def highest_precision_steps(images, labels, quick, repeats):
    """The step table with every matmul at ``'highest'`` precision (no TF32): what the strict
    guarantee costs on a GPU."""
    print("\nAll matmuls at 'highest' precision:\n")
    with jax.default_matmul_precision("highest"):
        step_time.print_step_table(images, labels, quick, repeats)


def bound_pass_table(quick, repeats):
    configs = [(1, 256, 1000)] if quick else [(1, 1000, 10000), (2, 512, 5000), (4, 256, 5000)]
    print("\n| bound pass, softplus MSE | bound (ms) | value_and_grad (ms) | ratio |")
    print("|---|---|---|---|")
    eta = jnp.asarray(1.0, jnp.float32)
    for depth, width, n in configs:
        h, data = mlp_direction_loss(depth, width, n, jnp.float32)
        bound, value_and_grad = bound_fn(ab, h, jnp.float32), jax.jit(jax.value_and_grad(h))
        runs = [partial(bound, eta, data), partial(value_and_grad, eta, data)]
        for run in runs:
            jax.block_until_ready(run())
        bound_s, vg_s = step_time.interleaved_median(
            [lambda run=run: jax.block_until_ready(run()) for run in runs], repeats
        )
        layers = "-".join([str(width)] * depth)
        print(
            f"| 784-{layers}-10, {n} inputs | {1e3 * bound_s:.2f} | {1e3 * vg_s:.2f} | "
            f"{bound_s / vg_s:.2f}x |"
        )


def precision_table(quick):
    n = 1000 if quick else 10000
    h, data = mlp_direction_loss(2, 512, n, jnp.float32)
    x, w = data[0], data[2][0]
    with jax.default_matmul_precision("highest"):
        exact = jax.jit(lambda x, w: x @ w)(x, w)
    default = jax.jit(lambda x, w: x @ w)(x, w)
    error = float(jnp.max(jnp.abs(default - exact)) / jnp.max(jnp.abs(exact)))
    print(f"\ndefault-precision X @ W: max error {error:.2e} relative to max |X @ W|\n")
    print("| bound computed at | η_max | c1 | c2 interval | worst violation / abs(h) |")
    print("|---|---|---|---|---|")
    for eta_max in (1e-3, 1e-1, 1.0):
        grid = jnp.linspace(0.0, eta_max, 33, dtype=jnp.float32)
        with jax.default_matmul_precision("highest"):
            truth = jax.jit(jax.vmap(lambda t: h(t, data)))(grid)
        for precision in ("default", "highest"):
            with jax.default_matmul_precision(None if precision == "default" else "highest"):
                # Traced inside the context: its matmuls take that precision.
                bound = bound_fn(ab, h, jnp.float32)
                c0, c1, (c2_lo, c2_hi) = bound(jnp.float32(eta_max), data)
            lower = c0 + c1 * grid + c2_lo * grid**2
            upper = c0 + c1 * grid + c2_hi * grid**2
            worst = jnp.max(jnp.maximum(lower - truth, truth - upper) / jnp.abs(truth))
            print(
                f"| {precision} | {eta_max:g} | {float(c1):.5g} | "
                f"[{float(c2_lo):.5g}, {float(c2_hi):.5g}] | {float(worst):.2e} |"
            )


def training_table(images, labels, quick):
    n, steps, width = (1000, 20, 256) if quick else (10000, 60, 1000)
    print("\n| SafeRate(Adam), full batch | precision | largest relative rise | final loss |")
    print("|---|---|---|---|")
    for name, activation in (("relu", jax.nn.relu), ("softplus", jax.nn.softplus)):
        for precision in ("default", "highest"):
            with jax.default_matmul_precision(None if precision == "default" else "highest"):
                loss, params = mlp([width], activation, "ce", images[:n], labels[:n])
                tx = osr.saferate(optax.adam(1.0))
                step, state = step_time.make_step(tx, loss), tx.init(params)
                values = []
                for _ in range(steps):
                    params, state, value = step(params, state)
                    values.append(float(value))
            values = np.array(values)
            rise = float(np.max(np.diff(values) / np.abs(values[:-1])))
            print(
                f"| MLP 784-{width}-10 {name} CE, {n} images, {steps} steps | {precision} | "
                f"{rise:.2e} | {values[-1]:.4f} |"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="IDX directory or .npz (random pixels if absent)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--sections",
        default="steps,bound,precision,training",
        help="comma-separated subset of steps, bound, precision, training, steps-highest",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    images, labels, source = load(args.data, 1000 if args.quick else 10000)
    device = jax.devices()[0]
    print(f"# {device.platform}: {device.device_kind}, jax {jax.__version__}, {source}\n")
    sections = {
        "steps": partial(step_time.print_step_table, images, labels, args.quick, args.repeats),
        "bound": partial(bound_pass_table, args.quick, args.repeats),
        "precision": partial(precision_table, args.quick),
        "training": partial(training_table, images, labels, args.quick),
        "steps-highest": partial(highest_precision_steps, images, labels, args.quick, args.repeats),
    }
    for section in (sections[name] for name in args.sections.split(",")):
        # Device time is scarce: a section that fails reports why and the others still run.
        try:
            section()
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    print(f"\n({time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
