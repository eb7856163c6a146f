"""The float32 acceptance criterion of the AutoBound issue (DESIGN §3.3, "the float32 problem").

On an 8-hidden-layer softplus MLP and a 4-hidden-layer tanh MLP (width 64, 256 random inputs,
softmax cross-entropy), bounded along a random direction of the weights' scale from the trained
point ``x0 = 0`` over ``[0, eta]``: the float32 curvature interval contains the true
second-derivative coefficient (float64 ``jax.hessian / 2``) and is at most twice as wide as the
float64 interval computed on the same float32-rounded data.

Where the float64 interval itself is wider than float32 can represent (depth 8 at ``eta = 1``:
about 1e143), the float32 interval is necessarily infinite. That is still a valid enclosure, so
the requirement there is validity: ``±inf`` ends, never NaN.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import FLOAT32_RTOL

from optax_saferate import autobound as ab

pytestmark = pytest.mark.usefixtures("autobound_numerics")

ETAS = np.array([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _network_loss(depth, activation, seed, width=64, inputs=256, features=32, classes=10):
    """``x -> mean cross-entropy of the MLP with parameters p + x·d``, data rounded to float32.

    Weights ``N(0, 1/fan_in)``, biases ``N(0, 0.01)``; the direction has the same scales.
    """
    rng = np.random.default_rng(seed)
    sizes = [features] + [width] * depth + [classes]
    layers = list(zip(sizes, sizes[1:], strict=False))
    params = [(rng.normal(size=(m, n)) / np.sqrt(m), 0.1 * rng.normal(size=n)) for m, n in layers]
    direction = [
        (rng.normal(size=(m, n)) / np.sqrt(m), 0.1 * rng.normal(size=n)) for m, n in layers
    ]
    data = rng.normal(size=(inputs, features)).astype(np.float32)
    labels = rng.integers(0, classes, inputs)
    params = [tuple(np.float32(a) for a in layer) for layer in params]
    direction = [tuple(np.float32(a) for a in layer) for layer in direction]

    def f(x):
        h = jnp.asarray(data, x.dtype)
        for i, ((w, b), (dw, db)) in enumerate(zip(params, direction, strict=True)):
            w = jnp.asarray(w, x.dtype) + x * jnp.asarray(dw, x.dtype)
            b = jnp.asarray(b, x.dtype) + x * jnp.asarray(db, x.dtype)
            h = h @ w + b[None]
            if i < depth:
                h = activation(h)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(h, labels))

    return f


def _curvature_intervals(f, dtype):
    bound = jax.jit(jax.vmap(ab.taylor_bounds(f, 2)))
    zeros = jnp.zeros(ETAS.shape, dtype)
    bounds = bound(zeros, (zeros, jnp.asarray(ETAS, dtype)))
    return tuple(np.asarray(e, np.float64) for e in bounds.final_interval())


@pytest.mark.parametrize(
    "depth, activation",
    [pytest.param(8, jax.nn.softplus, id="softplus-8"), pytest.param(4, jnp.tanh, id="tanh-4")],
)
def test_float32_curvature_is_valid_and_as_tight_as_float64(depth, activation):
    f = _network_loss(depth, activation, seed=depth)
    lo32, hi32 = _curvature_intervals(f, np.float32)
    lo64, hi64 = _curvature_intervals(f, np.float64)
    # Under jit: op by op, the hessian of the depth-8 network took 12 s, compiled 3 s.
    true = float(jax.jit(jax.hessian(f))(jnp.float64(0.0))) / 2

    assert not np.any(np.isnan(lo32) | np.isnan(hi32)), (lo32, hi32)
    # Valid: contains the true coefficient, up to float32 rounding of the coefficient itself.
    slack = FLOAT32_RTOL * abs(true)
    assert np.all(lo32 - slack <= true) and np.all(true <= hi32 + slack), (lo32, hi32, true)
    assert np.all(lo64 <= true) and np.all(true <= hi64), (lo64, hi64, true)

    width32, width64 = hi32 - lo32, hi64 - lo64
    representable = width64 < FLOAT32_MAX
    assert np.all(width32[representable] <= 2 * width64[representable]), (width32, width64)
    # Beyond float32's range only validity is possible: the ends overflow to ±inf.
    assert np.all(np.isinf(width32[~representable])), (width32, width64)
    # The smallest trust regions are where float32 used to break down: there the float32 interval
    # is as narrow as the float64 one (not merely finite).
    assert width32[0] <= 1.01 * width64[0]
