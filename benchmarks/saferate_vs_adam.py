"""SafeRate(Adam) against Adam at every learning rate of a grid, full batch (issue 3).

For each problem, the final training loss after a fixed number of full-batch steps of
``saferate(adam(1.0))`` (no tuning) and of ``adam(lr)`` for lr in 1e-4 … 1 (half-decades), plus
SafeRate's median step time over Adam's. Also checks that SafeRate's training loss never went
up (full batch). Real Fashion-MNIST images when ``--data`` points at the IDX files, else the
embedded 6,000-image subset shipped with the package.

Usage:
  python benchmarks/saferate_vs_adam.py --data ../shared/data/fashion-mnist [--steps 100]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from problems import dense_layers
from problems import mlp

import optax_saferate as osr

GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def load(directory, count):
    from train import data as train_data

    if directory and Path(directory).exists():
        raw, source = train_data.load_idx_directory(directory), "Fashion-MNIST (IDX)"
    else:
        raw, source = train_data.load_embedded(), "embedded Fashion-MNIST subset"
    images = raw.train_images[:count].astype(np.float32) / 255.0
    labels = raw.train_labels[:count].astype(np.int32)
    return images.reshape(len(images), 28, 28, 1), labels, source


def mlp_problem(images, labels, hidden, activation=jax.nn.relu):
    return mlp(hidden, activation, "ce", images, labels)


def cnn_problem(images, labels):
    x, y = jnp.asarray(images), jnp.asarray(labels)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {
        "c1": jax.random.normal(k1, (3, 3, 1, 8)) * np.sqrt(2.0 / 9),
        "b1": jnp.full(8, 0.01),
        "c2": jax.random.normal(k2, (3, 3, 8, 16)) * np.sqrt(2.0 / 72),
        "b2": jnp.full(16, 0.01),
        "dense": dense_layers(k3, [7 * 7 * 16, 10])[0],
    }

    def block(h, kernel, bias):
        h = jax.lax.conv_general_dilated(
            h, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.relu(h + bias)
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def loss(params):
        h = block(block(x, params["c1"], params["b1"]), params["c2"], params["b2"])
        logits = h.reshape(h.shape[0], -1) @ params["dense"]["w"] + params["dense"]["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return loss, params


def train(tx, loss, params, steps):
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grads, state, params, value_fn=loss, value=value)
        return optax.apply_updates(params, updates), state, value

    params, state, value = step(params, state)  # compile
    values, times = [float(value)], []
    for _ in range(steps - 1):
        start = time.perf_counter()
        params, state, value = step(params, state)
        value = float(value)
        times.append(time.perf_counter() - start)
        values.append(value)
    values.append(float(loss(params)))
    return np.array(values), float(np.median(times)), state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/fashion-mnist")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    images, labels, source = load(args.data, 5000)
    problems = {
        "logistic regression, 5,000 images": mlp_problem(images, labels, []),
        "MLP 784-128-10 relu, 5,000 images": mlp_problem(images, labels, [128]),
        "MLP 784-128-10 softplus, 5,000 images": mlp_problem(
            images, labels, [128], jax.nn.softplus
        ),
        "MLP 4x128 relu, 2,000 images": mlp_problem(images[:2000], labels[:2000], [128] * 4),
        "MLP 4x128 softplus, 2,000 images": mlp_problem(
            images[:2000], labels[:2000], [128] * 4, jax.nn.softplus
        ),
        "CNN conv8-conv16 max-pool relu, 500 images": cnn_problem(images[:500], labels[:500]),
    }
    print(f"# Final training loss after {args.steps} full-batch steps — {source}, float32\n")
    header = "| problem | SafeRate(Adam) | monotone | " + " | ".join(f"Adam {lr:g}" for lr in GRID)
    print(header + " | best Adam | SafeRate step / Adam step |")
    print("|---" * (len(GRID) + 5) + "|")
    for name, (loss, params) in problems.items():
        safe, safe_time, _ = train(osr.saferate(optax.adam(1.0)), loss, params, args.steps)
        rounding = 8 * np.finfo(np.float32).eps * np.abs(safe[:-1])
        monotone = bool(np.all(np.diff(safe) <= rounding))
        finals, adam_time = [], None
        for lr in GRID:
            values, step_time, _ = train(optax.adam(lr), loss, params, args.steps)
            finals.append(values[-1])
            adam_time = step_time if adam_time is None else min(adam_time, step_time)
        best = int(np.nanargmin(np.where(np.isfinite(finals), finals, np.inf)))
        cells = " | ".join(f"{v:.4g}" for v in finals)
        print(
            f"| {name} | {safe[-1]:.4g} | {'yes' if monotone else 'NO'} | {cells} | "
            f"{finals[best]:.4g} (lr {GRID[best]:g}) | {safe_time / adam_time:.2f}x |"
        )


if __name__ == "__main__":
    main()
