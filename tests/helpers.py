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

Tolerances, fixed per dtype and never widened per test, are relative to the *magnitude of the
terms*: ``|f(x)|``, the absolute values of every term ``c_i·t^i`` and of the remainder term,
and the rounding-error scale ``M`` of evaluating ``f`` at ``x`` and at ``x0``
(:func:`rounding_magnitude`: ``|f|`` for one op, larger where ``f`` cancels):

* float64: ``FLOAT64_ULPS`` ulps of that magnitude. The engine and the reference evaluate ``f``
  along different operation orders, so each is off by a few units of ``eps·M``.
* float32: a relative tolerance ``FLOAT32_RTOL`` of it, about a thousand float32 ulps. The
  engine's float32 derivatives carry errors the float64 reference does not (``1 - tanh²``
  cancels for saturated units; each layer's sums round), of a size the helper cannot see.

Both add ``UNDERFLOW_UNITS`` times the smallest normal number of the dtype, absolutely.
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
# XLA flushes subnormal results to zero, so each op may also lose up to the smallest normal
# number in absolute terms (x0 = 2e-23 in float32: x0² is 0, not 5e-46).
UNDERFLOW_UNITS = 64
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


# --------------------------------------------------------------------------- rounding scale

_BILINEAR = ("dot_general", "conv_general_dilated", "mul")
_CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def rounding_magnitude(f: Callable) -> Callable:
    """``x -> M(x)``: the first-order rounding-error scale of evaluating ``f`` at ``x``.

    The jaxpr of ``f`` is evaluated on pairs (value, magnitude) as in the running error analysis
    of numerical linear algebra: inputs and constants are exact (``M = 0``) and an op's result
    ``y`` gets ``M(y) = |y| + Σ_i |∂y/∂u_i|·M(u_i)`` (bilinear ops: ``op(M(a), |b|) +
    op(|a|, M(b))``; copying and summing ops: the op applied to the magnitudes). Each op adds a
    rounding error of about ``eps·|y|``, which reaches the output through the same partial
    derivatives, so ``f``'s floating-point value is within a few ``eps·M(x)`` (times the length
    of its longest sums) of the exact one. ``M`` is ``|f|`` for a single op and grows where
    ``f`` cancels (``Σ w_i |u_i|`` with mixed signs, gelu's ``1 + tanh``, layer norm's
    ``E[x²] - E[x]²``).
    """

    def magnitude(x):
        closed = jax.make_jaxpr(f)(x)
        ((value, m),) = _magnitude_eval(closed.jaxpr, closed.consts, [(x, None)])
        return jnp.abs(value) if m is None else m

    return magnitude


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _magnitude_eval(jaxpr, consts, args):
    """Evaluate ``jaxpr`` on (value, magnitude) pairs; magnitude ``None`` marks exact values."""
    env = {}

    def read(v):
        return (v.val, None) if isinstance(v, jax.extend.core.Literal) else env[v]

    for var, c in zip(jaxpr.constvars, consts, strict=True):
        env[var] = (c, None)
    for var, pair in zip(jaxpr.invars, args, strict=True):
        env[var] = pair
    for eqn in jaxpr.eqns:
        outputs = _magnitude_rule(eqn, [read(v) for v in eqn.invars])
        for var, pair in zip(eqn.outvars, outputs, strict=True):
            env[var] = pair
    return [read(v) for v in jaxpr.outvars]


def _magnitude_rule(eqn, pairs):
    primitive, params = eqn.primitive, eqn.params
    for key in _CALL_PARAMS:
        body = params.get(key)
        if isinstance(body, jax.extend.core.ClosedJaxpr):
            return _magnitude_eval(body.jaxpr, body.consts, pairs)
        if isinstance(body, jax.extend.core.Jaxpr):
            return _magnitude_eval(body, [], pairs)
    if primitive.name == "stop_gradient":
        return [pairs[0]]
    bind_params = primitive.get_bind_params(params)
    if isinstance(bind_params, tuple):  # older jax: (subfuns, params)
        bind_params = bind_params[1]
    values = [p[0] for p in pairs]

    def apply(*inputs):
        result = primitive.bind(*inputs, **bind_params)
        return list(result) if primitive.multiple_results else [result]

    outputs = apply(*values)
    if not all(_is_float(o) for o in outputs):
        return [(o, None) for o in outputs]
    # Inexact inputs: the ones that carry rounding errors of earlier ops.
    inexact = [i for i, p in enumerate(pairs) if p[1] is not None]
    magnitudes = [
        p[1] if p[1] is not None else jnp.zeros_like(p[0]) if _is_float(p[0]) else p[0]
        for p in pairs
    ]
    shapes = {jnp.shape(o) for o in outputs}
    elementwise = len(shapes) == 1 and all(jnp.shape(values[i]) in shapes | {()} for i in inexact)
    if not inexact:
        spread = [jnp.zeros_like(o) for o in outputs]
    elif primitive.name in _BILINEAR and not elementwise:
        a, b = (i for i, v in enumerate(values) if _is_float(v))
        left = [
            magnitudes[a] if i == a else jnp.abs(v) if i == b else v for i, v in enumerate(values)
        ]
        right = [
            jnp.abs(v) if i == a else magnitudes[b] if i == b else v for i, v in enumerate(values)
        ]
        spread = [x + y for x, y in zip(apply(*left), apply(*right), strict=True)]
    elif elementwise:
        spread = [jnp.zeros_like(o) for o in outputs]
        for i in inexact:

            def partial(u, i=i):
                return apply(*[u if j == i else v for j, v in enumerate(values)])

            _, tangents = jax.jvp(partial, (values[i],), (magnitudes[i],))
            spread = [s + jnp.abs(t) for s, t in zip(spread, tangents, strict=True)]
    elif primitive.name == "pad":  # the padding value is a constant: it adds no error
        spread = apply(magnitudes[0], jnp.zeros_like(values[1]))
    else:  # copies, sums, gathers, pooling: nonnegative weights, applied to the magnitudes
        spread = apply(*[magnitudes[i] if _is_float(v) else v for i, v in enumerate(values)])
    return [(o, jnp.abs(o) + m) for o, m in zip(outputs, spread, strict=True)]


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
    jit_reference: bool | None = None,
    propagate_trust_regions: bool = False,
    check_taylor: bool = True,
    seed: int = 0,
    extra_points=None,
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
      jit_reference: evaluate the float64 reference under ``jax.jit`` (default: as ``jit``). Its
        value does not depend on it; jit pays one compilation, eager one dispatch per operation
        (cheap for a small function whose operations earlier tests compiled, slow for a big one).
      propagate_trust_regions: passed to ``taylor_bounds``.
      check_taylor: compare the exact coefficients and the final interval with autodiff.
      seed: for the random sample points.
      extra_points: more points to check, shape ``(cases, m)`` (e.g. a kink and its float
        neighbours); rounded to ``dtype`` and clipped into each case's trust region.
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
        assert np.asarray(c).dtype == dtype, f"coefficient dtype {np.asarray(c).dtype}, not {dtype}"
        assert not np.any(np.isnan(c)), f"NaN coefficient: {bounds.coefficients}"
    lo_k, hi_k = (np.asarray(e, np.float64) for e in bounds.final_interval())
    assert not np.any(np.isnan(lo_k) | np.isnan(hi_k)), f"NaN interval: {bounds.final_interval()}"
    assert np.all(lo_k <= hi_k), f"empty interval: {bounds.final_interval()}"

    points = sample_offsets(lo, hi, x0, samples, seed)
    if extra_points is not None:
        extra = np.resize(rounded(extra_points, dtype), (len(x0), np.shape(extra_points)[1]))
        extra = np.clip(extra, lo[:, None], hi[:, None]).astype(np.float64)
        points = np.concatenate([points, extra], 1)
    jit_reference = jit if jit_reference is None else jit_reference
    values, expected, rounding = _reference(
        reference, degree if check_taylor else -1, points, x0, jit_reference
    )
    assert np.all(np.isfinite(values)), "the test function must be finite on the trust region"
    lower, upper = evaluate_bounds(bounds, points, jit)
    assert not np.any(np.isnan(lower) | np.isnan(upper)), "NaN bound"
    magnitude = term_magnitude(bounds, points, values)
    magnitude = magnitude + rounding
    underflow = UNDERFLOW_UNITS * float(np.finfo(dtype).tiny)
    tolerance = tolerance_factor(dtype) * magnitude + underflow
    _assert_all(lower <= values + tolerance, "lower bound above f", points, lower, values, bounds)
    _assert_all(values <= upper + tolerance, "upper bound below f", points, upper, values, bounds)

    if check_taylor:
        rtol = COEFFICIENT_RTOL[dtype]
        for order, c in enumerate(bounds.coefficients[:-1]):
            scale = np.abs(expected[order]) + np.max(np.abs(expected[order]), axis=0, keepdims=True)
            error = np.abs(np.asarray(c, np.float64) - expected[order]) - underflow
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
        slack = slack + underflow
        inside = (lo_k - slack <= true_k) & (true_k <= hi_k + slack)
        _assert_all(inside, f"interval misses f^({degree})/{degree}!", x0, lo_k, true_k, bounds)
    return jax.tree.map(lambda a: a[:cases], bounds)


def _reference(f, degree, points, x0, jit):
    """In float64: ``f`` at the points, its Taylor coefficients ``0..degree`` at ``x0``, and the
    rounding scale ``M`` at each point plus at ``x0`` (one function, so one compilation)."""

    def compute(points, x0):
        values = jax.vmap(jax.vmap(f))(points)
        coefficients = [jax.vmap(taylor_coefficient(f, j))(x0) for j in range(degree + 1)]
        magnitude = jax.vmap(rounding_magnitude(f))
        rounding = jax.vmap(magnitude)(points) + jnp.expand_dims(magnitude(x0), 1)
        return values, coefficients, rounding

    if jit:
        compute = jax.jit(compute)
    values, coefficients, rounding = compute(
        jnp.asarray(points, jnp.float64), jnp.asarray(x0, jnp.float64)
    )
    return np.asarray(values), [np.asarray(c) for c in coefficients], np.asarray(rounding)


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
