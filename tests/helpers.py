"""A shared soundness checker for AutoBound enclosures.

``check_bounds(f, x0, trust_region, degree, dtype)`` computes the bounds of ``f`` for a batch of
reference points and trust regions at once (``vmap``, under ``jit`` by default, so one
compilation serves many cases) and checks, case by case:

* ``lower(x) <= f(x) <= upper(x)`` at many points of the trust region: both ends, ``x0``, a grid
  and random points;
* ``c_0 = f(x0)``, ``c_1 = f'(x0)`` (``jax.grad``), ``c_2 = f''(x0)/2`` (``jax.hessian``) for
  ``degree >= 3``, and every other exact coefficient against nested autodiff;
* the final interval contains the true degree-``k`` Taylor coefficient ``f^(k)(x0)/k!``;
* no coefficient is NaN.

The reference values of ``f`` and its derivatives are always computed in float64, at the points
rounded to ``dtype``; for a float32 test the function's own data should be float32-rounded too
(the float64 reference then computes the same mathematical function more accurately).

Tolerances, fixed per dtype and never widened per test:

* float64: ``FLOAT64_ULPS`` ulps of the *magnitude of the terms*: ``|f(x)|`` plus the absolute
  values of every term ``c_i·t^i`` and of the remainder term. The engine and the reference
  evaluate ``f`` along different operation orders, so each can be off by a few ulps of the
  largest term. Where ``f`` itself cancels (``gelu``'s ``1 + tanh`` for negative inputs), its
  own float64 value is only accurate to ``eps`` times the size of its intermediates: tests pass
  that size as ``rounding_scale`` (at ``x`` and at ``x0``), added to the magnitude.
* float32: a relative tolerance ``FLOAT32_RTOL`` of the same magnitude. A float32 network
  evaluation accumulates rounding errors over every layer (each a sum of many products) and the
  helper cannot see the internal magnitudes, so the allowance is about a thousand float32 ulps,
  still far below any width that matters for a bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from optax_saferate import autobound as ab

BATCH = 64
FLOAT64_ULPS = 16
FLOAT32_RTOL = 1e-4
# Exact coefficients against autodiff (different operation orders, and for float32 a float64
# reference): relative to the coefficient's size across the batch.
COEFFICIENT_RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-3}


def tolerance_factor(dtype) -> float:
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return FLOAT64_ULPS * float(np.finfo(np.float64).eps)
    if dtype == np.float32:
        return FLOAT32_RTOL
    raise ValueError(f"no tolerance for {dtype}")


def taylor_coefficient(f: Callable, order: int) -> Callable:
    """``x -> f^(order)(x) / order!`` by nested autodiff.

    For a scalar-valued ``f``: ``jax.grad`` for order 1, ``jax.hessian`` for order 2, nested
    ``jax.grad`` beyond; for an array-valued ``f``, nested ``jax.jacfwd``.
    """
    if order == 0:
        return f
    scalar = jax.eval_shape(f, jnp.zeros((), jnp.float64)).shape == ()
    if scalar and order == 1:
        return jax.grad(f)
    if scalar and order == 2:
        return lambda x: jax.hessian(f)(x) / 2
    derivative = f
    for _ in range(order):
        derivative = jax.grad(derivative) if scalar else jax.jacfwd(derivative)
    return lambda x: derivative(x) / math.factorial(order)


def rounded(values, dtype) -> np.ndarray:
    return np.asarray(np.asarray(values, np.float64).astype(dtype))


def sample_offsets(lo, hi, x0, count: int, seed: int = 0) -> np.ndarray:
    """Points of each trust region ``[lo_i, hi_i]``: both ends, ``x0_i``, a grid, random points.

    Returned in float64, exactly representable in the dtype of ``lo`` (rounded and clipped).
    """
    dtype = np.asarray(lo).dtype
    lo64, hi64 = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, count // 2)
    uniform = rng.uniform(size=(lo64.shape[0], count - count // 2 - 1))
    fractions = np.concatenate([np.broadcast_to(grid, (lo64.shape[0], grid.size)), uniform], 1)
    points = lo64[:, None] + fractions * (hi64 - lo64)[:, None]
    points = np.concatenate([points, np.asarray(x0, np.float64)[:, None]], 1)
    points = np.clip(points.astype(dtype), lo[:, None], hi[:, None])
    return points.astype(np.float64)


def pad_cases(*arrays):
    """Repeat cases up to a multiple of ``BATCH``: eagerly executed ops are compiled once per
    shape, so one batch size across the tests lets them share those compilations."""
    n = len(arrays[0])
    size = -(-n // BATCH) * BATCH
    return tuple(np.resize(a, (size, *np.shape(a)[1:])) for a in arrays)


def compute_bounds(f, degree, x0, trust_region, *, jit=True, propagate_trust_regions=False):
    """Batched bounds: ``x0`` and both ends of ``trust_region`` are 1-D arrays of one length."""
    bound = jax.vmap(ab.taylor_bounds(f, degree, propagate_trust_regions=propagate_trust_regions))
    if jit:
        bound = jax.jit(bound)
    n = len(x0)
    x0, lo, hi = pad_cases(np.asarray(x0), *(np.asarray(e) for e in trust_region))
    bounds = bound(jnp.asarray(x0), (jnp.asarray(lo), jnp.asarray(hi)))
    return jax.tree.map(lambda a: a[:n], bounds)


def evaluate_bounds(bounds: ab.TaylorBounds, points, jit=True) -> tuple[np.ndarray, np.ndarray]:
    """``lower`` and ``upper`` of each case at its own points (shape ``(cases, points, ...)``)."""

    def one_case(case, xs):
        return jax.vmap(case.lower)(xs), jax.vmap(case.upper)(xs)

    points = jnp.asarray(points, jnp.result_type(bounds.x0))
    evaluate = jax.vmap(one_case)
    lower, upper = (jax.jit(evaluate) if jit else evaluate)(bounds, points)
    return np.asarray(lower, np.float64), np.asarray(upper, np.float64)


def term_magnitude(bounds: ab.TaylorBounds, points, values) -> np.ndarray:
    """``|f(x)| + Σ |c_i t^i| + max(|lo|, |hi|)·|t|^k``, the scale of the rounding errors."""
    t = np.abs(np.asarray(points, np.float64) - np.asarray(bounds.x0, np.float64)[:, None])
    extra = (1,) * (np.ndim(values) - 2)
    t = t.reshape(t.shape + extra)
    magnitude = np.abs(values)
    for i, c in enumerate(bounds.coefficients[:-1]):
        c = np.abs(np.asarray(c, np.float64))[:, None]
        magnitude = magnitude + c * t**i
    lo, hi = (np.abs(np.asarray(e, np.float64))[:, None] for e in bounds.coefficients[-1])
    top = np.maximum(lo, hi)
    with np.errstate(invalid="ignore", over="ignore"):
        remainder = np.where(np.isfinite(top), top * t ** len(bounds.coefficients[:-1]), 0.0)
    return magnitude + remainder


def check_bounds(
    f: Callable,
    x0,
    trust_region,
    degree: int,
    dtype=np.float64,
    *,
    reference: Callable | None = None,
    samples: int = 64,
    jit: bool = True,
    propagate_trust_regions: bool = False,
    check_taylor: bool = True,
    rounding_scale: Callable | None = None,
    seed: int = 0,
) -> ab.TaylorBounds:
    """Check the AutoBound enclosure of ``f`` for a batch of cases; return the bounds.

    Args:
      f: the function bounded, of one scalar (called with ``dtype`` inputs).
      x0: reference points, a scalar or 1-D array.
      trust_region: ``(lo, hi)``, each broadcast to the shape of ``x0``.
      degree: the ``max_degree`` of the enclosure.
      dtype: float32 or float64, the dtype of ``x0`` and the trust region.
      reference: the same function evaluated in float64 (``f`` by default).
      samples: points per trust region where the bounds are checked.
      jit: compute the bounds under ``jax.jit`` (eager tracing is faster for one-off functions).
      propagate_trust_regions: passed to ``taylor_bounds``.
      check_taylor: compare the exact coefficients and the final interval with autodiff.
      rounding_scale: ``x -> m(x)`` with the float64 evaluation of ``f`` at ``x`` accurate to
        a few ``eps·m(x)`` (the size of its largest cancelling intermediates); ``|f|`` if omitted.
      seed: for the random sample points.
    """
    dtype = np.dtype(dtype)
    reference = f if reference is None else reference
    x0 = np.atleast_1d(rounded(x0, dtype))
    lo, hi = (np.broadcast_to(rounded(e, dtype), x0.shape).copy() for e in trust_region)
    assert np.all(lo <= x0) and np.all(x0 <= hi), "the trust region must contain x0"
    cases = len(x0)
    x0, lo, hi = pad_cases(x0, lo, hi)
    bounds = compute_bounds(
        f, degree, x0, (lo, hi), jit=jit, propagate_trust_regions=propagate_trust_regions
    )
    for c in bounds.coefficients[:-1]:
        assert np.asarray(c).dtype == dtype
        assert not np.any(np.isnan(c)), f"NaN coefficient: {bounds.coefficients}"
    lo_k, hi_k = (np.asarray(e, np.float64) for e in bounds.final_interval())
    assert not np.any(np.isnan(lo_k) | np.isnan(hi_k)), f"NaN interval: {bounds.final_interval()}"
    assert np.all(lo_k <= hi_k), f"empty interval: {bounds.final_interval()}"

    points = sample_offsets(lo, hi, x0, samples, seed)
    values, expected = _reference(reference, degree if check_taylor else -1, points, x0, jit)
    assert np.all(np.isfinite(values)), "the test function must be finite on the trust region"
    lower, upper = evaluate_bounds(bounds, points, jit)
    assert not np.any(np.isnan(lower) | np.isnan(upper)), "NaN bound"
    magnitude = term_magnitude(bounds, points, values)
    if rounding_scale is not None:
        scale = jax.vmap(jax.vmap(rounding_scale))
        scale = jax.jit(scale) if jit else scale
        at_points = np.asarray(scale(jnp.asarray(points, jnp.float64)))
        at_x0 = np.asarray(scale(jnp.asarray(x0, jnp.float64)[:, None]))
        magnitude = magnitude + at_points + at_x0
    tolerance = tolerance_factor(dtype) * magnitude
    _assert_all(lower <= values + tolerance, "lower bound above f", points, lower, values, bounds)
    _assert_all(values <= upper + tolerance, "upper bound below f", points, upper, values, bounds)

    if check_taylor:
        rtol = COEFFICIENT_RTOL[dtype]
        for order, c in enumerate(bounds.coefficients[:-1]):
            scale = np.abs(expected[order]) + np.max(np.abs(expected[order]), axis=0, keepdims=True)
            error = np.abs(np.asarray(c, np.float64) - expected[order])
            _assert_all(
                error <= rtol * scale,
                f"coefficient {order} differs",
                x0,
                c,
                expected[order],
                bounds,
            )
        true_k = expected[degree]
        slack = rtol * (np.abs(true_k) + np.max(np.abs(true_k), axis=0, keepdims=True))
        inside = (lo_k - slack <= true_k) & (true_k <= hi_k + slack)
        _assert_all(inside, f"interval misses f^({degree})/{degree}!", x0, lo_k, true_k, bounds)
    return jax.tree.map(lambda a: a[:cases], bounds)


def _reference(f, degree, points, x0, jit):
    """``f`` at the points and its Taylor coefficients ``0..degree`` at ``x0``, in float64."""

    def compute(points, x0):
        values = jax.vmap(jax.vmap(f))(points)
        return values, [jax.vmap(taylor_coefficient(f, j))(x0) for j in range(degree + 1)]

    if jit:
        compute = jax.jit(compute)
    values, coefficients = compute(jnp.asarray(points, jnp.float64), jnp.asarray(x0, jnp.float64))
    return np.asarray(values), [np.asarray(c) for c in coefficients]


def _assert_all(ok, message, points, got, expected, bounds):
    ok = np.asarray(ok)
    if np.all(ok):
        return
    index = np.unravel_index(np.argmin(ok), ok.shape)
    case = index[0]
    coefficients = [
        tuple(np.asarray(e)[case] for e in c) if isinstance(c, tuple) else np.asarray(c)[case]
        for c in bounds.coefficients
    ]
    region = tuple(np.asarray(e)[case] for e in bounds.trust_region)
    raise AssertionError(
        f"{message} in {np.size(ok) - np.count_nonzero(ok)} of {np.size(ok)} checks; first at "
        f"{index}: point {np.asarray(points)[index[: np.ndim(points)]]!r}, "
        f"got {np.asarray(got)[index]!r}, expected {np.asarray(expected)[index]!r}; "
        f"x0 {np.asarray(bounds.x0)[case]!r}, trust region {region!r}, "
        f"coefficients {coefficients!r}"
    )


def random_cases(rng: np.random.Generator, count: int, center=(-3.0, 3.0), widths=(1e-6, 2.0)):
    """Random ``x0`` and trust regions: half one-sided ``[x0, x0 + w]``, half two-sided."""
    x0 = rng.uniform(*center, size=count)
    width = np.exp(rng.uniform(np.log(widths[0]), np.log(widths[1]), size=count))
    split = rng.uniform(size=count)
    one_sided = np.arange(count) % 2 == 0
    lo = np.where(one_sided, x0, x0 - split * width)
    hi = np.where(one_sided, x0 + width, x0 + (1 - split) * width)
    return x0, (lo, hi)
