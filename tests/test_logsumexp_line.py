"""Soundness of the log-sum-exp line bounds (``autobound/logsumexp_line.py``).

Against a 60-digit mpmath reference of the exact function:

* :func:`logsumexp_line.phi` is ``(e^x - 1 - x)/x²`` to a few ulps, positive and increasing;
* :func:`logsumexp_line.remainder_sup` and :func:`logsumexp_line.tilt_bound` bound
  ``N(t)/t²``, ``N(t) = LSE(z_0 + t·z_1) - LSE(z_0) - t·p·z_1``, at dense points of ``(0, T]``
  (and, with the slope negated as the enclosure does, of ``[-T, 0)``), for logits and slopes of
  every scale (Adam directions give slope spreads of hundreds), classes of vanishing or zero
  probability, trust regions from 1e-6 to 10, float64 and float32;
* :func:`logsumexp_line.tilt_range` bounds the total variation of the softmax over the box;
* the enclosure of log-sum-exp that uses them is sound (``helpers.check_bounds``) for
  exact-linear logits of large spread, as in logistic regression, and for logits with an
  interval remainder.

Example counts come from the hypothesis profile (conftest.py).
"""

import functools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from helpers import check_bounds
from helpers import random_cases
from helpers import rounded
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from optax_saferate.autobound import intervals
from optax_saferate.autobound import logsumexp_line

pytestmark = pytest.mark.usefixtures("autobound_numerics")

mpmath.mp.dps = 60
ROWS, CLASSES = 3, 6
AXES = (1,)
# Points of (0, T] where the reference N(t)/t² is evaluated: geometric down to T·1e-6.
REFERENCE_POINTS = np.concatenate([np.geomspace(1e-6, 1, 60), np.linspace(0.05, 1, 20)])
# Rounding of the inputs (p and d carry relative errors of eps·|z_0| and absolute errors of
# eps·|z_1|), in units of eps.
ROUNDING_UNITS = 64
UNDERFLOW_UNITS = 64


def _exact_softmax(z0_row, slope_row):
    """``softmax(z_0)`` of one row and the slopes of its classes (mpmath), skipping the classes
    whose logit is ``-inf`` (probability 0)."""
    keep = [i for i, z in enumerate(z0_row) if np.isfinite(z)]
    z0 = [mpmath.mpf(float(z0_row[i])) for i in keep]
    top = max(z0)
    weights = [mpmath.exp(z - top) for z in z0]
    total = mpmath.fsum(weights)
    return [w / total for w in weights], [mpmath.mpf(float(slope_row[i])) for i in keep]


def _exact_remainders(z0_row, z1_row, reaches):
    """``N(t)/t²`` for one row at each ``t`` in ``reaches`` (mpmath), skipping -inf logits,
    and its sensitivity to the rounding of the slope: ``Σ_i |q_i(t) - p_i|·|z_1|_max / t``
    (``∂N/∂d_i = t·q_i(t)``, and the centring moves every ``d_i`` by the same amount)."""
    p, z1 = _exact_softmax(z0_row, z1_row)
    mean = mpmath.fsum(pi * d for pi, d in zip(p, z1, strict=True))
    d = [z - mean for z in z1]
    slope_size = max(abs(z) for z in z1)
    values, sensitivities = [], []
    for t in reaches:
        t = mpmath.mpf(float(t))
        # N = log(1 + S), S = Σ p (e^{td} - 1 - td): positive terms, so no cancellation even
        # where N is 1e-50 (log Σ p e^{td} would need 70 digits there).
        excess = mpmath.fsum(
            pi * (mpmath.expm1(t * di) - t * di) for pi, di in zip(p, d, strict=True)
        )
        tilted = [pi * mpmath.exp(t * di) for pi, di in zip(p, d, strict=True)]
        total = mpmath.fsum(tilted)
        variation = mpmath.fsum(abs(w / total - pi) for w, pi in zip(tilted, p, strict=True))
        values.append(float(mpmath.log1p(excess) / (t * t)))
        sensitivities.append(float(variation * slope_size / t))
    return np.array(values), np.array(sensitivities)


def _line_inputs(z0, z1, dtype):
    """``log p``, ``p`` and the centred slope ``d``, computed in ``dtype`` as the enclosure
    computes them (``logsumexp._line_bounds``)."""
    z0, z1 = jnp.asarray(z0, dtype), jnp.asarray(z1, dtype)
    value = jax.nn.logsumexp(z0, axis=AXES)
    log_p = z0 - value[:, None]
    p = jnp.exp(log_p)
    d = z1 - jnp.sum(intervals.times(p, z1), AXES)[:, None]
    return log_p, p, d


@jax.jit
def _bounds(log_p, p, d, reach):
    sup = logsumexp_line.remainder_sup(log_p, p, d, reach, AXES)
    tilt = logsumexp_line.tilt_bound(p, d, reach, AXES)
    return sup, tilt


@st.composite
def lines(draw):
    """Logits ``z_0`` and slopes ``z_1`` (``ROWS x CLASSES``) of every scale, exactly
    representable in float32; some classes dominant, some of vanishing or zero probability."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    logit_scale = draw(st.sampled_from([0.0, 0.1, 1.0, 5.0, 30.0]))
    slope_scale = 10 ** draw(st.floats(-3, 3))
    z0 = logit_scale * rng.normal(size=(ROWS, CLASSES))
    z1 = slope_scale * rng.normal(size=(ROWS, CLASSES))
    if draw(st.booleans()):  # a dominant class: the others have probabilities down to 1e-30
        z0[:, 0] += draw(st.floats(5, 70))
    if draw(st.booleans()):  # a large slope on a rare class, as with Adam directions
        z1[:, -1] += slope_scale * draw(st.floats(-50, 50))
    if draw(st.booleans()):  # classes of probability 0
        z0[:, 1] = -np.inf
    if draw(st.booleans()):  # ties in the slope: a two-valued d
        z1[:, 2:] = z1[:, 2:3]
    z0, z1 = rounded(z0, np.float32), rounded(z1, np.float32)
    reach = float(rounded(10 ** draw(st.floats(-6, 1)), np.float32))
    return z0, z1, reach


def _check_line(z0, z1, reach, dtype):
    eps = float(np.finfo(dtype).eps)
    for sign in (1, -1):  # the negative side is the positive side of -z_1
        log_p, p, d = _line_inputs(z0, sign * z1, dtype)
        sup, tilt = (np.asarray(b, np.float64) for b in _bounds(log_p, p, d, reach))
        assert not np.any(np.isnan(sup) | np.isnan(tilt))
        finite = np.isfinite(z0)
        # XLA flushes subnormal results to zero: a class whose p_i is below the smallest normal
        # number drops out, taking at most p_i·d_i²·φ(T·d_i) with it (UNDERFLOW_UNITS of it, as
        # in helpers.check_bounds).
        d64 = np.asarray(_line_inputs(z0, sign * z1, np.float64)[2])
        tilted = d64 * d64 * np.asarray(logsumexp_line.phi(jnp.asarray(reach * np.maximum(d64, 0))))
        flushed = UNDERFLOW_UNITS * float(np.finfo(dtype).tiny) * np.max(tilted, 1)
        for row in range(ROWS):
            exact, sensitivity = _exact_remainders(
                z0[row], sign * z1[row], reach * REFERENCE_POINTS
            )
            z0_size = float(np.max(np.abs(z0[row][finite[row]])))
            tolerance = ROUNDING_UNITS * eps * ((1 + z0_size) * exact + sensitivity) + flushed[row]
            floor = float(np.max(exact - tolerance))
            context = f"row {row}, sign {sign}, reach {reach}, dtype {np.dtype(dtype).name}"
            assert sup[row] >= floor, f"remainder_sup {sup[row]} < {floor}: {context}"
            assert tilt[row] >= floor, f"tilt_bound {tilt[row]} < {floor}: {context}"
            assert sup[row] <= tilt[row] * (1 + 1e-6) + 1e-300, "the grid must not loosen the tilt"


@given(line=lines(), dtype=st.sampled_from([np.float64, np.float32]))
@example(  # a class of probability 1e-23 whose t·d is 11: its share of N rounded away (helper)
    line=(
        np.array([[52.9, 0, 0, 0, 0, 0]] * ROWS, np.float32),
        np.array([[0, 0, 0, 0, 0, 11.0]] * ROWS, np.float32),
        1.0,
    ),
    dtype=np.float64,
)
@example(  # float32: N(t) of the dominant row is 4e-37 at the grid points, its terms flushed to 0
    line=(
        np.array(
            [[-45.862064, -np.inf, -59.791046, -41.932003, 42.955914, -35.774647]] * ROWS,
            np.float32,
        ),
        np.array(
            [[-0.14681241, 0.4939426, -1.1920844, -1.5248997, 0.59746, 1.741903]] * ROWS,
            np.float32,
        ),
        float(np.float32(0.1)),
    ),
    dtype=np.float32,
)
@example(  # t·d up to 2300: e^{w·c} overflows, the expansion was NaN and took the grid with it
    line=(
        np.array([[0.0, -np.inf, 0.0, 0.0, 0.0, 0.0]] * ROWS, np.float32),
        np.array([[1483.3561, 1380.7323] + [-354.45395] * 4] * ROWS, np.float32),
        1.0,
    ),
    dtype=np.float64,
)
@example(  # float32: p_0 = e^-97 is subnormal, flushed to 0 (within the underflow allowance)
    line=(
        np.array(
            [[-50.216377, -np.inf, 46.898903, -12.0253, -29.235203, -0.5996604]] * ROWS, np.float32
        ),
        np.array([[0.36385825, 0.4355319] + [-0.14438681] * 4] * ROWS, np.float32),
        1.0,
    ),
    dtype=np.float32,
)
def test_remainder_sup_bounds_the_line_remainder(line, dtype):
    _check_line(*line, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_zero_reach_gives_half_the_variance(dtype):
    rng = np.random.default_rng(0)
    z0, z1 = (
        rounded(rng.normal(size=(ROWS, CLASSES)), np.float32),
        rounded(10 * rng.normal(size=(ROWS, CLASSES)), np.float32),
    )
    log_p, p, d = _line_inputs(z0, z1, dtype)
    sup, tilt = _bounds(log_p, p, d, 0.0)
    half_variance = 0.5 * np.sum(np.asarray(p, np.float64) * np.asarray(d, np.float64) ** 2, 1)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(sup, half_variance, rtol=rtol)
    np.testing.assert_allclose(tilt, half_variance, rtol=rtol)


def test_the_grid_is_within_a_few_percent_of_the_best_coefficient():
    """Tightness on an Adam-like line (spread 300, T·spread up to 30): the reason for the grid.
    The tilt and Popoviciu caps are hundreds of times looser there."""
    rng = np.random.default_rng(3)
    z0 = rounded(2 * rng.normal(size=(ROWS, CLASSES)), np.float32)
    z1 = rounded(100 * rng.normal(size=(ROWS, CLASSES)), np.float32)
    for reach in (1e-3, 1e-2, 0.1):
        log_p, p, d = _line_inputs(z0, z1, np.float64)
        sup, tilt = (np.asarray(b) for b in _bounds(log_p, p, d, reach))
        for row in range(ROWS):
            dense = reach * np.concatenate([np.geomspace(1e-6, 1, 400), np.linspace(0.01, 1, 400)])
            best = np.max(_exact_remainders(z0[row], z1[row], dense)[0])
            assert best <= sup[row] <= 1.1 * best, (reach, row, sup[row], best)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vmap_over_reaches_gives_the_unbatched_bounds_and_keeps_one_cond(dtype):
    """SafeRate's ladder maps remainder_sup over trust regions. The batch must give each
    region's own bound (up to XLA fusing the batched ops differently: a few ulps), whether no
    region, some or all need the log-space form
    (``e^{t·d}`` overflows at the far reaches), and the log-space form must stay behind a cond
    instead of becoming a select that computes it for every region."""
    rng = np.random.default_rng(5)
    z0 = rounded(3 * rng.normal(size=(ROWS, CLASSES)), np.float32)
    z1 = rounded(40 * rng.normal(size=(ROWS, CLASSES)), np.float32)
    log_p, p, d = _line_inputs(z0, z1, dtype)
    one = jax.jit(lambda reach: logsumexp_line.remainder_sup(log_p, p, d, reach, AXES))
    for reaches in ([1e-4, 1e-3, 1e-2], [1e-3, 0.1, 50.0], [20.0, 50.0]):
        reaches = jnp.asarray(reaches, dtype)
        batched = jax.jit(jax.vmap(one))(reaches)
        for reach, bound in zip(reaches, batched, strict=True):
            np.testing.assert_allclose(bound, one(reach), rtol=8 * np.finfo(dtype).eps)
    jaxpr = str(jax.make_jaxpr(jax.vmap(one))(reaches))
    assert "cond[" in jaxpr


# --------------------------------------------------------------------------- phi


def _exact_phi(x):
    if x == -np.inf:  # -1e200 rounds to -inf in float32
        return 0.0
    x = mpmath.mpf(float(x))
    if abs(x) < 1:  # the direct form cancels at any precision as x -> 0
        return float(mpmath.fsum(x**n / mpmath.factorial(n + 2) for n in range(60)))
    return float((mpmath.expm1(x) - x) / (x * x))


@given(
    x=st.one_of(
        st.floats(-1, 1),
        st.floats(-800, 800),
        st.floats(-1e-6, 1e-6),
        st.sampled_from([0.5, -0.5, 0.4999999, 709.0, 710.0, -745.0, 1e200, -1e200, -np.inf]),
    ),
    dtype=st.sampled_from([np.float64, np.float32]),
)
def test_phi_is_accurate(x, dtype):
    x = float(rounded(x, dtype))
    got = float(logsumexp_line.phi(jnp.asarray(x, dtype)))
    exact = _exact_phi(x)
    if x > np.log(float(np.finfo(dtype).max)):  # e^x overflows: +inf, an upper bound
        assert got == np.inf
        return
    ulps = 8 if dtype == np.float64 else 64  # float32 rounds the result of float32 ops
    tiny = float(np.finfo(dtype).tiny)
    assert abs(got - exact) <= ulps * float(np.finfo(dtype).eps) * abs(exact) + tiny, (x, got)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_phi_is_positive_increasing_and_never_nan(dtype):
    x = jnp.asarray(
        np.concatenate([-np.geomspace(1e3, 1e-8, 300), [0.0], np.geomspace(1e-8, 1e3, 300)]),
        dtype,
    )
    x = jnp.concatenate([jnp.asarray([-jnp.inf], dtype), x, jnp.asarray([jnp.inf], dtype)])
    y = np.asarray(logsumexp_line.phi(x), np.float64)
    assert not np.any(np.isnan(y))
    assert np.all(y[1:] > 0) and y[0] == 0 and y[-1] == np.inf
    assert np.all(y[1:] >= y[:-1])


# --------------------------------------------------------------------------- total variation


@given(
    seed=st.integers(0, 2**32 - 1),
    center_scale=st.sampled_from([0.0, 1.0, 10.0, 100.0]),
    radius_scale=st.sampled_from([0.0, 0.01, 1.0, 30.0]),
    reach_hi=st.sampled_from([0.0, 1e-4, 1e-2, 1.0]),
    reach_lo=st.sampled_from([0.0, 1e-3, 0.1]),
    dtype=st.sampled_from([np.float64, np.float32]),
)
def test_tilt_range_bounds_the_total_variation(
    seed, center_scale, radius_scale, reach_hi, reach_lo, dtype
):
    rng = np.random.default_rng(seed)
    z0 = rounded(3 * rng.normal(size=(ROWS, CLASSES)), np.float32).astype(np.float64)
    z0[0, 1] = -np.inf  # a class of probability 0
    mid = center_scale * rng.normal(size=(ROWS, CLASSES))
    radius = radius_scale * rng.uniform(size=(ROWS, CLASSES))
    v = intervals.Interval(
        jnp.asarray(rounded(mid - radius, np.float32), dtype),
        jnp.asarray(rounded(mid + radius, np.float32), dtype),
    )
    z0_ = jnp.asarray(z0, dtype)
    p = jnp.exp(z0_ - jax.nn.logsumexp(z0_, axis=1, keepdims=True))
    bound = np.asarray(
        logsumexp_line.tilt_range(
            p, v, jnp.asarray(reach_hi, dtype), jnp.asarray(reach_lo, dtype), AXES
        ),
        np.float64,
    )
    assert np.all(bound <= 1) and not np.any(np.isnan(bound))
    # Sample the box (corners included) and the region, in float64.
    lo, hi = np.asarray(v.lo, np.float64), np.asarray(v.hi, np.float64)
    corners = rng.integers(0, 2, size=(64, ROWS, CLASSES)).astype(bool)
    inside = rng.uniform(size=(64, ROWS, CLASSES))
    boxes = np.concatenate([np.where(corners, hi, lo), lo + inside * (hi - lo)])
    ts = np.array([-reach_lo, -reach_lo / 3, reach_hi / 7, reach_hi])
    p64 = np.exp(z0 - np.logaddexp.reduce(z0, axis=1, keepdims=True))
    for t in ts:
        q = jax.nn.softmax(jnp.asarray(z0[None] + t * boxes, jnp.float64), axis=-1)
        variation = np.sum(np.maximum(np.asarray(q) - p64[None], 0), -1)
        tolerance = 64 * float(np.finfo(dtype).eps) * (1 + np.max(np.abs(z0[np.isfinite(z0)])))
        assert np.all(variation <= bound[None] + tolerance), (t, variation.max(0), bound)


# --------------------------------------------------------------------------- the enclosure

_RNG = np.random.default_rng(21)
# Logistic-regression-like logits: rows of a batch, a slope of Adam's scale (spread ~100s).
LOGITS = rounded(3 * _RNG.normal(size=(4, 5)), np.float32)
SLOPES = rounded(80 * _RNG.normal(size=(4, 5)), np.float32)
CURVES = rounded(_RNG.normal(size=(4, 5)), np.float32)
LABELS = np.array([0, 3, 1, 4])


def _cross_entropy(z):
    return jnp.mean(jax.nn.logsumexp(z, axis=-1) - z[jnp.arange(4), LABELS])


def exact_linear(t):
    z0, z1 = (jnp.asarray(a, t.dtype) for a in (LOGITS, SLOPES))
    return _cross_entropy(z0 + t * z1)


def curved(t):
    z0, z1, z2 = (jnp.asarray(a, t.dtype) for a in (LOGITS, SLOPES, CURVES))
    return _cross_entropy(z0 + t * z1 + 30 * jnp.tanh(t) * jnp.sin(3 * t) * z2)


@st.composite
def small_regions(draw, count=32):
    """Reference points near 0 with one-sided and two-sided regions of widths 1e-6..1 (the
    slopes are large: T·spread runs from 1e-4 to hundreds)."""

    def floats(lo, hi):
        return np.array(draw(st.lists(st.floats(lo, hi), min_size=count, max_size=count)))

    x0, width, split = floats(-0.1, 0.1), np.exp(floats(np.log(1e-6), np.log(1))), floats(0, 1)
    one_sided = np.arange(count) % 2 == 0
    lo = np.where(one_sided, x0, x0 - split * width)
    hi = np.where(one_sided, x0 + width, x0 + (1 - split) * width)
    return x0, (lo, hi)


ENCLOSURE_EXAMPLES = max(settings.default.max_examples // 10, 1)


def test_the_cross_entropy_enclosure_is_sound():
    @settings(max_examples=ENCLOSURE_EXAMPLES)
    @given(
        name=st.sampled_from(["exact_linear", "curved"]),
        region=small_regions(),
        dtype=st.sampled_from([np.float64, np.float32]),
    )
    def check(name, region, dtype):
        f = {"exact_linear": exact_linear, "curved": curved}[name]
        x0, trust_region = region
        check_bounds(f, x0, trust_region, 2, dtype, samples=48, check_taylor=False)

    check()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_cross_entropy_enclosure_is_sound_on_and_beside_the_reference_point(dtype):
    """Zero-width, one-ulp and exactly one-sided regions at the reference point."""
    x0 = np.array([0.0, 0.0, 0.0, 0.01, 0.01, -0.02])
    ulp = float(np.finfo(dtype).eps)
    lo = np.array([0.0, 0.0, -ulp, 0.01, 0.01 - 1e-7, -0.02])
    hi = np.array([0.0, ulp, 0.0, 0.01 + 1e-3, 0.01, -0.02 + 1e-6])
    for f in (exact_linear, curved):
        check_bounds(f, x0, (lo, hi), 2, dtype, samples=16, check_taylor=False)


# --------------------------------------------------------------------------- degree 1


def _exact_secants(z0_row, v_row, ts):
    """``(LSE(z_0 + t·V) - LSE(z_0))/t`` for one row (mpmath), written as
    ``log Σ p_i e^{t·V_i} / t`` so that nothing cancels; ``-inf`` logits skipped."""
    p, v = _exact_softmax(z0_row, v_row)
    out = []
    for t in ts:
        t = mpmath.mpf(float(t))
        out.append(
            float(
                mpmath.log(
                    mpmath.fsum(pi * mpmath.exp(t * vi) for pi, vi in zip(p, v, strict=True))
                )
                / t
            )
        )
    return np.array(out)


SIDES = {"right": (True, False), "left": (False, True), "both": (True, True)}


@functools.cache
def _secant_bound(side):
    has_hi, has_lo = SIDES[side]

    @jax.jit
    def bound(log_p, p, lo, hi, reach):
        return logsumexp_line.secant_slope_range(
            log_p,
            p,
            intervals.Interval(lo, hi),
            reach if has_hi else None,
            reach / 3 if has_lo else None,
            AXES,
        )

    return bound


@given(
    line=lines(),
    dtype=st.sampled_from([np.float64, np.float32]),
    side=st.sampled_from(sorted(SIDES)),
    box=st.sampled_from([0.0, 1e-3, 0.1, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_secant_slope_range_holds_for_every_slope_in_the_box(line, dtype, side, box, seed):
    """Degree 1: ``(LSE(z_0 + t·V) - LSE(z_0))/t`` lies in the range for every ``V`` in the box
    (its corners and random points; ``box = 0`` is the exact-linear line) and ``t`` on each side
    the region has, from ``T·1e-6`` to ``T``."""
    z0, z1, reach = line
    rng = np.random.default_rng(seed)
    scale = box * np.abs(z1) + box * np.max(np.abs(z1))
    lo = rounded(z1 - scale * rng.uniform(size=z1.shape), np.float32)
    hi = rounded(z1 + scale * rng.uniform(size=z1.shape), np.float32)
    log_p, p, _ = _line_inputs(z0, z1, dtype)
    cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    got = _secant_bound(side)(log_p, p, cast(lo), cast(hi), cast(reach))
    got_lo, got_hi = (np.asarray(e, np.float64) for e in got)
    assert not np.any(np.isnan(got_lo) | np.isnan(got_hi))
    has_hi, has_lo = SIDES[side]
    ts = np.concatenate(
        [
            reach * REFERENCE_POINTS if has_hi else [],
            -reach / 3 * REFERENCE_POINTS if has_lo else [],
        ]
    )
    corners = rng.integers(0, 2, size=(3, *z1.shape)).astype(bool)
    boxes = [lo, hi, *np.where(corners, hi, lo), lo + rng.uniform(size=z1.shape) * (hi - lo)]
    eps = float(np.finfo(dtype).eps)
    for row in range(ROWS):
        z0_size = float(np.max(np.abs(z0[row][np.isfinite(z0[row])])))
        for v in boxes:
            exact = _exact_secants(z0[row], v[row], ts)
            size = float(np.max(np.abs(v[row])))
            tolerance = ROUNDING_UNITS * eps * (1 + z0_size) * size
            context = f"row {row}, side {side}, reach {reach}, {np.dtype(dtype).name}"
            assert np.all(exact >= got_lo[row] - tolerance), (exact.min(), got_lo[row], context)
            assert np.all(exact <= got_hi[row] + tolerance), (exact.max(), got_hi[row], context)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_secant_slope_range_is_exact_on_an_exact_linear_line(dtype):
    """One-sided and exact-linear: the range is ``[p·z_1, chord slope to T]``, the exact range
    (the secant slope grows with ``t``), and it shrinks to ``p·z_1`` with ``T``."""
    z0, z1 = LOGITS[:3, :], SLOPES[:3, :]
    log_p, p, _ = _line_inputs(z0, z1, dtype)
    for reach in (1e-5, 1e-3, 0.1, 3.0):
        got = _secant_bound("right")(log_p, p, *(jnp.asarray(a, dtype) for a in (z1, z1, reach)))
        rtol = 1e-9 if dtype == np.float64 else 2e-4
        for row in range(3):
            tangent = _exact_secants(z0[row], z1[row], [reach * 1e-12])[0]
            chord = _exact_secants(z0[row], z1[row], [reach])[0]
            scale = np.max(np.abs(z1[row]))
            np.testing.assert_allclose(got[0][row], tangent, rtol=0, atol=rtol * scale)
            np.testing.assert_allclose(got[1][row], chord, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_degree_one_cross_entropy_enclosure_is_sound(dtype):
    """End to end (``taylor_bounds(f, 1)``): exact-linear and curved logits, one- and two-sided
    regions of widths 1e-6 to 1, and regions on and beside the reference point."""
    x0, region = random_cases(np.random.default_rng(4), 32, center=(-0.1, 0.1), widths=(1e-6, 1))
    ulp = float(np.finfo(dtype).eps)
    x0 = np.concatenate([x0, [0.0, 0.0, 0.01, -0.02]])
    lo = np.concatenate([region[0], [0.0, -ulp, 0.01 - 1e-7, -0.02]])
    hi = np.concatenate([region[1], [ulp, 0.0, 0.01, -0.02 + 1e-6]])
    for f in (exact_linear, curved):
        check_bounds(f, x0, (lo, hi), 1, dtype, samples=32)
    # Sharp: on [0, T] with exact-linear logits the upper slope is the chord's.
    bounds = check_bounds(exact_linear, [0.0], ([0.0], [1e-3]), 1, dtype)
    chord = (exact_linear(np.float64(1e-3)) - exact_linear(np.float64(0.0))) / 1e-3
    np.testing.assert_allclose(bounds.final_interval()[1], [chord], rtol=1e-3)
