"""Verified integration: the interval contains the integral and reaches the requested width."""

import math
import warnings

import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optax_saferate import autobound as ab

pytestmark = pytest.mark.usefixtures("autobound_numerics")

CASES = {
    "exp": (jnp.exp, mpmath.exp, -1.0, 2.0),
    "sin": (jnp.sin, mpmath.sin, 0.0, 3.0),
    "log": (jnp.log, mpmath.log, 0.5, 4.0),
    "softplus": (lambda x: jnp.logaddexp(x, 0.0), lambda x: mpmath.log1p(mpmath.exp(x)), -3.0, 2.0),
    "rational": (lambda x: 1.0 / (1.0 + x**2), lambda x: 1 / (1 + x**2), -2.0, 1.0),
    "abs": (jnp.abs, abs, -1.0, 0.7),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_contains_mpmath_quad_and_reaches_the_width(name, degree):
    f, exact_f, a, b = CASES[name]
    width = 1e-4 if degree == 1 else 1e-7
    result = ab.integrate(f, a, b, width=width, degree=degree)
    exact = mpmath.quad(exact_f, [a, 0.0, b] if a < 0 < b else [a, b])
    assert result.reached and result.width <= width
    assert result.lower <= exact <= result.upper
    assert np.all(result.cell_lower <= result.cell_upper)


def test_the_notebook_example():
    result = ab.integrate(lambda x: 1.5 * jnp.exp(3 * x) - 25 * x**2, 0.0, 1.0, width=1e-9)
    exact = 0.5 * (math.e**3 - 1) - 25 / 3
    assert result.lower <= exact <= result.upper and result.width <= 1e-9


def test_a_singular_integrand_stops_at_the_budget_soundly():
    result = ab.integrate(jnp.log, 0.0, 1.0, width=1e-3, max_cells=32)
    assert not result.reached and result.stop_reason == "max_cells"
    assert result.lower <= -1.0 <= result.upper


@pytest.mark.parametrize(
    "kwargs", [dict(a=1.0, b=0.0), dict(a=math.nan), dict(degree=5), dict(degree=0), dict(width=0)]
)
def test_bad_input_raises(kwargs):
    args = dict(a=0.0, b=1.0, width=1e-3) | kwargs
    with pytest.raises(ValueError):
        ab.integrate(jnp.exp, **args)


@given(
    name=st.sampled_from(sorted(CASES)),
    a=st.floats(-3, 2),
    length=st.floats(1e-3, 3),
    degree=st.integers(1, 4),
)
def test_soundness_property(name, a, length, degree):
    """Random intervals over a fixed family (the same functions: one compilation per degree)."""
    f, exact_f, _, _ = CASES[name]
    if name == "log":
        a = abs(a) + 0.1
    b = a + length
    result = ab.integrate(f, a, b, width=1e-6, degree=degree, max_cells=256)
    exact = mpmath.quad(exact_f, [a, 0.0, b] if a < 0 < b else [a, b])
    assert result.lower <= exact <= result.upper


def test_cells_without_a_finite_bound_are_all_split_without_overflow():
    """Regression: at degree 1 the Runge function's enclosure is unbounded on wide cells. Every
    such cell is split in one round (no 1e308 stand-ins summed into an overflow warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ab.integrate(lambda x: 1 / (1 + 25 * x**2), -1.0, 1.0, width=1e-6, degree=1)
    exact = 2 * math.atan(5) / 5
    assert result.reached and result.lower <= exact <= result.upper
