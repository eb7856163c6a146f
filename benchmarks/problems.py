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
