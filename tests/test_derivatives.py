"""Closed-form derivatives of the logistic family against high-precision values (mpmath)."""

import jax.numpy as jnp
import mpmath
import pytest

from optax_saferate.autobound import derivatives

pytestmark = pytest.mark.usefixtures("autobound_numerics")

FUNCTIONS = {
    "sigmoid": (derivatives.sigmoid_derivative, lambda t: 1 / (1 + mpmath.exp(-t))),
    "tanh": (derivatives.tanh_derivative, mpmath.tanh),
    "softplus": (derivatives.softplus_derivative, lambda t: mpmath.log(1 + mpmath.exp(t))),
    "swish": (derivatives.swish_derivative, lambda t: t / (1 + mpmath.exp(-t))),
}
POINTS = (-30.0, -7.3, -1.1, -1e-9, 0.0, 1e-9, 0.4, 2.9, 25.0)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("order", range(6))
def test_closed_forms_are_accurate_in_both_tails(name, order):
    closed, exact_fn = FUNCTIONS[name]
    mpmath.mp.dps = 40
    for x in POINTS:
        exact = float(mpmath.diff(exact_fn, x, order))
        got = float(closed(order, jnp.float64(x)))
        if abs(exact) < 1e-40:  # a true zero (odd derivatives at 0): absolute check
            assert abs(got) < 1e-30, (name, order, x, got)
        else:
            assert abs(got - exact) <= 1e-13 * abs(exact), (name, order, x, got, exact)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_expm1_without_a_second_transcendental_matches_expm1(dtype):
    # Both sides of the switch at -1/2, tiny arguments and the far tail; a grid, not random
    # draws: the function is elementwise and this covers every regime in one array.
    y = -jnp.concatenate(
        [jnp.zeros(1), jnp.logspace(-30, 2, 4001), jnp.linspace(0.49, 0.51, 201)]
    ).astype(dtype)
    got = derivatives._expm1_from_exp(y, jnp.exp(y))
    want = jnp.expm1(y)
    tolerance = 4 * jnp.finfo(dtype).eps
    relative = jnp.abs(got - want) / jnp.maximum(jnp.abs(want), jnp.finfo(dtype).tiny)
    assert got.dtype == dtype
    assert float(jnp.max(relative)) <= tolerance, float(jnp.max(relative))
