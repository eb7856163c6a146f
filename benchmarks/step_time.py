"""Cost of a SafeRate(Adam) step against a plain Adam step (issue 6, DESIGN §4.4).

For each model, both steps are whole jitted training steps (``value_and_grad`` + the optimizer
update) on the same full batch. Printed as a Markdown table of ratios measured in one run:

* step time: median over ``--repeats`` interleaved runs, ``block_until_ready`` after each;
* for the MLPs, the floor of that ratio: ``(Adam step + X·D) / Adam step``, with ``X·D`` the
  one large matmul the bound must add (the first layer's direction applied to the inputs),
  timed in the same interleaved runs;
* XLA temporary memory: ``compiled.memory_analysis().temp_size_in_bytes``;
* compile time: ``jit(...).lower(...).compile()`` wall time;
* traces: how many times the SafeRate step's Python body ran over all the calls (must be 1);
* for two smooth MLPs, SafeRate's step at ``working_degree`` 2 and 3 (the default) against
  Adam's (a relu net's bound lowers at its first relu, so there the two are the same pass);
* the bound pass alone (``taylor_bounds`` of ``h(η) = loss(params + η·u)``) over
  ``value_and_grad``, on the softplus + squared-error MLP the public ``autobound`` handles.

Usage:
  python benchmarks/step_time.py                  # full sizes (a few minutes on 2 CPU cores)
  python benchmarks/step_time.py --quick          # small sizes, seconds
  python benchmarks/step_time.py --data ../shared/data/fashion-mnist   # real images (IDX)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from problems import dense
from problems import mlp

import optax_saferate as osr
from optax_saferate import autobound as ab


def load_images(directory: str | None, count: int, seed: int = 0):
    """``count`` Fashion-MNIST training images in [0, 1] (random pixels if there is no data)."""
    if directory and Path(directory).exists():
        from train import data as train_data

        raw = train_data.load_idx_directory(directory)
        images = raw.train_images[:count].astype(np.float32) / 255.0
        labels = raw.train_labels[:count].astype(np.int32)
        return images.reshape(len(images), 28, 28, 1), labels, "Fashion-MNIST"
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(count, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, size=count).astype(np.int32)
    return images, labels, "random pixels"


def cnn(images, labels):
    """Two 3x3 conv layers (16, 32 channels) with relu and 2x2 max-pooling, then a dense head."""
    x, y = jnp.asarray(images), jnp.asarray(labels)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {
        "conv1": jax.random.normal(k1, (3, 3, 1, 16)) * np.sqrt(2.0 / 9),
        "conv2": jax.random.normal(k2, (3, 3, 16, 32)) * np.sqrt(2.0 / 144),
        "dense": dense(k3, 7 * 7 * 32, 10),
    }

    def block(h, kernel):
        h = jax.lax.conv_general_dilated(
            h, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.relu(h)
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def loss(params):
        h = block(block(x, params["conv1"]), params["conv2"])
        logits = h.reshape(h.shape[0], -1) @ params["dense"]["w"] + params["dense"]["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return loss, params


def make_step(tx, loss, counter=None):
    def step(params, state):
        if counter is not None:
            counter.append(None)
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grads, state, params, value_fn=loss, value=value)
        return optax.apply_updates(params, updates), state, value

    return jax.jit(step)


def compile_stats(step, params, state):
    start = time.perf_counter()
    compiled = step.lower(params, state).compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    return compiled, seconds, getattr(memory, "temp_size_in_bytes", float("nan"))


def interleaved_median(runners, repeats):
    """Median seconds per call of each runner, calls interleaved so drift hits all alike."""
    times = [[] for _ in runners]
    for _ in range(repeats):
        for i, run in enumerate(runners):
            start = time.perf_counter()
            run()
            times[i].append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def first_layer_product(images, params):
    """``X·D`` for an MLP's first layer, jitted: the one large matmul a SafeRate step must add.

    Adam's step already holds the other two (``X·W`` forward, ``Xᵀ·δ`` backward); SafeRate's
    bound needs the direction's effect on every first-layer preactivation, ``X·D``. So
    ``(Adam step + X·D) / Adam step`` is the floor of the time ratio whatever the bound costs.

    The product is written whole, as in the step, into a buffer it was given (donated, so XLA
    writes in place): a summed product never writes its ``N × width`` output (about 20% faster
    here), and a fresh output would pay for first-touch page faults the step does not pay for
    that array.
    """
    x = jnp.asarray(images.reshape(len(images), -1))
    direction = -1e-2 * jnp.sign(params[0]["w"] + 1e-3)
    product = jax.jit(
        lambda x, d, out: jax.lax.dynamic_update_slice(out, x @ d, (0, 0)), donate_argnums=2
    )
    buffer = {"out": jnp.zeros((x.shape[0], direction.shape[1]), x.dtype)}

    def run():
        buffer["out"] = jax.block_until_ready(product(x, direction, buffer["out"]))

    return run


# Options of osr.saferate for every SafeRate step timed (--saferate-options).
SAFERATE_OPTIONS: dict = {}


def measure_model(name, loss, params, repeats, floor=None):
    adam = optax.adam(1e-3)
    safe = osr.saferate(optax.adam(1.0), **SAFERATE_OPTIONS)
    traces = []
    adam_step = make_step(adam, loss)
    safe_step = make_step(safe, loss, traces)
    adam_state, safe_state = adam.init(params), safe.init(params)
    adam_compiled, adam_compile_s, adam_temp = compile_stats(adam_step, params, adam_state)
    safe_compiled, safe_compile_s, safe_temp = compile_stats(safe_step, params, safe_state)
    carry = {"adam": (params, adam_state), "safe": (params, safe_state)}

    def run_adam():
        p, s, v = adam_compiled(*carry["adam"])
        jax.block_until_ready(v)
        carry["adam"] = (p, s)

    def run_safe():
        p, s, v = safe_step(*carry["safe"])
        jax.block_until_ready(v)
        carry["safe"] = (p, s)

    run_adam(), run_safe()  # warm up (and trace the jitted SafeRate step once)
    runners = [run_adam, run_safe] + ([floor] if floor is not None else [])
    if floor is not None:
        floor()
    adam_s, safe_s, *floor_s = interleaved_median(runners, repeats)
    return {
        "floor_ratio": (adam_s + floor_s[0]) / adam_s if floor_s else float("nan"),
        "model": name,
        "adam_ms": 1e3 * adam_s,
        "saferate_ms": 1e3 * safe_s,
        "time_ratio": safe_s / adam_s,
        "memory_ratio": safe_temp / adam_temp,
        "adam_temp_mib": adam_temp / 2**20,
        "saferate_temp_mib": safe_temp / 2**20,
        "compile_ratio": safe_compile_s / adam_compile_s,
        "traces": len(traces),
    }


def measure_bound_pass(name, loss, params, repeats):
    """The bound pass alone over ``value_and_grad`` (both jitted)."""
    direction = jax.tree.map(lambda p: -1e-2 * jnp.sign(p + 1e-3), params)

    @jax.jit
    def bound(params, direction):
        def along(eta):
            return loss(jax.tree.map(lambda p, u: p + eta * u, params, direction))

        return ab.taylor_bounds(along, 2)(np.zeros((), np.float32), (0.0, 1.0)).coefficients

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    jax.block_until_ready(bound(params, direction))
    jax.block_until_ready(value_and_grad(params))
    bound_s, vg_s = interleaved_median(
        [
            lambda: jax.block_until_ready(bound(params, direction)),
            lambda: jax.block_until_ready(value_and_grad(params)),
        ],
        repeats,
    )
    return {
        "model": name,
        "bound_ms": 1e3 * bound_s,
        "value_and_grad_ms": 1e3 * vg_s,
        "ratio": bound_s / vg_s,
    }


def print_step_table(images, labels, quick, repeats):
    """The issue's three models, one Markdown row each (``images`` holds at least 10,000)."""
    n_mlp, n_cnn, hidden, deep = (1000, 200, 256, 128) if quick else (10000, 1000, 1000, 512)
    images, labels = images[:n_mlp], labels[:n_mlp]
    relu = jax.nn.relu
    models = [
        (f"MLP 784-{hidden}-10 relu CE, {n_mlp} images", mlp([hidden], relu, "ce", images, labels)),
        (f"MLP 4x{deep} relu CE, {n_mlp} images", mlp([deep] * 4, relu, "ce", images, labels)),
        (f"CNN conv16-conv32-dense relu CE, {n_cnn} images", cnn(images[:n_cnn], labels[:n_cnn])),
    ]
    print(
        "| model | Adam step (ms) | SafeRate step (ms) | time ratio | floor (Adam + X·D) | "
        "temp memory ratio (MiB) | compile ratio | traces |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for i, (name, (loss, params)) in enumerate(models):
        floor = first_layer_product(images, params) if i < 2 else None
        r = measure_model(name, loss, params, repeats, floor)
        floor_cell = f"{r['floor_ratio']:.2f}x" if floor is not None else "—"
        print(
            f"| {r['model']} | {r['adam_ms']:.2f} | {r['saferate_ms']:.2f} | "
            f"{r['time_ratio']:.2f}x | {floor_cell} | {r['memory_ratio']:.2f}x "
            f"({r['adam_temp_mib']:.1f} → {r['saferate_temp_mib']:.1f}) | "
            f"{r['compile_ratio']:.2f}x | {r['traces']} |"
        )


def measure_working_degrees(loss, params, repeats, degrees=(2, 3)):
    """Adam's step and SafeRate(Adam)'s at each ``working_degree``, interleaved in one run."""
    carries, runners = {}, []
    for key, tx in [("adam", optax.adam(1e-3))] + [
        (m, osr.saferate(optax.adam(1.0), working_degree=m, **SAFERATE_OPTIONS)) for m in degrees
    ]:
        step = make_step(tx, loss)
        carries[key] = (params, tx.init(params))

        def run(step=step, key=key):
            p, s, v = step(*carries[key])
            jax.block_until_ready(v)
            carries[key] = (p, s)

        run()  # compile
        runners.append(run)
    adam_s, *safe_s = interleaved_median(runners, repeats)
    return adam_s, dict(zip(degrees, safe_s, strict=True))


def print_working_degree_table(images, labels, quick, repeats):
    """Smooth MLPs, where ``working_degree`` matters (a relu net lowers at its first relu)."""
    softplus = jax.nn.softplus
    n = 300 if quick else 5000
    models = [(f"MLP 784-128-10 softplus CE, {n} images", [128], n)]
    if not quick:  # --quick (the test's run) keeps the one cheap model
        models.append(("MLP 4x128 softplus CE, 2000 images", [128] * 4, 2000))
    print("\n| smooth model | Adam step (ms) | SafeRate, working_degree=2 | working_degree=3 |")
    print("|---|---|---|---|")
    for name, hidden, n in models:
        loss, params = mlp(hidden, softplus, "ce", images[:n], labels[:n])
        adam_s, safe_s = measure_working_degrees(loss, params, repeats)
        cells = " | ".join(f"{1e3 * safe_s[m]:.2f} ({safe_s[m] / adam_s:.2f}x)" for m in (2, 3))
        print(f"| {name} | {1e3 * adam_s:.2f} | {cells} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument(
        "--data",
        default="../shared/data/fashion-mnist",
        help="directory with Fashion-MNIST IDX files (random pixels if absent)",
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--saferate-options",
        default="{}",
        help='JSON options of osr.saferate, e.g. \'{"trust_region": "halving"}\'',
    )
    args = parser.parse_args()
    SAFERATE_OPTIONS.update(json.loads(args.saferate_options))
    n_mlp, hidden = (1000, 256) if args.quick else (10000, 1000)
    repeats = args.repeats or (5 if args.quick else 15)
    images, labels, source = load_images(args.data, n_mlp)
    print(
        f"# SafeRate(Adam) step vs Adam step — {jax.devices()[0].device_kind}, "
        f"{source}, float32, full batch\n"
    )
    print_step_table(images, labels, args.quick, repeats)
    print_working_degree_table(images, labels, args.quick, repeats)
    print("\n| bound pass (softplus + squared error) | bound (ms) | value_and_grad (ms) | ratio |")
    print("|---|---|---|---|")
    loss, params = mlp([hidden], jax.nn.softplus, "mse", images, labels)
    r = measure_bound_pass(f"MLP 784-{hidden}-10, {n_mlp} images", loss, params, repeats)
    print(
        f"| {r['model']} | {r['bound_ms']:.1f} | {r['value_and_grad_ms']:.1f} | {r['ratio']:.2f}x |"
    )


if __name__ == "__main__":
    main()
