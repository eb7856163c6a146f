"""Containment properties of the interval arithmetic (``autobound.intervals``).

Each operation must return an interval holding the operation's value at every choice of points
in its operand intervals. The endpoint formulas use the same floating-point operations as the
pointwise values, and rounding is monotone, so containment is checked without tolerance.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optax_saferate.autobound import intervals
from optax_saferate.autobound.intervals import Interval

pytestmark = pytest.mark.usefixtures("autobound_numerics")

SIZE = 6
# XLA flushes subnormal numbers to zero on CPU, so they are left out.
finite = st.floats(-1e3, 1e3, allow_subnormal=False)
tiny_or_finite = st.one_of(
    finite, st.floats(-1e-30, 1e-30, allow_subnormal=False), st.sampled_from([0.0, -0.0])
)


@st.composite
def interval_arrays(draw, elements=tiny_or_finite):
    ends = np.array(draw(st.lists(st.tuples(elements, elements), min_size=SIZE, max_size=SIZE)))
    lo, hi = np.minimum(ends[:, 0], ends[:, 1]), np.maximum(ends[:, 0], ends[:, 1])
    return Interval(jnp.asarray(lo), jnp.asarray(hi))


@st.composite
def points_in(draw, a: Interval, count: int = 5):
    """Points of each interval: both ends and random fractions (rounded into the interval)."""
    fractions = np.array(
        draw(st.lists(st.floats(0, 1), min_size=count * SIZE, max_size=count * SIZE))
    ).reshape(count, SIZE)
    lo, hi = np.asarray(a.lo), np.asarray(a.hi)
    inner = np.clip(lo + fractions * (hi - lo), lo, hi)
    return jnp.asarray(np.concatenate([lo[None], hi[None], inner]))


def assert_contains(a: Interval, values):
    lo, hi, values = np.asarray(a.lo), np.asarray(a.hi), np.asarray(values)
    assert np.all(lo <= hi)
    assert np.all((lo <= values) & (values <= hi)), (lo, hi, values)


@given(st.data())
def test_add_negate_shift_contain(data):
    a, b = data.draw(interval_arrays()), data.draw(interval_arrays())
    x, y = data.draw(points_in(a)), data.draw(points_in(b))
    c = jnp.asarray(data.draw(st.lists(finite, min_size=SIZE, max_size=SIZE)))
    assert_contains(intervals.add(a, b), x + y)
    assert_contains(intervals.negate(a), -x)
    assert_contains(intervals.shift(a, c), x + c[None])


@given(st.data())
def test_multiply_contains_and_is_exact_at_the_ends(data):
    a, b = data.draw(interval_arrays()), data.draw(interval_arrays())
    x, y = data.draw(points_in(a)), data.draw(points_in(b))
    product = intervals.multiply(a, b)
    assert_contains(product, x[:, None] * y[None, :])
    corners = np.stack([a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi])
    np.testing.assert_array_equal(product.lo, corners.min(0))
    np.testing.assert_array_equal(product.hi, corners.max(0))


@given(st.data())
def test_square_contains_and_is_nonnegative(data):
    a = data.draw(interval_arrays())
    x = data.draw(points_in(a))
    square = intervals.square(a)
    assert_contains(square, x * x)
    assert np.all(np.asarray(square.lo) >= 0)
    straddles = (np.asarray(a.lo) <= 0) & (np.asarray(a.hi) >= 0)
    assert np.all(np.asarray(square.lo)[straddles] == 0)


@given(st.data(), st.integers(0, 7))
def test_integer_power_contains(data, n):
    a = data.draw(interval_arrays(st.floats(-30, 30)))
    x = data.draw(points_in(a))
    power = intervals.integer_power(a, n)
    assert_contains(power, x**n)
    # The range is exact: its ends are attained.
    attained = np.concatenate([np.asarray(x**n), np.zeros((1, SIZE))])
    straddles = (np.asarray(a.lo) <= 0) & (np.asarray(a.hi) >= 0)
    candidates = np.where(straddles & (n > 0), attained.min(0), np.asarray(x**n).min(0))
    np.testing.assert_array_equal(power.lo, candidates)
    np.testing.assert_array_equal(power.hi, np.asarray(x**n).max(0))


@given(st.data())
def test_scale_contains_for_either_sign(data):
    a = data.draw(interval_arrays())
    x = data.draw(points_in(a))
    c = jnp.asarray(data.draw(st.lists(tiny_or_finite, min_size=SIZE, max_size=SIZE)))
    assert_contains(intervals.scale(a, c), c[None] * x)


@given(st.data())
def test_midpoint_radius_contains_the_interval(data):
    a = data.draw(interval_arrays())
    mid, rad = intervals.midpoint_radius(a)
    assert np.all(np.asarray(rad) >= 0)
    assert_contains(intervals.from_midpoint_radius(mid, rad), jnp.stack([a.lo, a.hi]))


@given(st.data())
def test_hull_and_intersect(data):
    a, b = data.draw(interval_arrays()), data.draw(interval_arrays())
    x, y = data.draw(points_in(a)), data.draw(points_in(b))
    hull = intervals.hull(a, b)
    assert_contains(hull, x)
    assert_contains(hull, y)
    assert np.all(np.asarray(hull.lo) == np.minimum(a.lo, b.lo))
    overlap = intervals.intersect(a, hull)
    np.testing.assert_array_equal(overlap.lo, a.lo)
    np.testing.assert_array_equal(overlap.hi, a.hi)


def test_point_width_contains_and_entire():
    x = jnp.array([-1.5, 0.0, 2.0])
    p = intervals.point(x)
    np.testing.assert_array_equal(intervals.width(p), 0.0)
    assert np.all(intervals.contains(p, x))
    assert not np.any(intervals.contains(p, x + 1e-9))
    assert np.all(intervals.contains(p, x + 1e-9, tolerance=1e-8))
    entire = intervals.entire_like(x)
    assert entire.shape == (3,)
    assert np.all(intervals.contains(entire, jnp.array([-1e308, 0.0, 1e308])))
    assert np.all(np.isinf(intervals.width(entire)))


def test_integer_power_zero_and_float32_dtype():
    a = Interval(jnp.array([-2.0, 0.5], jnp.float32), jnp.array([3.0, 1.0], jnp.float32))
    one = intervals.integer_power(a, 0)
    np.testing.assert_array_equal(one.lo, 1.0)
    assert one.lo.dtype == jnp.float32
    assert intervals.square(a).lo.dtype == jnp.float32


def test_midpoint_radius_survives_rounding_of_the_distances():
    # mid = -0.5 and mid - lo = 0.5 + 1e-100 rounds to 0.5: a bare radius would miss hi.
    a = Interval(jnp.array([-1.0, 3.0]), jnp.array([1e-100, 3.0]))
    mid, rad = intervals.midpoint_radius(a)
    enclosing = intervals.from_midpoint_radius(mid, rad)
    assert np.all(np.asarray(enclosing.lo) <= np.asarray(a.lo))
    assert np.all(np.asarray(enclosing.hi) >= np.asarray(a.hi))
    assert float(rad[1]) == 0.0  # a point stays a point
