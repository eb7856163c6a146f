"""Elementwise enclosures (``autobound.elementwise``): soundness, sharpness, stability.

Soundness runs every function through ``taylor_bounds`` on 64 random reference points and trust
regions at once (half one-sided ``[x0, x0 + w]``, half two-sided, widths 1e-6..2), for degrees
1..3 in float64 and float32 and degree 4 in float64 (the default run takes a rotating subset of
the float32 and degree-4 cases, ``-m slow`` all of them). The bounds are computed eagerly here (one
new function per case; tracing beats compiling), ``test_interpreter.py`` checks that ``jit``
gives the same bounds.
"""

import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import check_bounds
from helpers import compute_bounds
from helpers import random_cases

from optax_saferate import autobound as ab
from optax_saferate.autobound import smooth_functions

pytestmark = pytest.mark.usefixtures("autobound_numerics")

erf = jax.scipy.special.erf


def _gelu_erf(x):
    return jax.nn.gelu(x, approximate=False)


# name -> function of x in [-5, 5]. Functions with a restricted domain are shifted into it; the
# shift is exact in the enclosure, so the rule itself is exercised.
FUNCTIONS = {
    "exp": jnp.exp,
    "log": lambda x: jnp.log(x + 6),
    "log1p": lambda x: jnp.log1p(x + 5),
    "expm1": jnp.expm1,
    "sqrt": lambda x: jnp.sqrt(x + 6),
    "rsqrt": lambda x: jax.lax.rsqrt(x + 6),
    "square": jnp.square,
    "x*x": lambda x: x * x,
    "x**3": lambda x: x**3,
    "x**4": lambda x: x**4,
    "x**5": lambda x: x**5,
    "1/x": lambda x: 1 / (x + 6),
    "x**-2": lambda x: (x + 6) ** -2,
    "x**-3": lambda x: (x - 6) ** -3,
    "x**1.5": lambda x: (x + 6) ** 1.5,
    "x**-0.7": lambda x: (x + 6) ** -0.7,
    "x**2.5 (pow)": lambda x: jnp.power(x + 6, 2.5),
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "swish": jax.nn.swish,
    "silu(2x)": lambda x: jax.nn.silu(2 * x),
    "tanh": jnp.tanh,
    "erf": erf,
    "erfc": jax.scipy.special.erfc,
    "sin": jnp.sin,
    "cos": jnp.cos,
    "relu": jax.nn.relu,
    "leaky_relu": jax.nn.leaky_relu,
    "leaky_relu(0.2)": lambda x: jax.nn.leaky_relu(x, 0.2),
    "relu6": lambda x: jax.nn.relu6(3 * x),
    "elu": jax.nn.elu,
    "elu(0.5)": lambda x: jax.nn.elu(x, 0.5),
    "gelu (tanh)": jax.nn.gelu,
    "gelu (erf)": _gelu_erf,
    "abs": jnp.abs,
    "max(x, c)": lambda x: jnp.maximum(x, 0.3),
    "max(c, x)": lambda x: jnp.maximum(-0.4, x),
    "min(x, c)": lambda x: jnp.minimum(x, -0.2),
    "max(u, w)": lambda x: jnp.maximum(jnp.sin(x), jnp.cos(x)),
    "min(u, w)": lambda x: jnp.minimum(jnp.sin(x), x * x - 1),
    "clip": lambda x: jnp.clip(x, -1, 1.5),
}


def _soundness_cases():
    """Every function in float64 at degree 2 (the fast path) and at 1 or 3 in turn, and at 4 for
    every third function; in float32 at one degree (1, 2, 3 in turn). The other combinations are
    marked slow."""
    for i, name in enumerate(FUNCTIONS):
        for dtype, degrees in ((np.float64, (1, 2, 3, 4)), (np.float32, (1, 2, 3))):
            if dtype == np.float64:
                default = (2, 1 + 2 * (i % 2)) + ((4,) if i % 3 == 0 else ())
            else:
                default = (1 + i % 3,)
            for degree in degrees:
                marks = () if degree in default else (pytest.mark.slow,)
                label = f"{name}-{np.dtype(dtype).name}-{degree}"
                yield pytest.param(name, dtype, degree, id=label, marks=marks)


@pytest.mark.parametrize("name, dtype, degree", list(_soundness_cases()))
def test_sound_over_random_points_and_trust_regions(name, dtype, degree):
    x0, trust_region = random_cases(np.random.default_rng(zlib.crc32(name.encode())), 64)
    check_bounds(FUNCTIONS[name], x0, trust_region, degree, dtype, jit=False)


# --------------------------------------------------------------------------- regressions


def test_relu_degree_one_includes_the_slope():
    # The degree-1 remainder of relu is d_1 plus the kink term; it used to omit d_1 = 1.
    x0 = np.array([2.5, 0.5, -0.5, 1.0])
    lo, hi = np.array([2.4, -0.5, -0.5, 1.0]), np.array([2.6, 1.5, 1.0, 3.0])
    bounds = check_bounds(jax.nn.relu, x0, (lo, hi), 1, jit=False)
    lo_1, hi_1 = (np.asarray(e) for e in bounds.final_interval())
    assert lo_1[0] == hi_1[0] == 1.0  # away from the kink: exactly the slope
    assert lo_1[3] == hi_1[3] == 1.0


def test_elu_degree_three_across_the_kink_is_sound_and_finite():
    # elu'' jumps at 0: beyond degree 2 it is bounded as relu(x) + α·expm1(-relu(-x)).
    x0 = np.array([-0.5, -0.2, -1.0, 0.5])
    lo, hi = np.array([-0.5, -0.3, -1.5, -0.5]), np.array([1.0, 0.4, 0.1, 0.7])
    for degree in (3, 4):
        for f in (jax.nn.elu, lambda x: jax.nn.elu(x, 0.5)):
            bounds = check_bounds(f, x0, (lo, hi), degree, jit=False)
            assert np.all(np.isfinite(bounds.final_interval()))
    # A non-default α reaches the call as an operand; it is read from there (not left to the
    # body's input-dependent where, which would be unbounded across the kink).
    for f in (lambda x: jax.nn.elu(x, 0.5), lambda x: jax.nn.leaky_relu(x, 0.2)):
        bounds = check_bounds(f, x0, (lo, hi), 2, jit=False)
        assert np.all(np.isfinite(bounds.final_interval()))
    # On one side of the kink the bound stays finite and tight.
    bounds = check_bounds(jax.nn.elu, [-0.5], ([-0.7], [-0.1]), 3, jit=False)
    assert np.all(np.isfinite(bounds.final_interval()))


def test_cos_is_accurate_near_its_zeros():
    # cos used to be evaluated as sin(x + pi/2), which costs eps·|x| absolute near cos = 0.
    x0 = np.array([-1.563783342042287, np.pi / 2 + 1e-9, 3 * np.pi / 2 - 1e-7])
    bounds = compute_bounds(jnp.cos, 2, x0, (x0, x0 + 1e-3), jit=False)
    eps = np.finfo(np.float64).eps
    np.testing.assert_allclose(bounds.coefficients[0], np.cos(x0), rtol=4 * eps, atol=0)
    np.testing.assert_allclose(bounds.coefficients[1], -np.sin(x0), rtol=4 * eps, atol=0)


# --------------------------------------------------------------------------- kinks


def test_relu_at_the_kink_one_sided_is_finite_and_two_sided_is_unbounded():
    # u(x) = 2x - x² has u0 = 0 at x0 = 0 exactly (a dead unit / zero padding).
    def f(x):
        return jax.nn.relu(2 * x - x * x)

    # Autodiff gives relu'(0) = 0, not a one-sided derivative: no coefficient check at the kink.
    for degree in (1, 2, 3):
        forward = check_bounds(
            f, [0.0, 0.0], ([0.0, 0.0], [1.0, 1e-3]), degree, jit=False, check_taylor=False
        )
        assert np.all(np.isfinite(forward.final_interval())), degree
        backward = check_bounds(f, [0.0], ([-1.0], [0.0]), degree, jit=False, check_taylor=False)
        assert np.all(np.isfinite(backward.final_interval())), degree
        region = (np.array([-0.5]), np.array([0.5]))
        both = compute_bounds(f, degree, np.array([0.0]), region, jit=False)
        lo, hi = both.final_interval()
        assert np.isneginf(lo[0]) and np.isposinf(hi[0]), degree
    # Positive homogeneity: relu(t·V) = t·relu(V) makes the degree-2 bound tight: relu(2x - x²)
    # is 2x - x² on [0, 1], so c1 = 2 and the interval holds -1.
    bounds = compute_bounds(f, 2, np.array([0.0]), (np.array([0.0]), np.array([1.0])), jit=False)
    assert float(bounds.coefficients[1][0]) == 2.0
    lo, hi = (float(e[0]) for e in bounds.final_interval())
    assert lo <= -1.0 <= hi and hi - lo <= 1.0


@pytest.mark.parametrize(
    ("name", "f", "left_slope"),
    [
        ("elu(0.5)", lambda x: jax.nn.elu(x, 0.5), 0.5),
        ("leaky_relu(0.2)", lambda x: jax.nn.leaky_relu(x, 0.2), 0.2),
    ],
)
def test_a_one_sided_region_at_a_kink_gets_that_sides_derivative(name, f, left_slope):
    # Autodiff picks one side's derivative at the kink (0.5 for elu(0.5), whatever the region);
    # a sharp enclosure over [0, 1] must use the right derivative and over [-1, 0] the left one.
    x0 = np.array([0.0])
    right = check_bounds(f, x0, (x0, x0 + 1.0), 2, jit=False, check_taylor=False)
    assert float(right.coefficients[1][0]) == 1.0, name
    np.testing.assert_allclose([float(e[0]) for e in right.final_interval()], [0.0, 0.0])
    left = check_bounds(f, x0, (x0 - 1.0, x0), 2, jit=False, check_taylor=False)
    assert float(left.coefficients[1][0]) == left_slope, name
    # The exact range of (f(x) - left_slope·x) / x² over [-1, 0): 0 for leaky_relu, and
    # 0.5·(e^x - 1 - x)/x² in [0.5/e, 0.25] for elu(0.5).
    expected = [0.0, 0.0] if "leaky" in name else [0.5 / np.e, 0.25]
    np.testing.assert_allclose([float(e[0]) for e in left.final_interval()], expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_exact_away_from_the_kink(dtype):
    x0 = np.array([1.0, -1.0, 3.0])
    bounds = check_bounds(jax.nn.relu, x0, (x0 - 0.5, x0 + 0.5), 2, dtype, jit=False)
    np.testing.assert_array_equal(bounds.coefficients[1], [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(bounds.final_interval(), np.zeros((2, 3)))


def test_max_min_exact_where_one_argument_dominates():
    # sin(x) + 2 > cos(x) everywhere: the max is sin(x) + 2 and the min cos(x), enclosure and
    # all (b + relu(a - b) would count the remainder of b twice).
    def same(f, g, x0, region):
        got, want = (compute_bounds(h, 2, x0, region, jit=False) for h in (f, g))
        for a, b in zip(got.coefficients, want.coefficients, strict=True):
            np.testing.assert_array_equal(a, b)

    x0, region = np.array([0.3, -1.0]), (np.array([0.0, -2.0]), np.array([1.0, 0.0]))
    above, below = lambda x: jnp.sin(x) + 2, jnp.cos
    same(lambda x: jnp.maximum(above(x), below(x)), above, x0, region)
    same(lambda x: jnp.maximum(below(x), above(x)), above, x0, region)
    same(lambda x: jnp.minimum(above(x), below(x)), below, x0, region)
    same(lambda x: jnp.minimum(below(x), above(x)), below, x0, region)
    same(lambda x: jnp.maximum(below(x), 3.0), lambda x: jnp.full_like(x, 3.0), x0, region)
    same(lambda x: jnp.minimum(below(x), 3.0), below, x0, region)
    same(lambda x: jnp.clip(below(x), -2.0, 2.0), below, x0, region)
    check_bounds(lambda x: jnp.maximum(above(x), below(x)), x0, region, 2, jit=False)


# --------------------------------------------------------------------------- sharpness


def _remainder_ratio(fn, x0, v, degree):
    """``R_k(v) = (σ(v) - Σ_{i<k} σ^(i)(x0)/i! (v - x0)^i) / (v - x0)^k`` in float64."""
    x0, v = jnp.asarray(x0, jnp.float64), jnp.asarray(v, jnp.float64)
    delta = v - x0
    total = jax.vmap(fn)(v)
    derivative = fn
    for i in range(degree):
        total = total - jax.vmap(derivative)(x0) / math.factorial(i) * delta**i
        derivative = jax.grad(derivative)
    at_x0 = jax.vmap(derivative)(x0) / math.factorial(degree)
    safe = jnp.where(delta == 0, 1.0, delta)
    return np.asarray(jnp.where(delta == 0, at_x0, total / safe**degree)), np.asarray(at_x0)


def _rounding_allowance(fn, x0, v, degree):
    """64 units of ``eps·(|σ(v)| + Σ_{i<k} |d_i Δ^i|) / |Δ|^k``, the cancellation error scale of
    ``R_k(v)``: the engine widens each end by 16 units, and both its direct formula and the
    reference sum ``k + 1`` terms from library calls (``pow``, ``exp``: a few ulps each)."""
    x0, v = jnp.asarray(x0, jnp.float64), jnp.asarray(v, jnp.float64)
    delta = np.abs(np.asarray(v - x0))
    total = np.abs(np.asarray(jax.vmap(fn)(v)))
    derivative = fn
    for i in range(degree):
        total = total + np.abs(np.asarray(jax.vmap(derivative)(x0))) / math.factorial(i) * delta**i
        derivative = jax.grad(derivative)
    safe = np.where(delta == 0, 1.0, delta)
    return np.where(delta == 0, 0.0, 64 * np.finfo(np.float64).eps * total / safe**degree)


def _pieces(points, low, high):
    """The intervals between consecutive critical points (and the outer ends), with margins."""
    ends = [low, *sorted(p for p in points if low < p < high), high]
    return [(a + 0.05, b - 0.05) for a, b in zip(ends, ends[1:], strict=False) if b - a > 0.3]


# name -> (function, its ElementwiseFunction for the monotone pieces, the domain sampled)
SHARP = {
    "exp": (jnp.exp, smooth_functions.EXP, (-4.0, 4.0)),
    "expm1": (jnp.expm1, smooth_functions.EXPM1, (-4.0, 4.0)),
    "log": (jnp.log, smooth_functions.LOG, (0.1, 6.0)),
    "log1p": (jnp.log1p, smooth_functions.LOG1P, (-0.9, 6.0)),
    "sqrt": (jnp.sqrt, smooth_functions.SQRT, (0.1, 6.0)),
    "rsqrt": (jax.lax.rsqrt, smooth_functions.RSQRT, (0.1, 6.0)),
    "1/x": (lambda x: 1 / x, smooth_functions.integer_power(-1), (0.2, 6.0)),
    "x**3": (lambda x: x**3, smooth_functions.integer_power(3), (-3.0, 3.0)),
    "x**4": (lambda x: x**4, smooth_functions.integer_power(4), (-3.0, 3.0)),
    "x**1.5": (lambda x: x**1.5, smooth_functions.real_power(1.5), (0.1, 6.0)),
    "x**-0.7": (lambda x: x**-0.7, smooth_functions.real_power(-0.7), (0.1, 6.0)),
    "sigmoid": (jax.nn.sigmoid, smooth_functions.SIGMOID, (-6.0, 6.0)),
    "tanh": (jnp.tanh, smooth_functions.TANH, (-4.0, 4.0)),
    "softplus": (jax.nn.softplus, smooth_functions.SOFTPLUS, (-6.0, 6.0)),
    "swish": (jax.nn.swish, smooth_functions.SWISH, (-7.0, 7.0)),
    "erf": (erf, smooth_functions.ERF, (-3.0, 3.0)),
}


@pytest.mark.parametrize("name", list(SHARP))
def test_sharp_where_the_derivative_is_monotone(name):
    """On pieces where σ^(k) is monotone the interval is [R_k(lo), R_k(hi)] (sorted), exactly.

    ``R_k`` is evaluated independently in float64 (``jnp`` and ``jax.grad``), on ranges at least
    0.05 wide; the ends must agree up to the rounding allowance of the direct formula.
    """
    fn, spec, (low, high) = SHARP[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for degree in (1, 2, 3):
        pieces = _pieces(spec.critical_points(degree), low, high)
        x0s, los, his = [], [], []
        for i in range(64):
            a, b = pieces[rng.integers(len(pieces))]
            lo, hi = np.sort(rng.uniform(a, b, 2))
            hi = max(hi, lo + min(0.05, b - lo))
            x0s.append(rng.uniform(lo, hi) if i % 2 else lo)
            los.append(lo)
            his.append(hi)
        x0, lo, hi = np.array(x0s), np.array(los), np.array(his)
        bounds = compute_bounds(fn, degree, x0, (lo, hi), jit=False)
        got_lo, got_hi = (np.asarray(e) for e in bounds.final_interval())
        at_lo, d_k = _remainder_ratio(fn, x0, lo, degree)
        at_hi, _ = _remainder_ratio(fn, x0, hi, degree)
        sharp_lo = np.minimum(np.minimum(at_lo, at_hi), d_k)
        sharp_hi = np.maximum(np.maximum(at_lo, at_hi), d_k)
        tolerance = np.maximum(*(_rounding_allowance(fn, x0, v, degree) for v in (lo, hi)))
        np.testing.assert_array_less(np.abs(got_lo - sharp_lo), tolerance + 1e-300)
        np.testing.assert_array_less(np.abs(got_hi - sharp_hi), tolerance + 1e-300)


def test_sharp_is_narrower_than_classical():
    # exp on [0, 1] at 0, degree 2: sharp [1/2, e - 2], classical [1/2, e/2]. The upper end
    # carries the engine's rounding allowance, 16·eps·(e + 1 + 1), and its own rounding.
    bounds = compute_bounds(
        jnp.exp, 2, np.array([0.0]), (np.array([0.0]), np.array([1.0])), jit=False
    )
    lo, hi = (float(e[0]) for e in bounds.final_interval())
    assert lo == 0.5
    assert math.e - 2 <= hi <= math.e - 2 + 20 * np.finfo(np.float64).eps * (math.e + 2)


# --------------------------------------------------------------------------- critical points


def _sign_changes(values, grid):
    """Midpoints of the grid cells where ``values`` changes sign (ignoring negligible values)."""
    keep = np.abs(values) > 1e-12 * np.max(np.abs(values))
    v, g = values[keep], grid[keep]
    flips = np.nonzero(np.sign(v[1:]) != np.sign(v[:-1]))[0]
    return (g[flips] + g[flips + 1]) / 2, g[flips + 1] - g[flips]


TABLES = {
    "sigmoid": (smooth_functions.SIGMOID, jax.nn.sigmoid),
    "tanh": (smooth_functions.TANH, jnp.tanh),
    "softplus": (smooth_functions.SOFTPLUS, jax.nn.softplus),
    "swish": (smooth_functions.SWISH, jax.nn.silu),
    "erf": (smooth_functions.ERF, erf),
    **{
        f"x**{n}": (smooth_functions.integer_power(n), lambda x, n=n: x**n) for n in (2, 3, 4, 5, 6)
    },
}


@pytest.mark.parametrize("name", list(TABLES))
def test_critical_point_tables(name):
    """σ^(j+1) changes sign at each listed extremum of σ^(j), and nowhere else on [-20, 20]."""
    spec, fn = TABLES[name]
    grid = np.linspace(-20, 20, 80_001) + 1e-4 * math.pi  # no grid point hits 0 exactly
    derivative = jax.grad(fn)
    order = 0
    while (points := spec.critical_points(order)) is not None and order <= 6:
        values = np.asarray(jax.jit(jax.vmap(derivative))(jnp.asarray(grid)))
        found, cell = _sign_changes(values, grid)
        assert len(found) == len(points), (order, found, points)
        np.testing.assert_array_less(np.abs(found - np.sort(points)), cell)
        derivative = jax.grad(derivative)
        order += 1
    assert order >= 4, "the tables cover at least degree 3 (and its series term)"


# --------------------------------------------------------------------------- float32


STABLE = {
    "exp": jnp.exp,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "swish": jax.nn.swish,
    "log": lambda x: jnp.log(x + 31),
}


@pytest.mark.parametrize("name", list(STABLE))
def test_float32_tiny_ranges_stay_tight_and_valid(name):
    """At widths of 1e-6 (relative) the direct remainder formula cancels completely in float32.

    The interval must still hold ``σ''(x0)/2`` (float64, at the float32 ``x0``) up to a few float32
    ulps of the Taylor terms (autodiff of ``σ`` in float32 is accurate to that, not relative to
    ``σ''`` itself: ``1 - tanh²`` cancels), and be at most twice the sharp width
    ``max|σ'''|·Δ/6`` plus that rounding: never the classical-bound blow-up, never NaN.
    """
    fn = STABLE[name]
    rng = np.random.default_rng(7)
    x0 = np.concatenate([rng.uniform(-4, 4, 28), [0.0, 1e-3, -30.0, 30.0]]).astype(np.float32)
    reach = (1e-6 * np.maximum(1, np.abs(x0))).astype(np.float32)
    x0 = np.concatenate([x0, x0])
    lo = np.concatenate([x0[: x0.size // 2], x0[: x0.size // 2] - reach])
    hi = np.concatenate([x0[: x0.size // 2] + reach, x0[: x0.size // 2] + reach])
    bounds = compute_bounds(fn, 2, x0, (lo, hi), jit=False)
    got_lo, got_hi = (np.asarray(e, np.float64) for e in bounds.final_interval())
    assert not np.any(np.isnan(got_lo) | np.isnan(got_hi))
    x64 = jnp.asarray(x0, jnp.float64)
    first = np.abs(np.asarray(jax.vmap(jax.grad(fn))(x64)))
    second = np.asarray(jax.vmap(jax.hessian(fn))(x64)) / 2
    third_max = np.maximum(
        *(
            np.abs(np.asarray(jax.vmap(jax.grad(jax.grad(jax.grad(fn))))(jnp.asarray(e, float))))
            for e in (lo, hi)
        )
    )
    value = np.abs(np.asarray(jax.vmap(fn)(x64)))
    slack = 16 * np.finfo(np.float32).eps * (value + first + np.abs(second))
    assert np.all(got_lo - slack <= second) and np.all(second <= got_hi + slack)
    delta = np.maximum(hi - x0, x0 - lo).astype(np.float64)
    assert np.all(got_hi - got_lo <= 2 * third_max * delta / 6 + slack)


def test_float32_saturated_and_large_inputs_never_nan():
    names = ("tanh", "sigmoid", "softplus", "swish")
    x0 = np.array([-80.0, -30.0, 30.0, 80.0, 0.0], np.float32)
    for name in names:
        for lo, hi in ((x0, x0 + 50), (x0 - 50, x0 + 50), (x0, x0 + 1e-5)):
            bounds = compute_bounds(STABLE[name], 2, x0, (lo, hi), jit=False)
            for c in (*bounds.coefficients[:-1], *bounds.final_interval()):
                assert not np.any(np.isnan(c)), (name, lo, hi, bounds)


# --------------------------------------------------------------------------- domains


def test_log_of_a_range_reaching_zero_is_unbounded_not_nan():
    bounds = compute_bounds(
        jnp.log, 2, np.array([0.5]), (np.array([0.0]), np.array([1.0])), jit=False
    )
    lo, hi = bounds.final_interval()
    assert np.isneginf(lo[0]) or np.isposinf(hi[0])
    assert not np.any(np.isnan(bounds.final_interval()))


def test_negative_power_with_zero_in_range_is_unbounded_not_nan():
    for fn in (lambda x: 1 / x, lambda x: x**-2, jax.lax.rsqrt):
        bounds = compute_bounds(
            fn, 2, np.array([0.5]), (np.array([-0.5]), np.array([1.0])), jit=False
        )
        assert not np.any(np.isnan(bounds.final_interval()))
        assert not np.all(np.isfinite(bounds.final_interval()))


def test_register_elementwise_with_a_domain():
    def shifted_log(x):
        return jnp.log(x - 1.0)

    spec = ab.register_elementwise(
        "shifted_log", jax.jit(shifted_log), domain=(1.0, math.inf), critical_points=()
    )
    assert spec.name == "shifted_log"
    check_bounds(jax.jit(shifted_log), [2.0, 3.0], ([1.5, 2.5], [3.0, 4.0]), 2, jit=False)


def test_register_elementwise_with_an_open_lower_domain_end():
    def log_minus_one(x):
        return jnp.log(x) - 1.0

    function = jax.jit(log_minus_one)
    ab.register_elementwise(
        "log_minus_one", function, domain=(0.0, math.inf), domain_open_lower=True
    )
    check_bounds(function, [2.0, 0.5], ([1.0, 0.25], [3.0, 1.0]), 2, jit=False)
    # A range that reaches the excluded end 0 is unbounded, never log(0) = -inf arithmetic.
    bounds = compute_bounds(function, 2, np.array([1.0]), (np.array([0.0]), np.array([2.0])))
    lo, hi = bounds.final_interval()
    assert np.isneginf(lo).all() and np.isposinf(hi).all()
