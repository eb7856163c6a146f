"""``taylor_bounds`` of a function of a small 1-D vector over a box (issue 2).

The coefficients are the derivative tensors ``D^i f(x0)/i!`` (checked against ``jax.jacfwd``),
the last an interval tensor, and ``lower(x) <= f(x) <= upper(x)`` holds at random points of the
box. Functions with kinks or jumps are refused with an error that says what to do instead.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from optax_saferate import autobound as ab

pytestmark = pytest.mark.usefixtures("autobound_numerics")

_RNG = np.random.default_rng(7)
_W = _RNG.normal(size=(3, 4))
_V = _RNG.normal(size=(4, 2))


def _mlp(activation):
    def f(x):
        w, v = (jnp.asarray(a, x.dtype) for a in (_W, _V))
        return jnp.mean((activation(x @ w) @ v - 1.0) ** 2)

    return f


FUNCTIONS = {
    "polynomial": lambda x: x[0] ** 3 * x[1] - 2.0 * x[1] ** 2 + x[2] * x[0],
    "exp*sin": lambda x: jnp.exp(x[0]) * jnp.sin(x[1]) + jnp.cos(x[2]),
    "log/sqrt": lambda x: jnp.log(2.0 + x) / jnp.sqrt(3.0 + x),
    "tanh MLP": _mlp(jnp.tanh),
    "softplus MLP": _mlp(jax.nn.softplus),
    "sigmoid*swish": lambda x: jnp.sum(jax.nn.sigmoid(x) * jax.nn.swish(x[::-1])),
    "gelu": lambda x: jnp.sum(jax.nn.gelu(x)),
    "vector output": lambda x: jnp.stack([jnp.sum(jnp.exp(x)), x[0] * x[1], jnp.tanh(x[2])]),
}


def _derivative_tensor(f, x0, order):
    g = f
    for _ in range(order):
        g = jax.jacfwd(g)
    return np.asarray(g(x0), np.float64) / math.factorial(order)


# Each example runs the engine eagerly over several functions (~4 s): a few by default, ten
# times as many under HYPOTHESIS_PROFILE=thorough (conftest.py).
@settings(max_examples=max(3, settings.default.max_examples // 6), deadline=None)
@given(
    name=st.sampled_from(sorted(FUNCTIONS)),
    seed=st.integers(0, 2**16),
    log_width=st.floats(-4, 0),
    degree=st.sampled_from([1, 2, 3]),
    double=st.booleans(),
)
def test_bounds_hold_on_the_box_and_coefficients_are_the_derivatives(
    name, seed, log_width, degree, double
):
    dtype = jnp.float64 if double else jnp.float32
    f = FUNCTIONS[name]
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, 3).astype(dtype)
    width = 10.0**log_width * rng.uniform(0.2, 1.0, 3)
    lo, hi = (x0 - width * rng.uniform(0, 1, 3)).astype(dtype), (x0 + width).astype(dtype)
    bounds = ab.taylor_bounds(f, degree)(jnp.asarray(x0), (jnp.asarray(lo), jnp.asarray(hi)))
    assert len(bounds.coefficients) == degree + 1
    x64 = jnp.asarray(x0, jnp.float64)
    f64 = lambda x: f(x)  # noqa: E731 - the same function, evaluated on float64 inputs
    rtol = 1e-9 if double else 2e-3
    for i, c in enumerate(bounds.coefficients[:-1]):
        expected = _derivative_tensor(f64, x64, i)
        assert np.shape(c) == expected.shape
        np.testing.assert_allclose(c, expected, rtol=rtol, atol=rtol * (1 + np.abs(expected).max()))
    r_lo, r_hi = (np.asarray(e) for e in bounds.coefficients[-1])
    assert not np.any(np.isnan(r_lo)) and not np.any(np.isnan(r_hi))
    assert np.all(r_lo <= r_hi)
    tolerance = 1e-11 if double else 1e-4
    points = [lo, hi, x0] + [lo + (hi - lo) * rng.uniform(size=3) for _ in range(25)]
    for x in points:
        x = np.asarray(x, dtype)
        value = np.asarray(f64(jnp.asarray(x, jnp.float64)))
        slack = tolerance * (1 + np.abs(value))
        assert np.all(np.asarray(bounds.lower(jnp.asarray(x))) <= value + slack)
        assert np.all(value <= np.asarray(bounds.upper(jnp.asarray(x))) + slack)


@settings(max_examples=max(2, settings.default.max_examples // 8), deadline=None)
@given(n=st.sampled_from([1, 2, 5]), seed=st.integers(0, 2**16), degree=st.sampled_from([1, 2]))
def test_any_vector_length(n, seed, degree):
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(n, 3)))

    def f(x):
        return jnp.sum(jax.nn.softplus(x @ w) ** 2) + jnp.cos(jnp.sum(x * x))

    x0 = jnp.asarray(rng.uniform(-1, 1, n))
    lo, hi = x0 - rng.uniform(0, 0.5, n), x0 + rng.uniform(0, 0.5, n)
    bounds = ab.taylor_bounds(f, degree)(x0, (lo, hi))
    assert [np.shape(c) for c in bounds.coefficients[:-1]] == [(n,) * i for i in range(degree)]
    assert np.shape(bounds.coefficients[-1][0]) == (n,) * degree
    for _ in range(20):
        x = lo + (hi - lo) * rng.uniform(size=n)
        value = float(f(x))
        slack = 1e-11 * (1 + abs(value))
        assert float(bounds.lower(x)) <= value + slack <= float(bounds.upper(x)) + 2 * slack


def test_the_centred_form_narrows_the_plain_derivative_range():
    """The remainder is the plain interval range of ``D^k f`` over the box intersected with the
    centred form ``D^k f(x0) + D^{k+1} f(box)·(box - x0)``: never wider, here narrower."""
    from optax_saferate.autobound import vector_inputs
    from optax_saferate.autobound.enclosures import Context
    from optax_saferate.autobound.intervals import Interval

    f = FUNCTIONS["log/sqrt"]
    x0 = jnp.asarray([0.3, -0.2, 0.5])
    lo, hi = x0 - 0.05, x0 + 0.05
    bounds = ab.taylor_bounds(f, 1)(x0, (lo, hi))
    ctx = Context(Interval(lo - x0, hi - x0), 0)
    plain = vector_inputs._range_over_box(jax.jacfwd(f), x0, ctx)
    r_lo, r_hi = bounds.coefficients[-1]
    assert np.all(np.asarray(r_lo) >= np.asarray(plain.lo))
    assert np.all(np.asarray(r_hi) <= np.asarray(plain.hi))
    assert np.sum(np.asarray(r_hi - r_lo)) < 0.9 * np.sum(np.asarray(plain.hi - plain.lo))


def test_a_quadratic_is_exact():
    a = jnp.asarray([[2.0, 0.5], [0.5, 1.0]])
    f = lambda x: x @ a @ x + jnp.sum(x)  # noqa: E731
    x0 = jnp.asarray([0.3, -0.2])
    bounds = ab.taylor_bounds(f, 2)(x0, (x0 - 1.0, x0 + 1.0))
    lo, hi = bounds.coefficients[-1]
    np.testing.assert_allclose(lo, a, rtol=1e-12)
    np.testing.assert_allclose(hi, a, rtol=1e-12)
    x = jnp.asarray([1.0, 0.5])
    np.testing.assert_allclose(bounds.upper(x), f(x), rtol=1e-12)
    np.testing.assert_allclose(bounds.lower(x), f(x), rtol=1e-12)


def test_runs_under_jit():
    f = FUNCTIONS["tanh MLP"]

    @jax.jit
    def coefficients(x0, radius):
        return ab.taylor_bounds(f, 2)(x0, (x0 - radius, x0 + radius)).coefficients

    x0 = jnp.asarray([0.1, 0.2, 0.3])
    eager = ab.taylor_bounds(f, 2)(x0, (x0 - 0.1, x0 + 0.1)).coefficients
    jitted = coefficients(x0, 0.1)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize(
    "f,primitive",
    [
        (lambda x: jnp.sum(jax.nn.relu(x)), "max"),
        (lambda x: jnp.max(x), "reduce_max"),
        (lambda x: jnp.sum(jnp.abs(x)), "abs"),
        (lambda x: jnp.sum(jnp.where(x > 0, 1.0, 0.0)), "gt"),
        (lambda x: jnp.sum(jax.lax.stop_gradient(x) * x), "stop_gradient"),
    ],
)
def test_kinks_and_jumps_are_refused_with_a_clear_error(f, primitive):
    x0 = jnp.asarray([0.5, -0.5])
    with pytest.raises(NotImplementedError, match=rf"`{primitive}`.*along a line"):
        ab.taylor_bounds(f, 2)(x0, (x0 - 1.0, x0 + 1.0))


def test_a_matrix_input_is_rejected():
    with pytest.raises(ValueError, match="scalar or a 1-D vector"):
        ab.taylor_bounds(jnp.sum, 2)(jnp.zeros((2, 2)), (-1.0, 1.0))
