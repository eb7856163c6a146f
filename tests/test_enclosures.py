"""Taylor-enclosure arithmetic (``autobound.enclosures``): every operation is sound.

A random enclosure ``(c_0, …, c_{m-1}, [lo, hi])`` over a trust region ``T`` stands for every
function ``u(t) = Σ c_i t^i + r(t)·t^m`` with ``r(t) ∈ [lo, hi]``; the tests draw such members
(``r`` constant, or varying with ``t``) and check that the result of each operation encloses the
operation applied to the members. Everything is float64; the tolerance is the dtype's (a few
ulps of the magnitude of the terms, ``helpers.FLOAT64_ULPS``).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tolerance_factor
from hypothesis import given
from hypothesis import strategies as st

from optax_saferate.autobound import enclosures
from optax_saferate.autobound import intervals
from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval

pytestmark = pytest.mark.usefixtures("autobound_numerics")

SHAPE = (3, 4)
TOLERANCE = tolerance_factor(np.float64)
# No magnitudes below 1e-6: XLA flushes subnormal products to zero on CPU, numpy does not.
coefficient = st.one_of(st.just(0.0), st.floats(1e-6, 3), st.floats(-3, -1e-6))


def _array(draw, shape=SHAPE, elements=coefficient):
    size = int(np.prod(shape))
    return np.array(draw(st.lists(elements, min_size=size, max_size=size))).reshape(shape)


@st.composite
def contexts(draw):
    left = draw(st.sampled_from([0.0, 0.0, 1e-6, 0.3, 1.0, 2.0]))
    right = draw(st.sampled_from([0.0, 1e-6, 0.5, 1.0, 2.0]))
    return Context(Interval(jnp.asarray(-left), jnp.asarray(right)), draw(st.integers(1, 3)))


@st.composite
def enclosures_of(draw, ctx: Context, shape=SHAPE, exact=None):
    """An enclosure of degree ``ctx.degree``: exact (up to degree k + 1) or with a remainder."""
    exact = draw(st.booleans()) if exact is None else exact
    k = ctx.degree
    if exact:
        count = draw(st.integers(1, k + 1))
        return TaylorEnclosure(tuple(_array(draw, shape) for _ in range(count)), None)
    coefficients = tuple(_array(draw, shape) for _ in range(k))
    a, b = _array(draw, shape), _array(draw, shape)
    return TaylorEnclosure(coefficients, Interval(np.minimum(a, b), np.maximum(a, b)))


def _offsets(ctx: Context, count=9):
    lo, hi = float(ctx.trust_region.lo), float(ctx.trust_region.hi)
    return np.unique(np.concatenate([[lo, hi, 0.0], np.linspace(lo, hi, count)]))


@st.composite
def members(draw, enclosure: TaylorEnclosure, ctx: Context):
    """A function of ``t`` inside the enclosure, as its values at ``_offsets(ctx)``."""
    ts = _offsets(ctx)
    values = []
    fractions = None
    if enclosure.remainder is not None:
        # r(t) between the ends: either one fraction for all t or a new one per t.
        constant = draw(st.booleans())
        fractions = [_array(draw, enclosure.shape, st.floats(0, 1))] * len(ts)
        if not constant:
            fractions = [_array(draw, enclosure.shape, st.floats(0, 1)) for _ in ts]
    for i, t in enumerate(ts):
        value = sum(np.asarray(c) * t**j for j, c in enumerate(enclosure.coefficients))
        if enclosure.remainder is not None:
            lo, hi = (np.asarray(e) for e in enclosure.remainder)
            r = lo + fractions[i] * (hi - lo)
            value = value + r * t ** len(enclosure.coefficients)
        values.append(np.broadcast_to(value, enclosure.shape))
    return np.stack(values)


def _bounds_at(enclosure: TaylorEnclosure, t):
    """The enclosure's lower and upper values at offset ``t`` and the magnitude of its terms."""
    value = 0.0
    magnitude = 0.0
    for j, c in enumerate(enclosure.coefficients):
        c = np.asarray(c, np.float64)
        value = value + c * t**j
        magnitude = magnitude + np.abs(c) * abs(t) ** j
    low = high = value
    if enclosure.remainder is not None:
        m = len(enclosure.coefficients)
        ends = [np.asarray(e, np.float64) * t**m for e in enclosure.remainder]
        low, high = value + np.minimum(*ends), value + np.maximum(*ends)
        magnitude = magnitude + np.maximum(*(np.abs(e) for e in ends))
    return low, high, magnitude


def assert_encloses(enclosure: TaylorEnclosure, ctx: Context, values, scale=0.0):
    """``values[i]`` (at ``_offsets(ctx)[i]``) lie in the enclosure, up to rounding."""
    assert len(enclosure.coefficients) <= ctx.degree + (1 if enclosure.remainder is None else 0)
    if enclosure.remainder is not None:
        assert len(enclosure.coefficients) == ctx.degree
        assert np.all(np.asarray(enclosure.remainder.lo) <= np.asarray(enclosure.remainder.hi))
    for t, value in zip(_offsets(ctx), values, strict=True):
        low, high, magnitude = _bounds_at(enclosure, t)
        slack = TOLERANCE * (magnitude + np.abs(value) + scale)
        assert np.all(low - slack <= value), (t, low, value)
        assert np.all(value <= high + slack), (t, high, value)


@given(st.data())
def test_add_and_negate(data):
    ctx = data.draw(contexts())
    a, b = data.draw(enclosures_of(ctx)), data.draw(enclosures_of(ctx))
    u, w = data.draw(members(a, ctx)), data.draw(members(b, ctx))
    # The sums may cancel: rounding is relative to the operands' magnitudes.
    scale = sum(_bounds_at(a, t)[2] + _bounds_at(b, t)[2] for t in _offsets(ctx))
    assert_encloses(enclosures.add(a, b, ctx), ctx, u + w, scale)
    assert_encloses(enclosures.negate(a), ctx, -u)
    c = _array(data.draw, SHAPE)
    assert_encloses(enclosures.add_constant(a, c), ctx, u + c, scale + np.abs(c))
    assert_encloses(enclosures.scale(a, c), ctx, u * c)


@given(st.data())
def test_multiply_elementwise(data):
    ctx = data.draw(contexts())
    a, b = data.draw(enclosures_of(ctx)), data.draw(enclosures_of(ctx))
    u, w = data.draw(members(a, ctx)), data.draw(members(b, ctx))
    product = enclosures.multiply(a, b, ctx)
    scale = sum(_bounds_at(a, t)[2] * _bounds_at(b, t)[2] for t in _offsets(ctx))
    assert_encloses(product, ctx, u * w, scale)


def _matmul(x, y):
    return jnp.matmul(x, y)


@given(st.data())
def test_multiply_bilinear_dot_general(data):
    ctx = data.draw(contexts())
    a = data.draw(enclosures_of(ctx, (3, 4)))
    b = data.draw(enclosures_of(ctx, (4, 2)))
    u, w = data.draw(members(a, ctx)), data.draw(members(b, ctx))
    product = enclosures.multiply(a, b, ctx, op=_matmul, elementwise=False)
    assert product.shape == (3, 2)
    scale = np.max(np.abs(u) @ np.abs(w))
    assert_encloses(product, ctx, u @ w, 4 * scale)


@given(st.data())
def test_map_linear_with_mixed_signs(data):
    ctx = data.draw(contexts())
    a = data.draw(enclosures_of(ctx, (3, 4)))
    u = data.draw(members(a, ctx))
    weights = _array(data.draw, (4, 2))
    mapped = enclosures.map_linear(lambda x: x @ weights, lambda x: x @ np.abs(weights), a)
    assert_encloses(mapped, ctx, u @ weights, np.max(np.abs(u) @ np.abs(weights)))


@given(st.data())
def test_map_monotone_and_combine_monotone(data):
    ctx = data.draw(contexts())
    a, b = data.draw(enclosures_of(ctx)), data.draw(enclosures_of(ctx))
    u, w = data.draw(members(a, ctx)), data.draw(members(b, ctx))
    summed = enclosures.map_monotone(lambda x: jnp.sum(x, axis=1), a)
    assert_encloses(summed, ctx, u.sum(axis=2), np.max(np.abs(u)) * SHAPE[1])
    joined = enclosures.combine_monotone(lambda x, y: jnp.concatenate([x, y], 0), [a, b], ctx)
    assert_encloses(joined, ctx, np.concatenate([u, w], 1))
    constant = _array(data.draw, SHAPE)
    with_constant = enclosures.combine_monotone(
        lambda x, y: jnp.concatenate([x, y], 1), [a, constant], ctx
    )
    assert_encloses(with_constant, ctx, np.concatenate([u, np.broadcast_to(constant, u.shape)], 2))


@given(st.data())
def test_fold_of_a_long_polynomial(data):
    ctx = data.draw(contexts())
    count = data.draw(st.integers(1, ctx.degree + 4))
    coefficients = [_array(data.draw, SHAPE) for _ in range(count)]
    exact = TaylorEnclosure(tuple(coefficients), None)
    values = data.draw(members(exact, ctx))
    folded = enclosures.fold(coefficients, ctx)
    assert_encloses(folded, ctx, values)
    if count <= ctx.degree + 1:
        assert folded.remainder is None  # short polynomials stay exact


@given(st.data(), st.integers(1, 5))
def test_power(data, n):
    ctx = data.draw(contexts())
    a = data.draw(enclosures_of(ctx))
    u = data.draw(members(a, ctx))
    scale = sum(_bounds_at(a, t)[2] ** n for t in _offsets(ctx)) * 2**n
    assert_encloses(enclosures.power(a, n, ctx), ctx, u**n, scale)


def _dense_range(coefficients, ctx, remainder_values=(None,)):
    """Min and max over a dense grid of ``T`` (plus the vertex) of the quadratic."""
    lo, hi = float(ctx.trust_region.lo), float(ctx.trust_region.hi)
    ts = np.linspace(lo, hi, 2001)
    lows, highs = [], []
    for r in remainder_values:
        cs = [np.asarray(c) for c in coefficients] + ([] if r is None else [r])
        values = [sum(c * t**j for j, c in enumerate(cs)) for t in ts]
        if len(cs) == 3:
            c0, c1, c2 = cs
            with np.errstate(divide="ignore", invalid="ignore"):
                vertex = np.clip(np.where(c2 == 0, 0.0, -c1 / (2 * c2)), lo, hi)
            values.append(c0 + vertex * (c1 + c2 * vertex))
        lows.append(np.min(values, 0))
        highs.append(np.max(values, 0))
    return np.min(lows, 0), np.max(highs, 0)


@given(st.data())
def test_range_over_is_exact_for_quadratics(data):
    ctx = data.draw(contexts())
    ctx = Context(ctx.trust_region, 2)
    # An exact quadratic: the range is attained at an end or at the vertex.
    quadratic = data.draw(enclosures_of(ctx, exact=True))
    r = enclosures.range_over(quadratic, ctx)
    low, high = _dense_range(quadratic.coefficients, ctx)
    np.testing.assert_allclose(r.lo, low, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.hi, high, rtol=1e-12, atol=1e-12)
    # (c0, c1, [lo, hi]): the union of the ranges for c2 = lo and c2 = hi (t² >= 0).
    enclosure = data.draw(enclosures_of(ctx, exact=False))
    r = enclosures.range_over(enclosure, ctx)
    ends = tuple(np.asarray(e) for e in enclosure.remainder)
    low, high = _dense_range(enclosure.coefficients, ctx, ends)
    np.testing.assert_allclose(r.lo, low, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.hi, high, rtol=1e-12, atol=1e-12)


@given(st.data())
def test_range_over_and_increment_range_contain(data):
    ctx = data.draw(contexts())
    a = data.draw(enclosures_of(ctx))
    u = data.draw(members(a, ctx))
    r = enclosures.range_over(a, ctx)
    scale = max(_bounds_at(a, t)[2].max() for t in _offsets(ctx))
    slack = TOLERANCE * scale
    assert np.all(np.asarray(r.lo) - slack <= u) and np.all(u <= np.asarray(r.hi) + slack)
    v = enclosures.increment_range(a, ctx)
    v = v if isinstance(v, Interval) else intervals.point(v)
    c0 = np.asarray(a.coefficients[0])
    for t, value in zip(_offsets(ctx), u, strict=True):
        if t != 0:
            slope = (value - c0) / t
            slack = TOLERANCE * scale / abs(t)
            assert np.all(np.asarray(v.lo) - slack <= slope), t
            assert np.all(slope <= np.asarray(v.hi) + slack), t


@given(st.data())
def test_polynomial_range(data):
    ctx = data.draw(contexts())
    count = data.draw(st.integers(1, 5))
    coefficients = [_array(data.draw, SHAPE) for _ in range(count)]
    r = enclosures.polynomial_range(coefficients, ctx.trust_region)
    low, high = _dense_range(coefficients, ctx)
    scale = sum(np.abs(c) for c in coefficients) * 2.0**count
    slack = TOLERANCE * scale
    assert np.all(np.asarray(r.lo) <= low + slack) and np.all(high - slack <= np.asarray(r.hi))
    if count <= 3:  # exact up to degree 2
        np.testing.assert_allclose(r.lo, low, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(r.hi, high, rtol=1e-12, atol=1e-12)


@given(st.data())
def test_apply_bilinear_interval_operands(data):
    left = (_array(data.draw, (3, 4)), _array(data.draw, (3, 4)))
    right = (_array(data.draw, (4, 2)), _array(data.draw, (4, 2)))
    x = Interval(np.minimum(*left), np.maximum(*left))
    y = Interval(np.minimum(*right), np.maximum(*right))
    fx = _array(data.draw, (3, 4), st.floats(0, 1))
    fy = _array(data.draw, (4, 2), st.floats(0, 1))
    px = np.asarray(x.lo) + fx * (np.asarray(x.hi) - np.asarray(x.lo))
    py = np.asarray(y.lo) + fy * (np.asarray(y.hi) - np.asarray(y.lo))
    scale = np.abs(np.maximum(np.abs(x.lo), np.abs(x.hi))) @ np.maximum(np.abs(y.lo), np.abs(y.hi))
    slack = 4 * TOLERANCE * scale
    for result, value in (
        (enclosures.apply_bilinear(_matmul, x, y), px @ py),
        (enclosures.apply_bilinear(_matmul, x, py), px @ py),
        (enclosures.apply_bilinear(_matmul, px, y), px @ py),
    ):
        assert np.all(np.asarray(result.lo) - slack <= value)
        assert np.all(value <= np.asarray(result.hi) + slack)
    exact = enclosures.apply_bilinear(_matmul, px, py)
    np.testing.assert_allclose(exact, px @ py, rtol=1e-14, atol=1e-14)


def test_multiply_exact_operands_stays_exact():
    ctx = Context(Interval(jnp.asarray(0.0), jnp.asarray(1.0)), 2)
    a = enclosures.exact(np.ones(SHAPE), 2 * np.ones(SHAPE))
    b = enclosures.exact(3 * np.ones(SHAPE), -np.ones(SHAPE))
    product = enclosures.multiply(a, b, ctx)
    assert product.remainder is None
    np.testing.assert_allclose([np.asarray(c)[0, 0] for c in product.coefficients], [3, 5, -2])
