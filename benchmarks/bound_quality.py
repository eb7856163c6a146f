"""Bound quality and cost of AutoBound's degree-2 enclosures on neural-network losses.

Usage::

    python benchmarks/bound_quality.py            # full run (a few minutes on 2 CPU cores)
    python benchmarks/bound_quality.py --quick    # about a minute: depths 1 and 8 only, three
                                                  # trust regions, timing on smaller batches
    python benchmarks/bound_quality.py --data-dir /path/to/fashion-mnist

Prints three Markdown tables for ``h(eta) = loss(params + eta * direction)``, the function that
SafeRate bounds, where ``loss`` is the mean softmax cross-entropy of an MLP:

(a) float32 vs float64: the degree-2 interval of ``taylor_bounds(h, 2)(0, (0, eta))`` in both
    precisions, by depth (1, 2, 4, 8 hidden layers of width 64; softplus and tanh) and trust-region
    size ``eta`` (decades from 1e-4 to 1), beside the true ``c2 = h''(0)/2`` (float64,
    forward-over-forward autodiff), with the width ratio and whether each interval contains ``c2``.
(b) ours vs classical (float64): the same engine with each elementwise function's remainder
    replaced by the *classical* one, ``[min σ'', max σ''] / 2`` over the function's input range
    (``elementwise.remainder_interval`` is monkeypatched inside this process only), beside the
    range of ``h''/2`` and of ``R2(eta) = (h(eta) - h(0) - h'(0) eta) / eta^2`` sampled on a fine
    grid over the trust region. The sampled range of ``h''/2`` is the best a method that bounds the
    second derivative over the region could give; the sampled range of ``R2`` is (up to sampling)
    the tightest valid degree-2 interval of all.
(c) cost: one jitted bound pass (``taylor_bounds(h, 2)`` up to the final interval) over one jitted
    ``jax.value_and_grad(loss)``, float32, median of repeated runs, for an MLP 784-1000-10 (relu,
    10,000 inputs; 2,000 with ``--quick``) and a small CNN (conv 3x3x16, max-pool, conv 3x3x32,
    max-pool, dense; 1,000 images of 28x28; 200 with ``--quick``).

Inputs are Fashion-MNIST images read from the IDX files in ``--data-dir`` (default
``/work/shared/data/fashion-mnist``); if they are absent, random data of the same shape is used
(the tables say which). The direction is Adam-like: the first Adam update from a fresh state is
``-sign(grad)``; each layer's part is scaled by the root-mean-square of that layer's weight matrix,
so that ``||direction_W|| = ||W||`` for every weight matrix and ``eta`` is the step size relative to
the weights. Weights are LeCun-normal, biases zero (networks at initialisation).

This script is a measurement, not a test; it exits 0 whatever it measures.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import math
import os
import platform
import struct
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_saferate import autobound as ab
from optax_saferate.autobound import elementwise
from optax_saferate.autobound import intervals
from optax_saferate.autobound.intervals import Interval

# Float64 references beside float32 runs: every array below is created with an explicit dtype.
jax.config.update("jax_enable_x64", True)

DEFAULT_DATA_DIR = "/work/shared/data/fashion-mnist"


# --------------------------------------------------------------------------- data


def read_idx(path: Path) -> np.ndarray:
    """An MNIST-style IDX file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_images(data_dir: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` images (float32 in [0, 1], shape (n, 28, 28)) and labels, and the data's name."""
    directory = Path(data_dir)
    for suffix in (".gz", ""):
        images_path = directory / f"train-images-idx3-ubyte{suffix}"
        labels_path = directory / f"train-labels-idx1-ubyte{suffix}"
        if images_path.exists() and labels_path.exists():
            images, labels = read_idx(images_path), read_idx(labels_path)
            return (
                images[:n].astype(np.float32) / 255.0,
                labels[:n].astype(np.int32),
                "Fashion-MNIST",
            )
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 1.0, (n, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, n).astype(np.int32)
    return images, labels, "random (Fashion-MNIST not found)"


# --------------------------------------------------------------------------- models


def init_mlp(key, sizes, dtype=jnp.float32):
    """LeCun-normal weights, zero biases."""
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        key, sub = jax.random.split(key)
        w = jax.random.normal(sub, (fan_in, fan_out), dtype) / math.sqrt(fan_in)
        params.append({"w": w, "b": jnp.zeros((fan_out,), dtype)})
    return params


def mlp(params, x, activation):
    for layer in params[:-1]:
        x = activation(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def init_cnn(key, dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(key, 3)
    return [
        {"w": jax.random.normal(k1, (3, 3, 1, 16), dtype) / 3.0, "b": jnp.zeros((16,), dtype)},
        {"w": jax.random.normal(k2, (3, 3, 16, 32), dtype) / 12.0, "b": jnp.zeros((32,), dtype)},
        {
            "w": jax.random.normal(k3, (7 * 7 * 32, 10), dtype) / math.sqrt(7 * 7 * 32),
            "b": jnp.zeros((10,), dtype),
        },
    ]


def _max_pool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def cnn(params, x):
    """x: (n, 28, 28, 1) -> logits (n, 10)."""
    for layer in params[:2]:
        x = jax.lax.conv_general_dilated(
            x, layer["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        x = _max_pool(jax.nn.relu(x + layer["b"]))
    x = x.reshape(x.shape[0], -1)
    return x @ params[2]["w"] + params[2]["b"]


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def adam_like_direction(params, grads):
    """``-sign(grad)`` (Adam's first update), each layer scaled by the RMS of its weights."""
    direction = []
    for layer, grad in zip(params, grads, strict=True):
        scale = jnp.sqrt(jnp.mean(layer["w"] ** 2))
        direction.append({name: -jnp.sign(grad[name]) * scale for name in layer})
    return direction


def along(params, direction, eta):
    return jax.tree.map(lambda p, d: p + eta * d, params, direction)


def cast(tree, dtype):
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


# --------------------------------------------------------------------------- the classical bound


def classical_remainder_interval(spec, u0, r, degree, coefficients, far_end=None):
    """``[min σ^(k), max σ^(k)] / k!`` over the range ``r``: the classical Lagrange remainder.

    Same signature and the same domain handling as ``elementwise.remainder_interval`` (``r``
    already spans ``far_end`` when one is given).
    """
    del coefficients, far_end
    dtype = jnp.result_type(u0)
    inf = jnp.asarray(jnp.inf, dtype)
    ok = spec.in_domain(r)
    lo = jnp.where(ok, r.lo, u0)
    hi = jnp.where(ok, r.hi, u0)
    s = intervals.scale(spec.range_of_derivative(degree, lo, hi), 1.0 / math.factorial(degree))
    s_lo = jnp.where(ok & ~jnp.isnan(s.lo), s.lo, -inf)
    s_hi = jnp.where(ok & ~jnp.isnan(s.hi), s.hi, inf)
    return Interval(s_lo, s_hi)


@contextlib.contextmanager
def classical_remainders():
    """Within the block, the engine uses classical remainders for every smooth elementwise σ."""
    original = elementwise.remainder_interval
    elementwise.remainder_interval = classical_remainder_interval
    try:
        yield
    finally:
        elementwise.remainder_interval = original


# --------------------------------------------------------------------------- helpers


def degree2_interval(h, eta):
    """The degree-2 interval of ``h`` at 0 over ``[0, eta]`` (in ``eta``'s dtype)."""
    zero = jnp.zeros((), eta.dtype)
    return ab.taylor_bounds(h, 2)(zero, (zero, eta)).final_interval()


def fmt(x: float) -> str:
    if not np.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        return f"{x:.4g}"
    return f"{x:.3e}"


def fmt_interval(lo: float, hi: float) -> str:
    return f"[{fmt(lo)}, {fmt(hi)}]"


def ratio(a: float, b: float) -> str:
    if not (np.isfinite(a) and np.isfinite(b)) or b == 0:
        return "n/a"
    return f"{a / b:.3g}"


def contains(lo, hi, x) -> str:
    lo, hi = float(lo), float(hi)
    if np.isnan(lo) or np.isnan(hi):
        return "NaN"
    return "yes" if lo <= x <= hi else "NO"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


ACTIVATIONS = {"softplus": jax.nn.softplus, "tanh": jnp.tanh}


# --------------------------------------------------------------------------- (a) and (b)


def second_derivative(h):
    """``e -> (h(e), h'(e), h''(e))`` by forward-over-forward mode."""

    def first(e):
        return jax.jvp(h, (e,), (jnp.ones_like(e),))

    def both(e):
        (value, slope), (_, curvature) = jax.jvp(first, (e,), (jnp.ones_like(e),))
        return value, slope, curvature

    return both


def make_network_pass(activation, grid_points: int, fast_compile: bool = False):
    """One jitted function computing everything tables (a) and (b) need for one network.

    Returns ``(ours32, ours64, classical64, values, curvatures, grid)``: intervals per eta (a
    vmap over ``etas``), and ``h`` and ``h''`` in float64 on ``grid_points`` evenly spaced points
    of each ``[0, eta]``. The grid uses ``h`` with the first layer factored,
    ``(x W0) + e (x D0)`` (the same function, far cheaper to evaluate at many points).
    """

    def loss(params, x, y):
        return cross_entropy(mlp(params, x, activation), y)

    def run(params32, direction32, x32, y, etas):
        def h32(e):
            return loss(along(params32, direction32, e), x32, y)

        ours32 = jax.vmap(lambda eta: degree2_interval(h32, eta))(etas.astype(jnp.float32))
        # The float64 problem is the same function: the float32 numbers, widened exactly.
        params, direction = cast(params32, jnp.float64), cast(direction32, jnp.float64)
        x = x32.astype(jnp.float64)

        def h64(e):
            return loss(along(params, direction, e), x, y)

        ours64 = jax.vmap(lambda eta: degree2_interval(h64, eta))(etas)
        with classical_remainders():  # active while this part is traced
            classical64 = jax.vmap(lambda eta: degree2_interval(h64, eta))(etas)

        first, rest = params[0], params[1:]
        xw = x @ first["w"] + first["b"]
        xd = x @ direction[0]["w"] + direction[0]["b"]

        def h_factored(e):
            hidden = activation(xw + e * xd)
            return cross_entropy(mlp(along(rest, direction[1:], e), hidden, activation), y)

        grid = etas[:, None] * jnp.linspace(0.0, 1.0, grid_points, dtype=jnp.float64)
        values, _, curvatures = jax.vmap(second_derivative(h_factored))(grid.ravel())
        at_zero = second_derivative(h_factored)(jnp.zeros((), jnp.float64))
        return (
            ours32,
            ours64,
            classical64,
            values.reshape(grid.shape),
            curvatures.reshape(grid.shape),
            grid,
            at_zero,
        )

    # XLA's backend optimisation level changes compile time, not what is computed (the numbers
    # agree to the last few ulps); --quick lowers it to halve the compile time of this pass.
    options = {"xla_backend_optimization_level": 0} if fast_compile else None
    return jax.jit(run, compiler_options=options)


def remainder_ratio(values, grid, h0, h1, c2):
    """``R2(e) = (h(e) - h0 - h1 e) / e^2`` where rounding cannot swamp it, and ``R2(0) = c2``.

    The direct formula cancels for tiny ``e``; points whose rounding-error bound
    ``8 eps (|h| + |h0| + |h1 e|) / e^2`` exceeds ``1e-6 max(|c2|, 1)`` are skipped (there
    ``R2`` is within that distance of its limit ``c2`` anyway).
    """
    e = grid[1:]
    numerator = values[1:] - h0 - h1 * e
    rounding = 8 * np.finfo(np.float64).eps * (np.abs(values[1:]) + abs(h0) + np.abs(h1 * e))
    r2 = numerator / e**2
    keep = rounding / e**2 <= 1e-6 * max(abs(c2), 1.0)
    return np.concatenate([[c2], r2[keep]])


def quality_tables(images, labels, depths, etas, grid_points, seed, fast_compile=False):
    """Tables (a) and (b): one network per (activation, depth), every eta in one jitted pass."""
    x32 = jnp.asarray(images.reshape(len(images), -1), jnp.float32)
    y = jnp.asarray(labels)
    etas_array = jnp.asarray(etas, jnp.float64)
    rows_a, rows_b, problems = [], [], []
    for act_name, activation in ACTIVATIONS.items():
        run = make_network_pass(activation, grid_points, fast_compile)
        for depth in depths:
            sizes = [x32.shape[1]] + [64] * depth + [10]
            params32 = init_mlp(jax.random.PRNGKey(seed + depth), sizes)
            grads32 = jax.grad(lambda p, a=activation: cross_entropy(mlp(p, x32, a), y))(params32)
            direction32 = adam_like_direction(params32, grads32)
            out = jax.device_get(run(params32, direction32, x32, y, etas_array))
            ours32, ours64, classical64, values, curvatures, grid, at_zero = out
            assert ours32[0].dtype == np.float32, ours32[0].dtype
            h0, h1, c2 = float(at_zero[0]), float(at_zero[1]), float(at_zero[2]) / 2

            for i, eta in enumerate(etas):
                lo32, hi32 = float(ours32[0][i]), float(ours32[1][i])
                lo64, hi64 = float(ours64[0][i]), float(ours64[1][i])
                clo, chi = float(classical64[0][i]), float(classical64[1][i])
                w32, w64 = hi32 - lo32, hi64 - lo64
                in64, in32 = contains(lo64, hi64, c2), contains(lo32, hi32, c2)
                rows_a.append(
                    [
                        act_name,
                        str(depth),
                        f"{eta:g}",
                        fmt(c2),
                        fmt_interval(lo64, hi64),
                        fmt_interval(lo32, hi32),
                        ratio(w32, w64),
                        f"{in64} / {in32}",
                    ]
                )
                if in32 != "yes" or in64 != "yes":
                    problems.append(
                        f"{act_name} depth {depth} eta {eta:g}: f64 {fmt_interval(lo64, hi64)}, "
                        f"f32 {fmt_interval(lo32, hi32)}, true c2 {fmt(c2)}"
                    )

                hpp = curvatures[i] / 2
                r2 = remainder_ratio(values[i], grid[i], h0, h1, c2)
                best_w = float(r2.max() - r2.min())
                sound = "yes" if lo64 <= r2.min() and r2.max() <= hi64 else "NO"
                rows_b.append(
                    [
                        act_name,
                        str(depth),
                        f"{eta:g}",
                        fmt_interval(hpp.min(), hpp.max()),
                        fmt_interval(r2.min(), r2.max()),
                        fmt_interval(lo64, hi64),
                        fmt_interval(clo, chi),
                        ratio(chi - clo, w64),
                        ratio(w64, best_w),
                        sound,
                    ]
                )
                if sound != "yes" and in64 != "NaN":
                    problems.append(
                        f"{act_name} depth {depth} eta {eta:g}: f64 interval "
                        f"{fmt_interval(lo64, hi64)} misses the sampled R2 range "
                        f"{fmt_interval(r2.min(), r2.max())}"
                    )
    return rows_a, rows_b, problems


# --------------------------------------------------------------------------- (c)


def interleaved_times(calls, repeats: int) -> tuple[list[float], list[float]]:
    """Median run time of each ``(fn, args)`` and the time of its first call (compile + run).

    The calls alternate within every repetition, so that load from other processes on a shared
    machine affects them alike.
    """
    firsts = []
    for fn, args in calls:
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        firsts.append(time.perf_counter() - start)
        jax.block_until_ready(fn(*args))  # warm-up
    times = [[] for _ in calls]
    for _ in range(repeats):
        for (fn, args), record in zip(calls, times, strict=True):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            record.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times], firsts


def timing_row(name, loss, params, inputs, labels, repeats, problems):
    value_and_grad = jax.jit(jax.value_and_grad(loss))

    @jax.jit
    def bound(p, d, x, y, eta):
        return degree2_interval(lambda e: loss(along(p, d, e), x, y), eta)

    grads = value_and_grad(params, inputs, labels)[1]
    direction = adam_like_direction(params, grads)
    eta = jnp.float32(1e-2)
    (t_grad, t_bound), (first_grad, first_bound) = interleaved_times(
        [
            (value_and_grad, (params, inputs, labels)),
            (bound, (params, direction, inputs, labels, eta)),
        ],
        repeats,
    )
    intervals_at = []
    for eta in (1e-6, 1e-4, 1e-2):
        lo, hi = bound(params, direction, inputs, labels, jnp.float32(eta))
        assert lo.dtype == jnp.float32, lo.dtype
        intervals_at.append(fmt_interval(float(lo), float(hi)))
        if not (np.isfinite(float(lo)) and np.isfinite(float(hi))):
            problems.append(f"{name}, eta {eta:g}: float32 interval {intervals_at[-1]}")
    return [
        name,
        str(inputs.shape[0]),
        f"{1e3 * t_grad:.1f}",
        f"{1e3 * t_bound:.1f}",
        f"**{t_bound / t_grad:.2f}**",
        f"{first_grad:.1f} / {first_bound:.1f}",
        *intervals_at,
    ]


def timing_table(data_dir, n_mlp, n_cnn, repeats, seed, problems):
    images, labels, source = load_images(data_dir, max(n_mlp, n_cnn), seed)
    key = jax.random.PRNGKey(seed)

    def mlp_loss(p, x, y):
        return cross_entropy(mlp(p, x, jax.nn.relu), y)

    def cnn_loss(p, x, y):
        return cross_entropy(cnn(p, x), y)

    rows = [
        timing_row(
            "MLP 784-1000-10 relu",
            mlp_loss,
            init_mlp(key, [784, 1000, 10]),
            jnp.asarray(images[:n_mlp].reshape(n_mlp, -1)),
            jnp.asarray(labels[:n_mlp]),
            repeats,
            problems,
        ),
        timing_row(
            "CNN conv3x3x16-pool-conv3x3x32-pool-dense",
            cnn_loss,
            init_cnn(key),
            jnp.asarray(images[:n_cnn, :, :, None]),
            jnp.asarray(labels[:n_cnn]),
            repeats,
            problems,
        ),
    ]
    return rows, source


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.quick:
        depths, etas, n_quality, grid = (1, 8), (1e-4, 1e-2, 1.0), 256, 101
        n_mlp, n_cnn, repeats = 2_000, 200, 3
    else:
        depths, etas, n_quality, grid = (1, 2, 4, 8), (1e-4, 1e-3, 1e-2, 1e-1, 1.0), 512, 201
        n_mlp, n_cnn, repeats = 10_000, 1_000, 10

    started = time.perf_counter()
    images, labels, source = load_images(args.data_dir, n_quality, args.seed)
    print("# AutoBound bound quality and cost\n")
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()} "
        f"({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; mode: {'quick' if args.quick else 'full'}.\n"
    )
    print(
        f"h(eta) = mean softmax cross-entropy of an MLP (hidden width 64, {n_quality} {source} "
        "images, 784 inputs, 10 classes) at params + eta * direction; direction = -sign(grad) "
        "scaled per layer by the RMS of that layer's weights (Adam's first step, "
        "||d_W|| = ||W||). LeCun-normal weights, zero biases. Interval = degree-2 coefficient "
        "interval of taylor_bounds(h, 2)(0, (0, eta)).\n"
    )
    rows_a, rows_b, problems = quality_tables(
        images, labels, depths, etas, grid, args.seed, fast_compile=args.quick
    )
    quality_seconds = time.perf_counter() - started

    print("## (a) float32 vs float64\n")
    print(
        "true c2 = h''(0)/2 in float64 (forward-over-forward autodiff) of the same function "
        "(the float32 parameters and data, widened exactly). ratio = width(f32) / width(f64).\n"
    )
    print(
        table(
            [
                "act",
                "depth",
                "eta",
                "true c2",
                "ours f64",
                "ours f32",
                "ratio f32/f64",
                "contains c2 (f64 / f32)",
            ],
            rows_a,
        )
    )
    print("\n## (b) ours vs classical remainders (float64)\n")
    print(
        f"h''/2 range and R2 range: min and max over {grid} evenly spaced points of [0, eta] "
        "(R2(e) = (h(e) - h(0) - h'(0) e) / e^2, the remainder coefficient, whose range is the "
        "tightest valid interval; points where float64 rounding could move R2 by more than "
        "1e-6 |c2| are skipped, R2(0) = c2 is included). classical: the same engine with "
        "every elementwise remainder replaced by [min σ'', max σ'']/2 over its input range "
        "(the log-sum-exp composite, already a derivative-range bound, is unchanged). "
        "cl/ours = width ratio classical/ours; ours/best = width of ours / width of the R2 range; "
        "sound = ours contains every sampled R2.\n"
    )
    print(
        table(
            [
                "act",
                "depth",
                "eta",
                "h''/2 range (sampled)",
                "R2 range (sampled)",
                "ours",
                "classical",
                "cl/ours",
                "ours/best",
                "sound",
            ],
            rows_b,
        )
    )

    print("\n## (c) cost: bound pass / value_and_grad (float32, jitted)\n")
    timing_started = time.perf_counter()
    rows_c, source_c = timing_table(args.data_dir, n_mlp, n_cnn, repeats, args.seed, problems)
    timing_seconds = time.perf_counter() - timing_started
    print(
        f"Median of {repeats} runs after compile and one warm-up, the two calls alternating, "
        f"block_until_ready; data: "
        f"{source_c}. bound = jitted taylor_bounds(h, 2) up to the final interval (eta = 0.01, "
        "direction as above); ratio = bound / value_and_grad; first call = compile + one run. "
        "The intervals are the float32 degree-2 intervals of the timed bound.\n"
    )
    print(
        table(
            [
                "model",
                "inputs",
                "value_and_grad ms",
                "bound ms",
                "ratio",
                "first call s (vg / bound)",
                "interval, eta=1e-6",
                "interval, eta=1e-4",
                "interval, eta=1e-2",
            ],
            rows_c,
        )
    )

    print()
    if problems:
        print("## Problems seen\n")
        for p in problems:
            print(f"- {p}")
        print()
    print(
        f"Time: (a) and (b) {quality_seconds:.0f} s, (c) {timing_seconds:.0f} s, "
        f"total {time.perf_counter() - started:.0f} s."
    )


if __name__ == "__main__":
    main()
