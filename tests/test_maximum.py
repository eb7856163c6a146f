"""The all-candidates maximum rule (max-pooling, jnp.max) and interval propagation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from optax_saferate import autobound as ab

pytestmark = pytest.mark.usefixtures("autobound_numerics")


def _sampled_remainder(f, x0, eta, n=20001):
    ts = np.linspace(eta / n, eta, n)
    values = np.asarray(jax.vmap(f)(x0 + ts))
    c0, c1 = float(f(x0)), float(jax.grad(f)(x0))
    return (values - c0 - c1 * ts) / ts**2


@pytest.mark.parametrize("k", [2, 3, 4])
def test_near_ties_are_sharp_not_compounded(k):
    """max of k lines with nearly equal values: the bound equals the true sup (here (k-1)·25)."""
    base = 1 - 1e-2 * jnp.arange(k, dtype=jnp.float64)
    slope = jnp.arange(k, dtype=jnp.float64)

    def by_max(e):
        return jnp.max(base + e * slope)

    def by_pool(e):
        return jax.lax.reduce_window(base + e * slope, -jnp.inf, jax.lax.max, (k,), (k,), "VALID")[
            0
        ]

    for f in (by_max, by_pool):
        lo, hi = ab.taylor_bounds(f, 2)(0.0, (0.0, 1.0)).final_interval()
        assert float(lo) == 0.0
        np.testing.assert_allclose(float(hi), 25.0 * (k - 1), rtol=1e-9)


@settings(max_examples=settings.default.max_examples, deadline=None)  # 20, or 200 thorough
@given(
    seed=st.integers(0, 2**16),
    count=st.integers(2, 6),
    two_sided=st.booleans(),
    eta=st.floats(1e-3, 2.0),
)
def test_max_of_random_enclosures_is_sound(seed, count, two_sided, eta):
    rng = np.random.default_rng(seed)
    a = jnp.asarray(rng.normal(size=(count, 3)))
    b = jnp.asarray(rng.normal(size=(count, 3)))
    c = jnp.asarray(rng.normal(size=(count, 3)))
    a = a.at[1].set(a[0])  # an exact tie at the reference point

    def f(e):
        return jnp.sum(jnp.max(a + e * b + jnp.tanh(e * c), axis=0))

    lo_t = -eta if two_sided else 0.0
    bounds = ab.taylor_bounds(f, 2)(0.0, (lo_t, eta))
    ts = np.linspace(lo_t, eta, 2001)
    values = np.asarray(jax.vmap(f)(ts))
    lower, upper = np.asarray(jax.vmap(bounds.lower)(ts)), np.asarray(jax.vmap(bounds.upper)(ts))
    assert not np.isnan(bounds.final_interval()[0]) and not np.isnan(bounds.final_interval()[1])
    assert np.all(lower <= values + 1e-9) and np.all(values <= upper + 1e-9)


def test_max_pool_cnn_bound_is_finite_and_sound():
    x = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 1))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 1, 4)) / 3
    direction = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 1, 4)) / 3
    labels = jnp.array([0, 1, 2, 3])

    def f(e):
        h = jax.lax.conv_general_dilated(
            x, kernel + e * direction, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.relu(h)
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
        logits = h.reshape(4, -1)[:, :4]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    bounds = ab.taylor_bounds(f, 2)(0.0, (0.0, 0.1))
    lo, hi = (float(e) for e in bounds.final_interval())
    assert np.isfinite(lo) and np.isfinite(hi)
    r2 = _sampled_remainder(f, 0.0, 0.1)
    assert lo <= r2.min() + 1e-9 and r2.max() <= hi + 1e-9


@pytest.mark.parametrize(
    "f",
    [
        lambda e: jnp.tanh(1.0 + e),
        lambda e: jnp.sum(
            jnp.pad(jnp.log(2.0 + jnp.sin(jnp.arange(4.0) * e)), 1, constant_values=3.0)
        ),
        lambda e: jnp.sum(jnp.where(jnp.arange(4.0) - 1.5 + e > 0, e, e**2)),
        lambda e: jnp.max(jnp.arange(3.0) * e - e**2),
    ],
)
def test_propagate_trust_regions_is_sound(f):
    """The degree-0 (interval) pass runs through constants, pads, selects and maxima."""
    bounds = ab.taylor_bounds(f, 2, propagate_trust_regions=True)(0.0, (0.0, 0.5))
    ts = np.linspace(0.0, 0.5, 201)
    values = np.asarray(jax.vmap(f)(ts))
    assert np.all(np.asarray(jax.vmap(bounds.lower)(ts)) <= values + 1e-9)
    assert np.all(values <= np.asarray(jax.vmap(bounds.upper)(ts)) + 1e-9)
