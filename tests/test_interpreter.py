"""The jaxpr interpreter (``autobound.interpreter``): API, transformations, Taylor mode."""

import doctest
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import check_bounds
from helpers import compute_bounds
from helpers import taylor_coefficient

from optax_saferate import autobound as ab
from optax_saferate.autobound import elementwise
from optax_saferate.autobound import enclosures
from optax_saferate.autobound import interpreter
from optax_saferate.autobound import intervals
from optax_saferate.autobound import kinks
from optax_saferate.autobound import logsumexp
from optax_saferate.autobound import named_functions
from optax_saferate.autobound import polynomial_bounds
from optax_saferate.autobound import rules
from optax_saferate.autobound import smooth_functions
from optax_saferate.autobound import vector_inputs
from optax_saferate.autobound import walk

# The module, not the function of the same name that the package re-exports.
integrate_module = importlib.import_module("optax_saferate.autobound.integrate")

pytestmark = pytest.mark.usefixtures("autobound_numerics")

W = np.random.default_rng(0).normal(size=(5, 3))


def smooth(x):
    return jnp.sum(jnp.tanh(W @ jnp.array([1.0, x, x * x]))) + jnp.exp(jnp.sin(x))


def test_jit_compiles_once_for_new_reference_points_and_trust_regions():
    traces = []

    def f(x):
        traces.append(None)  # runs only while tracing
        return smooth(x)

    bound = jax.jit(ab.taylor_bounds(f, 2))
    first = bound(0.1, (0.0, 0.5))
    second = bound(0.3, (-0.2, 1.0))
    assert len(traces) == 1
    assert bound._cache_size() == 1
    assert not np.allclose(first.coefficients[0], second.coefficients[0])
    with_ranges = jax.jit(ab.taylor_bounds(f, 2, propagate_trust_regions=True))
    with_ranges(0.1, (0.0, 0.5))
    with_ranges(0.2, (0.1, 0.5))
    assert with_ranges._cache_size() == 1
    assert len(traces) <= 2


def test_jit_and_eager_agree():
    # The other test files mostly execute eagerly (one-off functions); users compile.
    def f(x):
        return jnp.tanh(jnp.exp(x) - 1.5) * jax.nn.softplus(x) + jax.nn.relu(x - 0.2) ** 2

    x0, lo, hi = np.array([0.1, -0.5]), np.array([0.0, -1.0]), np.array([0.5, 0.0])
    eager = compute_bounds(f, 2, x0, (lo, hi), jit=False)
    jitted = compute_bounds(f, 2, x0, (lo, hi), jit=True)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


def test_vmap_over_reference_points_matches_single_calls():
    x0 = np.array([0.0, 0.2, -0.7])
    lo, hi = x0 - 0.1, x0 + np.array([0.3, 0.0, 1.0])
    batched = jax.jit(jax.vmap(ab.taylor_bounds(smooth, 2)))
    single_bound = jax.jit(ab.taylor_bounds(smooth, 2))
    batched = batched(x0, (lo, hi))
    for i in range(3):
        single = single_bound(x0[i], (lo[i], hi[i]))
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-13)  # two compilations: rounding


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_zero_width_trust_region_is_taylor_mode_autodiff(degree):
    def f(x):
        return jnp.sin(x) * jnp.exp(x) + jax.nn.softplus(3 * x) / (2 + x * x)

    x0 = np.array([-1.0, 0.0, 0.4, 2.0])
    bounds = compute_bounds(f, degree, x0, (x0, x0), jit=False)
    x64 = jnp.asarray(x0)
    for order, c in enumerate(bounds.coefficients[:-1]):
        expected = jax.vmap(taylor_coefficient(f, order))(x64)
        np.testing.assert_allclose(c, expected, rtol=1e-12, atol=1e-14)
    lo, hi = bounds.final_interval()
    expected = jax.vmap(taylor_coefficient(f, degree))(x64)
    np.testing.assert_allclose(lo, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hi, expected, rtol=1e-10, atol=1e-12)


def test_propagate_trust_regions_is_sound_and_never_looser():
    # log(2 + sin(x)) on a wide region: the degree-2 range of sin overshoots [-1, 1], so the
    # argument of log may look non-positive; plain interval ranges know sin is in [-1, 1].
    def f(x):
        return jnp.log(2.05 + jnp.sin(x)) + jnp.sqrt(1.5 + jnp.cos(3 * x))

    x0 = np.array([0.0, 1.0, -2.0, 0.5])
    lo, hi = x0 - np.array([0.0, 2.0, 1.0, 0.1]), x0 + np.array([4.0, 2.0, 3.0, 0.1])
    plain = compute_bounds(f, 2, x0, (lo, hi))
    ranged = check_bounds(f, x0, (lo, hi), 2, propagate_trust_regions=True)
    width = [np.subtract(*b.final_interval()[::-1]) for b in (plain, ranged)]
    assert np.all(width[1] <= width[0])
    assert np.all(np.isfinite(width[1])) and not np.all(np.isfinite(width[0]))
    check_bounds(smooth, x0, (lo, hi), 3, propagate_trust_regions=True)


@pytest.mark.parametrize("degree", [0, -1, 1.5, "2", None])
def test_degree_must_be_a_positive_integer(degree):
    with pytest.raises(ValueError, match="max_degree"):
        ab.taylor_bounds(smooth, degree)


def test_a_matrix_input_is_refused_with_a_clear_message():
    """Vectors work (tests/test_vector_inputs.py); higher ranks say what to do instead."""
    with pytest.raises(ValueError, match="scalar or a 1-D vector") as error:
        ab.taylor_bounds(lambda x: jnp.sum(x**2), 2)(jnp.ones((3, 2)), (0.0, 1.0))
    assert "x0 + t·direction" in str(error.value)


def test_multiple_outputs_are_refused():
    with pytest.raises(ValueError, match="single array"):
        ab.taylor_bounds(lambda x: (x, x * x), 2)(0.0, (0.0, 1.0))


def test_array_valued_and_constant_functions():
    def f(x):
        return jnp.stack([jnp.exp(x), 3.0 + 0 * x, x * x])

    bounds = check_bounds(f, [0.5], ([0.0], [1.0]), 2, jit=False)
    assert bounds.coefficients[0].shape == (1, 3)
    constant = ab.taylor_bounds(lambda x: jnp.ones(2) * 4.0, 3)(0.5, (0.0, 1.0))
    np.testing.assert_array_equal(constant.coefficients[0], [4.0, 4.0])
    for c in (*constant.coefficients[1:-1], *constant.final_interval()):
        np.testing.assert_array_equal(c, 0.0)


def test_lower_and_upper_at_the_reference_point_even_when_unbounded():
    # On the switch, with a jump of either sign (1 - 2x on [0, 1]): unbounded both ways.
    bounds = ab.taylor_bounds(lambda x: jnp.where(x > 0.5, 1 - x, x), 2)(0.5, (0.0, 1.0))
    lo, hi = bounds.final_interval()
    assert np.isneginf(lo) and np.isposinf(hi)
    assert float(bounds.lower(0.5)) == float(bounds.upper(0.5)) == 0.5
    assert np.isneginf(bounds.lower(1.0)) and np.isposinf(bounds.upper(1.0))


def test_integer_and_python_reference_points():
    bounds = ab.taylor_bounds(jnp.exp, 2)(1, (1, 2))
    assert jnp.issubdtype(bounds.coefficients[0].dtype, jnp.floating)
    np.testing.assert_allclose(bounds.coefficients[0], math.e)
    assert bounds.degree == 2


@pytest.mark.parametrize(
    "module",
    [
        ab,
        integrate_module,
        interpreter,
        walk,
        vector_inputs,
        polynomial_bounds,
        named_functions,
        elementwise,
        smooth_functions,
        kinks,
        enclosures,
        intervals,
        logsumexp,
        rules,
    ],
)
def test_docstring_examples_run(module):
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0


def test_readme_style_example():
    bounds = ab.taylor_bounds(jnp.exp, 2)(0.0, (0.0, 1.0))
    c0, c1, (lo, hi) = bounds.coefficients
    assert (float(c0), float(c1)) == (1.0, 1.0)
    np.testing.assert_allclose([lo, hi], [0.5, math.e - 2], rtol=1e-13)
    for x in np.linspace(0, 1, 11):
        assert bounds.lower(x) <= math.exp(x) <= bounds.upper(x)


@pytest.mark.parametrize(
    "x0, region",
    [(2.0, (0.0, 1.0)), (-0.5, (0.0, 1.0)), (0.5, (1.0, 0.0)), (float("nan"), (0.0, 1.0))],
)
def test_a_region_without_the_reference_point_raises(x0, region):
    with pytest.raises(ValueError, match="a <= x0 <= b"):
        ab.taylor_bounds(jnp.exp, 2)(x0, region)


def test_a_vector_region_without_the_reference_point_raises():
    x0 = jnp.array([0.0, 2.0])
    with pytest.raises(ValueError, match="a <= x0 <= b"):
        ab.taylor_bounds(lambda x: jnp.sum(jnp.exp(x)), 2)(x0, (jnp.zeros(2), jnp.ones(2)))


def test_a_traced_bad_region_gives_the_whole_line_and_a_good_one_is_unchanged():
    bound = jax.jit(lambda x, a, b: ab.taylor_bounds(jnp.exp, 2)(x, (a, b)).coefficients)
    for x0, a, b in ((2.0, 0.0, 1.0), (0.5, 1.0, 0.0)):
        c0, c1, (lo, hi) = bound(x0, a, b)
        assert float(lo) == -np.inf and float(hi) == np.inf
        assert np.isfinite(float(c0)) and np.isfinite(float(c1))
    for x0, a, b in ((0.0, 0.0, 1.0), (1.0, 0.0, 1.0), (0.5, 0.5, 0.5)):
        traced = jax.tree.leaves(bound(x0, a, b))
        eager = jax.tree.leaves(ab.taylor_bounds(jnp.exp, 2)(x0, (a, b)).coefficients)
        np.testing.assert_allclose(traced, eager, rtol=1e-6)
        assert np.all(np.isfinite(traced))


def test_the_derivative_of_a_named_function_is_walked_into():
    # jax.grad(jax.nn.softplus) leaves a `jit[name=softplus]` with three outputs (the value and
    # its linearisation); the named softplus rule gives one, which failed the walk's zip.
    for order in (1, 2):
        derivative = jax.nn.softplus
        for _ in range(order):
            derivative = jax.grad(derivative)
        bounds = ab.taylor_bounds(derivative, 2)(0.3, (-1.0, 2.0))
        for x in np.linspace(-1.0, 2.0, 13):
            value = float(derivative(x))
            assert float(bounds.lower(x)) <= value <= float(bounds.upper(x))
