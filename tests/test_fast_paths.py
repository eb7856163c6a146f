"""The structural fast paths of the engine (issue 6) give the same sound bounds as the general path.

* A trust region with an end known to be the reference point (``taylor_bounds(f, 2)(0.0, (0.0,
  h))``, SafeRate's call) lets a smooth function of a linear input bound its remainder at the far
  end only; a relu of a linear input then has a ``[0, hi]`` remainder (``intervals.FromZero``)
  that the next contraction uses without the midpoint-radius form.
* ``dot_general`` against several right operands is one matmul over their concatenation.

Each fast path is compared with the general path (the same call with a traced reference point,
which hides the structure) and checked for soundness at sampled points.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from optax_saferate import autobound as ab
from optax_saferate.autobound import enclosures
from optax_saferate.autobound import intervals

pytestmark = pytest.mark.usefixtures("autobound_numerics")

SMOOTH = {
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "swish": jax.nn.swish,
    "exp": jnp.exp,
    "erf": jax.scipy.special.erf,
    "sin": jnp.sin,
    "log(6+u)": lambda u: jnp.log(6.0 + u),
}


def _general(f, degree, x0, region):
    """The same bounds with the reference point traced: no structural fast path applies."""
    return jax.jit(lambda x0, lo, hi: ab.taylor_bounds(f, degree)(x0, (lo, hi)).coefficients)(
        x0, *region
    )


def _assert_sound(f, bounds, points, dtype):
    for t in points:
        value = np.asarray(f(jnp.asarray(t, jnp.float64)), np.float64)
        lower = np.asarray(bounds.lower(jnp.asarray(t, dtype)), np.float64)
        upper = np.asarray(bounds.upper(jnp.asarray(t, dtype)), np.float64)
        # Outside the function's domain (log(6+u) with 6+u < 0 somewhere in the region) the
        # value is NaN and the only sound enclosure is the whole line.
        undefined = np.isnan(value)
        assert np.all(np.isneginf(lower[undefined]) & np.isposinf(upper[undefined])), t
        value, lower, upper = value[~undefined], lower[~undefined], upper[~undefined]
        scale = 1e-5 if dtype == jnp.float32 else 1e-12
        slack = scale * (1 + np.abs(value))
        assert np.all(lower <= value + slack), (t, np.max(lower - value, initial=-np.inf))
        assert np.all(value <= upper + slack), (t, np.max(value - upper, initial=-np.inf))


# Sized from the profile (8 by default, 80 under the thorough profile): each example traces and
# compiles a new function, so the default run draws two fifths of the profile's count.
@settings(max_examples=max(1, settings.default.max_examples * 2 // 5), deadline=None)
@given(
    name=st.sampled_from(sorted(SMOOTH)),
    seed=st.integers(0, 2**16),
    log_width=st.floats(-6, 0.5),
    negative=st.booleans(),
    double=st.booleans(),
    degree=st.sampled_from([1, 2, 3]),
)
# Found by the thorough profile: 6 + u < 0 inside the region, so the function is NaN there.
@example(name="log(6+u)", seed=0, log_width=0.0, negative=False, double=False, degree=1)
def test_far_end_remainder_matches_the_general_path(
    name, seed, log_width, negative, double, degree
):
    dtype = jnp.float64 if double else jnp.float32
    rng = np.random.default_rng(seed)
    u0 = jnp.asarray(rng.uniform(-4, 4, 64), dtype)
    u1 = jnp.asarray(rng.normal(size=64) * rng.choice([1e-3, 1, 10], 64), dtype)
    sigma = SMOOTH[name]

    def f(t):
        return sigma(u0.astype(jnp.result_type(t)) + t * u1.astype(jnp.result_type(t)))

    width = 10.0**log_width
    region = (-width, 0.0) if negative else (0.0, width)
    zero = np.zeros((), dtype)
    fast = ab.taylor_bounds(f, degree)(zero, tuple(np.asarray(e, dtype) for e in region))
    general = _general(
        f, degree, jnp.asarray(0, dtype), tuple(jnp.asarray(e, dtype) for e in region)
    )
    for c_fast, c_general in zip(fast.coefficients[:-1], general[:-1], strict=True):
        np.testing.assert_allclose(c_fast, c_general, rtol=1e-6 if double else 1e-5)
    (lo_fast, hi_fast), (lo_general, hi_general) = fast.coefficients[-1], general[-1]
    # The far-end path is the general one without the (exactly known) near end: equal bounds.
    scale = 1e-9 if double else 1e-4
    slack = scale * (1 + np.abs(np.asarray(hi_general)) + np.abs(np.asarray(lo_general)))
    assert np.all(np.asarray(lo_fast) >= np.asarray(lo_general) - slack)
    assert np.all(np.asarray(hi_fast) <= np.asarray(hi_general) + slack)
    points = np.linspace(region[0], region[1], 9)
    _assert_sound(f, fast, points, dtype)


def test_saferate_call_shape_takes_the_far_end_path(monkeypatch):
    """A Python/NumPy zero reference point and lower end reach the rules as known zeros; a
    traced reference point does not."""
    from optax_saferate.autobound import elementwise

    far_ends = []
    original = elementwise._far_end

    def spy(*args):
        far_ends.append(original(*args))
        return far_ends[-1]

    monkeypatch.setattr(elementwise, "_far_end", spy)
    f = lambda t: jax.nn.softplus(1.0 + 2.0 * t)  # noqa: E731
    ab.taylor_bounds(f, 2)(0.0, (0.0, 1.0))
    assert far_ends[-1] is not None
    _general(f, 2, jnp.asarray(0.0), (jnp.asarray(0.0), jnp.asarray(1.0)))
    assert far_ends[-1] is None


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_relu_mlp_from_zero_remainder_is_sound_and_no_looser(dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 6)), dtype)
    w1, d1 = (jnp.asarray(rng.normal(size=(6, 16)), dtype) for _ in range(2))
    w2, d2 = (jnp.asarray(rng.normal(size=(16, 3)), dtype) for _ in range(2))

    def f(t):
        t = t.astype(dtype)
        h = jax.nn.relu(x @ (w1 + t * d1))
        return jnp.sum((h @ (w2 + t * d2)) ** 2)

    zero = np.zeros((), dtype)
    for width in (1e-3, 0.1, 1.0):
        fast = ab.taylor_bounds(f, 2)(zero, (zero, np.asarray(width, dtype)))
        general = _general(
            f, 2, jnp.asarray(0, dtype), (jnp.asarray(0, dtype), jnp.asarray(width, dtype))
        )
        lo_fast, hi_fast = (float(e) for e in fast.coefficients[-1])
        lo_general, hi_general = (float(e) for e in general[-1])
        slack = (1e-4 if dtype == jnp.float32 else 1e-10) * (abs(lo_general) + abs(hi_general))
        assert lo_fast >= lo_general - slack and hi_fast <= hi_general + slack
        _assert_sound(f, fast, np.linspace(0.0, width, 17), dtype)


def test_from_zero_contraction_is_exact_and_never_nan():
    rng = np.random.default_rng(1)
    h = jnp.asarray(np.abs(rng.normal(size=(5, 7))))
    h = h.at[0, 0].set(jnp.inf)
    low = jnp.asarray(rng.normal(size=(7, 3)))
    high = low + jnp.abs(jnp.asarray(rng.normal(size=(7, 3))))
    low = low.at[1, 1].set(-jnp.inf)
    op = jnp.matmul
    result = enclosures.apply_bilinear(
        op, intervals.FromZero(jnp.zeros_like(h), h), intervals.Interval(low, high)
    )
    assert not np.any(np.isnan(np.asarray(result.lo))) and not np.any(
        np.isnan(np.asarray(result.hi))
    )
    # Extreme points of the product of boxes: every x in {0, h} and w in {low, high} corner-wise.
    finite_h = jnp.where(jnp.isinf(h), 0.0, h)
    finite_low = jnp.where(jnp.isinf(low), -1e3, low)
    for x in (jnp.zeros_like(h), finite_h):
        for w in (finite_low, high):
            value = np.asarray(op(x, w))
            assert np.all(np.asarray(result.lo) <= value + 1e-12)
            assert np.all(value <= np.asarray(result.hi) + 1e-12)
    # The rows without infinities are exact: attained by the extreme corners.
    exact_lo = np.asarray(op(finite_h, jnp.minimum(finite_low, 0)))
    np.testing.assert_allclose(np.asarray(result.lo)[1:, [0, 2]], exact_lo[1:, [0, 2]])


@pytest.mark.parametrize(
    "x_shape,y_shape,dimension_numbers",
    [
        ((4, 5), (5, 3), (((1,), (0,)), ((), ()))),
        ((2, 4, 5), (2, 5, 3), (((2,), (1,)), ((0,), (0,)))),
        ((4, 5), (3, 5), (((1,), (1,)), ((), ()))),
        ((6, 4, 5), (5, 2, 3), (((2,), (0,)), ((), ()))),
    ],
)
def test_batched_dot_general_equals_separate_dots(x_shape, y_shape, dimension_numbers):
    from optax_saferate.autobound.rules import bilinear

    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=x_shape))
    ys = [jnp.asarray(rng.normal(size=y_shape)) for _ in range(3)]
    params = dict(
        dimension_numbers=dimension_numbers,
        precision=None,
        preferred_element_type=jnp.float64,
        out_sharding=None,
    )
    many = bilinear._dot_general_many(params)(x, ys)
    for y, out in zip(ys, many, strict=True):
        expected = jax.lax.dot_general(x, y, dimension_numbers, preferred_element_type=jnp.float64)
        np.testing.assert_allclose(out, expected, rtol=1e-12)
