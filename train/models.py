"""Flax NNX classifiers built from a config: an MLP and a small CNN.

Both are deterministic (no dropout, no batch statistics) and use only ordinary JAX operations
(``nnx.Linear``, ``nnx.Conv``, ``jax.nn`` activations, ``nnx.max_pool``/``nnx.avg_pool``), so the
loss they define can be bounded by AutoBound and differentiated twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
}
POOLINGS = {"max": nnx.max_pool, "avg": nnx.avg_pool}
MODELS = ("mlp", "cnn")


class MLP(nnx.Module):
    """Fully connected classifier: flatten, hidden layers with an activation, linear logits."""

    def __init__(
        self,
        input_size: int,
        hidden_sizes: Sequence[int],
        num_classes: int,
        activation: str = "relu",
        *,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        sizes = (input_size, *hidden_sizes, num_classes)
        self.layers = nnx.List(
            [
                nnx.Linear(fan_in, fan_out, dtype=dtype, param_dtype=dtype, rngs=rngs)
                for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.activation = activation

    def __call__(self, inputs: jax.Array) -> jax.Array:
        activation = ACTIVATIONS[self.activation]
        outputs = inputs.reshape(inputs.shape[0], -1)
        for layer in self.layers[:-1]:
            outputs = activation(layer(outputs))
        return self.layers[-1](outputs)


class CNN(nnx.Module):
    """Convolutional classifier: [conv ('SAME') -> activation -> pooling] x n, then an MLP head."""

    def __init__(
        self,
        input_shape: Sequence[int],
        conv_features: Sequence[int],
        dense_sizes: Sequence[int],
        num_classes: int,
        activation: str = "relu",
        kernel_size: int = 3,
        pooling: str = "max",
        pool_size: int = 2,
        *,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        height, width, channels = input_shape
        features = (channels, *conv_features)
        self.convs = nnx.List(
            [
                nnx.Conv(
                    fan_in,
                    fan_out,
                    kernel_size=(kernel_size, kernel_size),
                    dtype=dtype,
                    param_dtype=dtype,
                    rngs=rngs,
                )
                for fan_in, fan_out in zip(features[:-1], features[1:], strict=True)
            ]
        )
        for _ in conv_features:
            height, width = height // pool_size, width // pool_size
        self.head = MLP(
            height * width * features[-1],
            dense_sizes,
            num_classes,
            activation,
            dtype=dtype,
            rngs=rngs,
        )
        self.activation = activation
        self.pooling = pooling
        self.pool_size = pool_size

    def __call__(self, inputs: jax.Array) -> jax.Array:
        activation = ACTIVATIONS[self.activation]
        pool = POOLINGS[self.pooling]
        window = (self.pool_size, self.pool_size)
        outputs = inputs
        for conv in self.convs:
            outputs = pool(activation(conv(outputs)), window_shape=window, strides=window)
        return self.head(outputs)


def validate_model_config(
    config: ml_collections.ConfigDict, input_shape: Sequence[int] | None = None
) -> None:
    """Checks the ``model`` section; with ``input_shape`` also that the model fits the data.

    Raises:
      ValueError: naming the offending ``model.*`` field.
    """
    if config.name not in MODELS:
        raise ValueError(
            f"config.model.name={config.name!r} is not known; allowed: {', '.join(MODELS)}."
        )
    if config.activation not in ACTIVATIONS:
        raise ValueError(
            f"config.model.activation={config.activation!r} is not known; "
            f"allowed: {', '.join(ACTIVATIONS)}."
        )
    size_fields = ["hidden_sizes"] if config.name == "mlp" else ["conv_features", "dense_sizes"]
    for field in size_fields:
        sizes = config[field]
        if not all(isinstance(size, int) and size > 0 for size in sizes):
            raise ValueError(f"config.model.{field}={sizes!r} must be positive integers.")
    if config.name == "mlp":
        return
    if not config.conv_features:
        raise ValueError("config.model.conv_features is empty; a CNN needs at least one layer.")
    if config.pooling not in POOLINGS:
        raise ValueError(
            f"config.model.pooling={config.pooling!r} is not known; allowed: {', '.join(POOLINGS)}."
        )
    for field in ("kernel_size", "pool_size"):
        if not isinstance(config[field], int) or config[field] < 1:
            raise ValueError(f"config.model.{field}={config[field]!r} must be a positive integer.")
    if input_shape is not None:
        height, width = input_shape[0], input_shape[1]
        num_layers = len(config.conv_features)
        if min(height, width) < config.pool_size**num_layers:
            raise ValueError(
                f"config.model.conv_features has {num_layers} layers, each pooling by "
                f"config.model.pool_size={config.pool_size}, which reduces the "
                f"{height}x{width} images of this dataset to nothing; use fewer layers or a "
                "smaller pool_size."
            )


def build_model(
    config: ml_collections.ConfigDict,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Builds the model that the ``model`` config section describes, for the given data shape."""
    validate_model_config(config, input_shape)
    if config.name == "mlp":
        return MLP(
            math.prod(input_shape),
            config.hidden_sizes,
            num_classes,
            config.activation,
            dtype=dtype,
            rngs=rngs,
        )
    return CNN(
        input_shape,
        config.conv_features,
        config.dense_sizes,
        num_classes,
        config.activation,
        config.kernel_size,
        config.pooling,
        config.pool_size,
        dtype=dtype,
        rngs=rngs,
    )
