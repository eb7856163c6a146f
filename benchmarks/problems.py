"""The MLP problems the benchmarks share (same initialisation, so their numbers are comparable)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def dense(key, n_in, n_out):
    """One He-initialised dense layer with zero bias."""
    return {"w": jax.random.normal(key, (n_in, n_out)) * np.sqrt(2.0 / n_in), "b": jnp.zeros(n_out)}


def dense_layers(key, sizes):
    """Dense layers ``sizes[0] -> sizes[1] -> …``, one key split off ``key`` per layer."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [dense(k, a, b) for k, a, b in zip(keys, sizes, sizes[1:], strict=False)]


def mlp(widths, activation, loss_kind, images, labels):
    """``(loss, params)``: an MLP on the flattened images, softmax cross-entropy (``"ce"``) or
    squared error against one-hot labels (``"mse"``), full batch."""
    x = jnp.asarray(images.reshape(len(images), -1))
    y = jnp.asarray(labels)
    params = dense_layers(jax.random.PRNGKey(0), [x.shape[1], *widths, 10])

    def loss(params):
        h = x
        for i, layer in enumerate(params):
            h = h @ layer["w"] + layer["b"]
            if i < len(params) - 1:
                h = activation(h)
        if loss_kind == "ce":
            return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()
        return jnp.mean((h - jax.nn.one_hot(y, 10)) ** 2)

    return loss, params


def mm_problems():
    """The small problems of the MM benchmark and tests/test_mm.py: (loss, x0) by name
    (linear, logistic and Poisson regression with 5 features and 100 samples, 2-D Rosenbrock)."""
    rng = np.random.default_rng(0)
    n, m = 5, 100
    a = rng.normal(size=(m, n))
    w_true = 0.5 * rng.normal(size=n)
    y_linear = a @ w_true + 0.1 * rng.normal(size=m)
    y_logistic = np.where(rng.random(m) < 1 / (1 + np.exp(-a @ w_true)), 1.0, -1.0)
    y_poisson = rng.poisson(np.exp(0.3 * a @ w_true)).astype(float)
    return {
        "linear": (lambda w: 0.5 * jnp.mean((a @ w - y_linear) ** 2), np.zeros(n)),
        "logistic": (lambda w: jnp.mean(jax.nn.softplus(-y_logistic * (a @ w))), np.zeros(n)),
        "poisson": (
            lambda w: jnp.mean(jnp.exp(0.3 * (a @ w)) - y_poisson * 0.3 * (a @ w)),
            np.zeros(n),
        ),
        "rosenbrock": (
            lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2,
            np.array([-1.2, 1.0]),
        ),
    }
