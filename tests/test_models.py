"""Models: shapes, activations, pooling, dtypes and config validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from train_testing import small_config

from train import models


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.mark.parametrize("activation", sorted(models.ACTIVATIONS))
def test_mlp_every_activation(activation):
    config = small_config(model__activation=activation, model__hidden_sizes=(8, 6)).model
    model = models.build_model(config, (4, 4, 1), 3, dtype=jnp.float32, rngs=nnx.Rngs(0))
    logits = jax.jit(lambda inputs: model(inputs))(jnp.ones((5, 4, 4, 1)))
    assert logits.shape == (5, 3)
    assert bool(jnp.all(jnp.isfinite(logits)))
    kernels = [layer.kernel[...].shape for layer in model.layers]
    assert kernels == [(16, 8), (8, 6), (6, 3)]


@pytest.mark.parametrize("pooling", sorted(models.POOLINGS))
def test_cnn_shapes_and_pooling(pooling):
    config = small_config(
        model__name="cnn", model__conv_features=(3, 5), model__pooling=pooling
    ).model
    model = models.build_model(config, (12, 8, 2), 4, dtype=jnp.float32, rngs=nnx.Rngs(1))
    assert jax.jit(lambda inputs: model(inputs))(jnp.ones((2, 12, 8, 2))).shape == (2, 4)
    # Two 2x2 poolings: 12x8 -> 3x2 with 5 channels into the head.
    assert model.head.layers[0].kernel[...].shape == (3 * 2 * 5, 8)


def test_models_are_deterministic_and_bias_included():
    config = small_config().model
    model = models.build_model(config, (4, 4, 1), 3, dtype=jnp.float32, rngs=nnx.Rngs(0))
    _, state = nnx.split(model)
    assert all(
        isinstance(v, nnx.Param)
        for v in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    )
    inputs = jnp.arange(32.0).reshape(2, 4, 4, 1)
    np.testing.assert_array_equal(model(inputs), model(inputs))
    assert all(layer.bias is not None for layer in model.layers)


def test_float64_parameters():
    with jax.enable_x64(True):
        config = small_config().model
        model = models.build_model(config, (4, 4, 1), 3, dtype=jnp.float64, rngs=nnx.Rngs(0))
        assert model.layers[0].kernel[...].dtype == jnp.float64
        assert model(jnp.ones((1, 4, 4, 1), jnp.float64)).dtype == jnp.float64


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model__name": "resnet"}, "model.name"),
        ({"model__activation": "swish"}, "model.activation"),
        ({"model__hidden_sizes": (8, 0)}, "model.hidden_sizes"),
        ({"model__name": "cnn", "model__conv_features": ()}, "model.conv_features"),
        ({"model__name": "cnn", "model__pooling": "median"}, "model.pooling"),
        ({"model__name": "cnn", "model__kernel_size": 0}, "model.kernel_size"),
    ],
)
def test_invalid_model_config(overrides, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        models.validate_model_config(small_config(**overrides).model)


def test_cnn_that_pools_the_image_away_is_rejected():
    config = small_config(model__name="cnn", model__conv_features=(4, 4, 4)).model
    models.validate_model_config(config, (8, 8, 1))
    with pytest.raises(ValueError, match=r"model\.conv_features"):
        models.validate_model_config(config, (7, 8, 1))
