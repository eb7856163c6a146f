"""The mixed-degree pass: ``taylor_bounds(f, k, working_degree=m)`` with ``m > k``.

Degree-``m`` enclosures go through the smooth part of ``f`` and are lowered to degree ``k`` at
the first equation without a sharp degree-``m`` rule (relu and the other kinks, max, pooling,
comparisons, the log-sum-exp pattern) and at the output. Tested here:

* ``enclosures.lower`` alone: every function value a degree-3 enclosure allows stays inside the
  lowered one (hypothesis; no tracing, so many examples are cheap);
* whole networks that mix smooth layers with every kind of lowering point (relu, relu6,
  leaky_relu, elu, max, abs, ``where`` on the input, pooling-like maxima, log-sum-exp and
  ``log_softmax`` cross-entropy), float64 and float32, one- and two-sided trust regions of
  widths 1e-6..2, reference points on and beside the kinks: the bounds hold at sampled points
  (checked in float64) and the exact coefficients match autodiff. Each architecture is compiled
  once per dtype and side (its weights are arguments), so the example count comes from the
  hypothesis profile at little cost;
* where the switch comes before any nonlinearity (a relu MLP, logistic regression), the result
  is the degree-``k`` pass's, bit for bit; on a deep smooth chain at small ``T`` it is tighter.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import UNDERFLOW_UNITS
from helpers import tolerance_factor
from hypothesis import given
from hypothesis import strategies as st

from optax_saferate import autobound as ab
from optax_saferate.autobound import enclosures
from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval

pytestmark = pytest.mark.usefixtures("autobound_numerics")

WIDTH = 5  # the input vector's size


# --------------------------------------------------------------------------- lower


@given(
    coefficients=st.lists(st.floats(-10, 10), min_size=3, max_size=3),
    remainder=st.tuples(st.floats(-10, 10), st.floats(-10, 10)).map(sorted),
    ends=st.tuples(st.floats(-2, 0), st.floats(0, 2)),
    one_sided=st.booleans(),
    target=st.sampled_from([1, 2]),
)
def test_lowering_keeps_every_value_the_enclosure_allows(
    coefficients, remainder, ends, one_sided, target
):
    lo_t, hi_t = (0.0, ends[1]) if one_sided else ends
    region = Interval(np.float64(lo_t), np.float64(hi_t))
    ctx = Context(region, 3)
    enclosure = TaylorEnclosure(
        tuple(np.float64(c) for c in coefficients), Interval(*map(np.float64, remainder))
    )
    lowered = enclosures.lower(enclosure, ctx, target)
    assert len(lowered.coefficients) == target
    lo_r, hi_r = (float(e) for e in lowered.remainder)
    ts = np.linspace(lo_t, hi_t, 101)
    for r in np.linspace(*remainder, 5):
        values = sum(c * ts**i for i, c in enumerate(coefficients)) + r * ts**3
        low = sum(float(c) * ts**i for i, c in enumerate(lowered.coefficients))
        scale = 1e-12 * (1 + np.abs(values))
        assert np.all(values >= low + np.minimum(lo_r * ts**target, hi_r * ts**target) - scale)
        assert np.all(values <= low + np.maximum(lo_r * ts**target, hi_r * ts**target) + scale)


def test_lowering_an_exact_cubic_folds_its_top_term():
    ctx = Context(Interval(np.float64(0.0), np.float64(0.5)), 3)
    cubic = enclosures.exact(*(np.float64(c) for c in (1.0, 2.0, 3.0, -4.0)))
    lowered = enclosures.lower(cubic, ctx, 2)
    # 3 - 4t over [0, 0.5]: [1, 3].
    assert [float(e) for e in lowered.remainder] == [1.0, 3.0]
    assert enclosures.lower(cubic, ctx, 3) is cubic


# --------------------------------------------------------------------------- networks


def _where_kink(u):
    return jnp.where(u > 0, 0.5 * u, 0.25 * u)


def _smooth_then_kinks(p, t):
    x = p["a"] + t * p["d"]
    h = jnp.tanh(p["w1"] @ x + p["b1"])
    h = jax.nn.softplus(p["w2"] @ h)
    g = jax.nn.relu(p["w3"] @ h + p["b3"])
    return jax.nn.logsumexp(g) + jnp.sum(jax.nn.relu6(h)) + jnp.sum(jax.nn.leaky_relu(h - 1.0))


def _kinks_first(p, t):
    x = p["a"] + t * p["d"]
    h = jax.nn.relu(p["w1"] @ x + p["b1"])
    h = jax.nn.swish(p["w2"] @ h)
    return jnp.sum(jnp.exp(-(h**2))) + jnp.max(h) + jnp.abs(h[0])


def _max_abs_where(p, t):
    x = p["a"] + t * p["d"]
    h = jnp.sin(p["w1"] @ x + p["b1"])
    h = jax.nn.sigmoid(p["w2"] @ h) - 0.5
    pooled = jnp.max(jnp.reshape(h, (-1, 1)) + p["b3"][None, :], axis=0)
    return jnp.sum(pooled) + jnp.sum(_where_kink(h)) + jnp.sum(jnp.maximum(h, -(h**2)))


def _cross_entropy(p, t):
    x = p["a"] + t * p["d"]
    h = jax.nn.softplus(p["w1"] @ x + p["b1"])
    h = jax.nn.elu(p["w2"] @ h)
    logits = p["w3"] @ h + p["b3"]
    return -jax.nn.log_softmax(logits)[1] + jnp.mean(jnp.tanh(h) ** 2)


def _smooth_only(p, t):
    x = p["a"] + t * p["d"]
    h = jax.nn.softplus(p["w1"] @ x + p["b1"])
    h = jnp.tanh(p["w2"] @ h)
    return jnp.mean((p["w3"] @ h + p["b3"] - 1.0) ** 2)


NETWORKS = {
    "smooth then kinks": _smooth_then_kinks,
    "kinks first": _kinks_first,
    "max, abs, where": _max_abs_where,
    "cross-entropy": _cross_entropy,
    "smooth only": _smooth_only,
}


def _shapes():
    return {
        "a": (WIDTH,),
        "d": (WIDTH,),
        "w1": (4, WIDTH),
        "b1": (4,),
        "w2": (4, 4),
        "w3": (3, 4),
        "b3": (3,),
    }


@functools.cache
def _compiled(name, dtype, one_sided, degree, working):
    network = NETWORKS[name]

    def bounds(params, x0, lo, hi):
        f = functools.partial(network, params)
        low = np.zeros((), dtype) if one_sided else lo
        return ab.taylor_bounds(f, degree, working_degree=working)(x0, (low, hi)).coefficients

    def reference(params, x0, ts):
        f = functools.partial(network, params)
        values = jax.vmap(f)(ts)
        derivatives = [f(x0), jax.grad(f)(x0)]
        if degree >= 3:
            derivatives.append(jax.hessian(f)(x0) / 2)
        return values, derivatives

    return jax.jit(bounds), jax.jit(reference)


def _draw_params(data, dtype, scale):
    params = {}
    for key, shape in _shapes().items():
        size = int(np.prod(shape))
        values = data.draw(
            st.lists(st.floats(-scale, scale), min_size=size, max_size=size), label=key
        )
        params[key] = np.asarray(values, np.float64).reshape(shape).astype(dtype)
    return params


@pytest.mark.slow  # 7-27 s to compile each (network, dtype, side, degrees); the default run
# has test_mixed_degree_bounds_hold_on_a_batch_of_networks (one network holding every kink)
@given(
    name=st.sampled_from(sorted(NETWORKS)),
    dtype=st.sampled_from([np.float64, np.float32]),
    one_sided=st.booleans(),
    degrees=st.sampled_from([(2, 3), (2, 4), (1, 3), (3, 4)]),
    log_width=st.floats(-6, np.log10(2.0)),
    x0=st.sampled_from([0.0, 1e-7, -1e-7, 0.3]),
    scale=st.sampled_from([0.5, 2.0]),
    data=st.data(),
)
def test_mixed_degree_bounds_hold_on_networks_with_kinks(
    name, dtype, one_sided, degrees, log_width, x0, scale, data
):
    degree, working = degrees
    dtype = np.dtype(dtype)
    params = _draw_params(data, dtype, scale)
    width = 10.0**log_width
    if one_sided:
        x0 = 0.0  # SafeRate's case: the region [0, T] from a structural zero
    on_kink = data.draw(st.booleans(), label="a unit exactly on its kink at x0")
    if on_kink:
        # Moves b1[0] so that the first preactivation is 0 at t = x0 (up to rounding).
        row = params["w1"][0].astype(np.float64) @ (params["a"] + x0 * params["d"])
        params["b1"][0] = dtype.type(-row)
    x0 = dtype.type(x0)
    if one_sided:
        lo, hi = dtype.type(0.0), dtype.type(width)
    else:
        lo, hi = dtype.type(x0 - width / 2), dtype.type(x0 + width / 2)
    bounds, reference = _compiled(name, dtype, one_sided, degree, working)
    coefficients = bounds(params, x0, lo, hi)
    assert len(coefficients) == degree + 1
    exact, (r_lo, r_hi) = [np.float64(c) for c in coefficients[:-1]], coefficients[-1]
    r_lo, r_hi = np.float64(r_lo), np.float64(r_hi)
    assert not np.isnan(r_lo) and not np.isnan(r_hi) and r_lo <= r_hi
    ts = np.concatenate([np.linspace(float(lo), float(hi), 61), [float(x0) + 1e-3 * width]])
    ts = np.clip(ts, float(lo), float(hi)).astype(dtype)
    params64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    values, derivatives = reference(params64, np.float64(x0), ts.astype(np.float64))
    values = np.asarray(values)
    offset = ts.astype(np.float64) - np.float64(x0)
    polynomial = sum(c * offset**i for i, c in enumerate(exact))
    power = offset**degree
    with np.errstate(invalid="ignore"):  # inf·0 where the remainder is unbounded
        ends = np.stack([np.where(power == 0, 0, e * power) for e in (r_lo, r_hi)])
    terms = np.abs(values) + sum(np.abs(c * offset**i) for i, c in enumerate(exact))
    terms = terms + np.max(np.abs(np.where(np.isfinite(ends), ends, 0)), axis=0)
    tolerance = tolerance_factor(dtype) * terms + UNDERFLOW_UNITS * float(np.finfo(dtype).tiny)
    assert np.all(polynomial + ends.min(axis=0) <= values + tolerance), (ts, values, coefficients)
    assert np.all(values <= polynomial + ends.max(axis=0) + tolerance), (ts, values, coefficients)
    if on_kink:
        return  # autodiff's derivative at a kink is one side's; the bounds above are the test
    rtol = 1e-9 if dtype == np.float64 else 2e-3
    for c, expected in zip(exact, derivatives, strict=False):
        expected = float(expected)
        assert abs(c - expected) <= rtol * (1 + abs(expected)) * 10, (name, c, expected)


def _every_kink(p, t):
    """One network with every lowering point, for the default run's batched test."""
    x = p["a"] + t * p["d"]
    h = jnp.tanh(p["w1"] @ x + p["b1"])
    h = jax.nn.softplus(p["w2"] @ h) - 0.7
    kinks = (
        jnp.sum(jax.nn.relu(h))
        + jnp.sum(jax.nn.relu6(4 * h))
        + jnp.sum(jax.nn.leaky_relu(h))
        + jnp.sum(jax.nn.elu(h))
        + jnp.max(h)
        + jnp.abs(h[0])
        + jnp.sum(_where_kink(h))
    )
    logits = p["w3"] @ jnp.tanh(h) + p["b3"]
    return kinks - jax.nn.log_softmax(logits)[0] + jax.nn.logsumexp(2 * logits)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mixed_degree_bounds_hold_on_a_batch_of_networks(dtype):
    """64 cases in one compilation: random weights (two scales), one- and two-sided regions of
    widths 1e-6..2, reference points 0, ±1e-7 and 0.3, half with a unit exactly on its kink,
    half with a working region wider than the trust region."""
    dtype = np.dtype(dtype)
    cases = 64
    rng = np.random.default_rng(7)
    scale = np.where(np.arange(cases) % 2 == 0, 0.5, 2.0)
    params = {
        key: (rng.uniform(-1, 1, size=(cases, *shape)) * scale.reshape(-1, *[1] * len(shape)))
        for key, shape in _shapes().items()
    }
    x0 = rng.choice([0.0, 1e-7, -1e-7, 0.3], size=cases)
    on_kink = np.arange(cases) % 4 < 2
    row = np.einsum("ci,ci->c", params["w1"][:, 0], params["a"] + x0[:, None] * params["d"])
    params["b1"][:, 0] = np.where(on_kink, -row, params["b1"][:, 0])
    width = 10.0 ** rng.uniform(-6, np.log10(2.0), size=cases)
    one_sided = np.arange(cases) % 3 == 0
    lo = np.where(one_sided, x0, x0 - width / 2)
    hi = np.where(one_sided, x0 + width, x0 + width / 2)
    # Half the cases carry the degree-3 enclosures over a wider working region (up to 4x the
    # width on each side it extends, one-sided regions half the time kept one-sided), and the
    # bound is checked on the trust region inside it.
    wider = np.arange(cases) % 2 == 1
    stretch = rng.uniform(0, 3, size=(2, cases)) * width * wider
    keep_side = one_sided & (np.arange(cases) % 4 == 1)
    working_lo = lo - np.where(keep_side, 0, stretch[0])
    working_hi = hi + stretch[1]
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    x0, lo, hi = (a.astype(dtype) for a in (x0, lo, hi))
    working_lo, working_hi = (a.astype(dtype) for a in (working_lo, working_hi))
    working_lo, working_hi = np.minimum(working_lo, lo), np.maximum(working_hi, hi)

    def bounds(p, x0, lo, hi, working_lo, working_hi):
        f = functools.partial(_every_kink, p)
        bound = ab.taylor_bounds(f, 2, working_degree=3)
        return bound(x0, (lo, hi), (working_lo, working_hi)).coefficients

    c0, c1, (r_lo, r_hi) = jax.jit(jax.vmap(bounds))(params, x0, lo, hi, working_lo, working_hi)
    fractions = np.concatenate([np.linspace(0, 1, 41), [0.5 + 1e-4, 0.5 - 1e-4]])
    ts = lo[:, None] + (hi - lo)[:, None] * fractions[None, :].astype(dtype)
    ts = np.clip(ts.astype(dtype), lo[:, None], hi[:, None])
    params64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    values = jax.jit(jax.vmap(lambda p, t: jax.vmap(functools.partial(_every_kink, p))(t)))(
        params64, ts.astype(np.float64)
    )
    values = np.asarray(values)
    c0, c1, r_lo, r_hi = (np.asarray(a, np.float64)[:, None] for a in (c0, c1, r_lo, r_hi))
    assert not np.any(np.isnan(c0) | np.isnan(c1) | np.isnan(r_lo) | np.isnan(r_hi))
    assert np.all(r_lo <= r_hi)
    offset = ts.astype(np.float64) - x0.astype(np.float64)[:, None]
    power = offset**2
    with np.errstate(invalid="ignore"):  # inf·0 where the remainder is unbounded
        ends = np.stack([np.where(power == 0, 0, e * power) for e in (r_lo, r_hi)])
    polynomial = c0 + c1 * offset
    terms = np.abs(values) + np.abs(c0) + np.abs(c1 * offset)
    terms = terms + np.max(np.abs(np.where(np.isfinite(ends), ends, 0)), axis=0)
    tolerance = tolerance_factor(dtype) * terms + UNDERFLOW_UNITS * float(np.finfo(dtype).tiny)
    assert np.all(polynomial + ends.min(axis=0) <= values + tolerance)
    assert np.all(values <= polynomial + ends.max(axis=0) + tolerance)
    # Not vacuous: most cases get a finite bound.
    assert np.mean(np.isfinite(r_hi)) > 0.5


# --------------------------------------------------------------------------- unchanged / tighter


def _relu_mlp(t):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(20, 6)))
    w1, d1 = (jnp.asarray(rng.normal(size=(6, 8))) for _ in range(2))
    w2, d2 = (jnp.asarray(rng.normal(size=(8, 3))) for _ in range(2))
    logits = jax.nn.relu(x @ (w1 + t * d1)) @ (w2 + t * d2)
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[:, 0])


def _logistic_regression(t):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(30, 6)))
    w, d = (jnp.asarray(rng.normal(size=(6, 4))) for _ in range(2))
    logits = x @ (w + t * d)
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[:, 2])


@pytest.mark.parametrize("f", [_relu_mlp, _logistic_regression])
def test_a_switch_before_any_nonlinearity_gives_the_degree_two_result(f):
    zero = np.zeros(())

    @jax.jit
    def both(end):
        plain = ab.taylor_bounds(f, 2)(zero, (zero, end)).coefficients
        return plain, ab.taylor_bounds(f, 2, working_degree=3)(zero, (zero, end)).coefficients

    plain, mixed = both(0.05)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(mixed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_deep_smooth_chain_upper_end_is_much_nearer_the_exact_curvature():
    # A 4-deep softplus chain of width 16 (weights of unit scale): the upper end's excess over
    # c2 = f''(0)/2 is 15.8x / 14.5x / 7.9x smaller with working_degree=3 at T = 1e-3 / 1e-2 /
    # 0.1 (and within 1.1x of the best any sound quadratic could have there).
    n = 16
    rng = np.random.default_rng(2)
    weights = [jnp.asarray(rng.normal(size=(n, n)) / np.sqrt(n)) for _ in range(4)]
    directions = [jnp.asarray(rng.normal(size=(n, n)) / np.sqrt(n)) for _ in range(4)]
    x = jnp.asarray(rng.normal(size=(n,)))

    def f(t):
        h = x
        for w, d in zip(weights, directions, strict=True):
            h = jax.nn.softplus((w + t * d) @ h)
        return jnp.sum(h**2)

    exact = float(jax.hessian(f)(0.0)) / 2
    zero = np.zeros(())
    for width in (1e-3, 1e-2, 1e-1):  # eager: faster than compiling this chain
        region = (zero, np.asarray(width))
        plain = ab.taylor_bounds(f, 2)(zero, region).final_interval()
        mixed = ab.taylor_bounds(f, 2, working_degree=3)(zero, region).final_interval()
        # Where c3 >= 0 the mixed lower end IS the Taylor coefficient c2: the engine's
        # Taylor-mode value and jax.hessian's are two float64 roundings of the same number
        # (they differ by an ulp at XLA's optimisation level 0), so the reference gets them.
        ulps = 4 * np.finfo(np.float64).eps * abs(exact)
        assert plain[0] <= exact <= plain[1], (width, plain, exact)
        assert mixed[0] <= exact + ulps and exact - ulps <= mixed[1], (width, mixed, exact)
        assert float(plain[1]) - exact > 4 * (float(mixed[1]) - exact), (width, plain, mixed)


def test_working_region_gives_the_trust_regions_bound_from_the_wider_enclosures():
    # A smooth layer, then relu and log-sum-exp (lowering points); all calls in one jit.
    rng = np.random.default_rng(3)
    w, d, v = (jnp.asarray(rng.uniform(-1, 1, size=s)) for s in ((4, 6), (4, 6), (6, 3)))
    x = jnp.asarray(rng.normal(size=(5, 4)))

    def f(t):
        h = jnp.tanh(x @ (w + t * d))
        return jnp.sum(jax.nn.relu(h)) + jnp.sum(jax.nn.logsumexp(h @ v, axis=1))

    bound = ab.taylor_bounds(f, 2, working_degree=3)
    zero = np.zeros(())
    ends = jnp.asarray([0.01, 0.02, 0.04])

    @jax.jit
    def all_bounds(ends):
        alone = jax.vmap(lambda e: bound(zero, (zero, e)).final_interval())(ends)
        same = bound(zero, (zero, ends[1]), (zero, ends[1])).final_interval()
        nested = jax.vmap(lambda e: bound(zero, (zero, e), (zero, ends[-1])).final_interval())(ends)
        return alone, same, nested

    alone, same, nested = (np.asarray(a) for a in all_bounds(ends))
    # The same region as working region: the plain call's bound.
    np.testing.assert_array_equal(same, alone[:, 1])
    # Nested regions inside one working region: each holds its own pass's remainder (the
    # tightest this engine gives there), and the smallest is tighter than the outer one's.
    assert np.all(nested[0] <= alone[0]) and np.all(alone[1] <= nested[1])
    assert nested[1][0] < alone[1][-1]


def test_a_working_region_must_contain_the_trust_region():
    bound = ab.taylor_bounds(jnp.tanh, 2, working_degree=3)
    with pytest.raises(ValueError, match="working_region"):
        bound(0.0, (0.0, 0.5), (0.0, 0.25))
    with pytest.raises(ValueError, match="working_region"):
        bound(0.0, (-0.1, 0.5), (0.0, 1.0))
    traced = jax.jit(lambda w: bound(0.0, (0.0, 0.5), (0.0, w)).final_interval())
    assert np.all(np.isinf(np.asarray(traced(0.25))))
    assert np.all(np.isfinite(np.asarray(traced(1.0))))
    with pytest.raises(NotImplementedError, match="working_region"):
        ab.taylor_bounds(jnp.sum, 2)(jnp.zeros(2), (jnp.zeros(2), jnp.ones(2)), (-1.0, 2.0))


def test_working_degree_is_checked():
    with pytest.raises(ValueError, match="working_degree"):
        ab.taylor_bounds(jnp.exp, 3, working_degree=2)
    with pytest.raises(NotImplementedError, match="scalar x0"):
        ab.taylor_bounds(lambda x: jnp.sum(jnp.exp(x)), 2, working_degree=3)(
            jnp.zeros(2), (-jnp.ones(2), jnp.ones(2))
        )


@pytest.mark.parametrize("working", [2, 3])
def test_propagated_ranges_are_found_by_equation_not_by_call_order(working):
    # Regression: the degree-0 pass takes a max as a tree of relus (one recorded range per
    # relu), the degree-2 pass as one rule; replaying the ranges in call order gave the abs
    # after the max the range of a relu of the max's tree (shape (2,), a different value).
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=s) for k, s in _shapes().items()}
    f = functools.partial(_kinks_first, params)
    zero = np.zeros(())
    plain = ab.taylor_bounds(f, 2, working_degree=working)(zero, (zero, np.asarray(0.1)))
    known = ab.taylor_bounds(f, 2, True, working_degree=working)(zero, (zero, np.asarray(0.1)))
    for a, b in zip(plain.coefficients[:-1], known.coefficients[:-1], strict=True):
        assert np.shape(b) == () and float(a) == float(b)
    lo, hi = (float(e) for e in known.final_interval())  # shape () again
    assert float(plain.final_interval()[0]) <= lo <= hi <= float(plain.final_interval()[1])
    ts = np.linspace(0.0, 0.1, 101)
    values = np.asarray(jax.vmap(f)(ts))
    assert np.all(np.asarray(known.lower(ts)) <= values + 1e-12)
    assert np.all(values <= np.asarray(known.upper(ts)) + 1e-12)
