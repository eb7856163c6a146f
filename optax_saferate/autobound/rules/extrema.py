"""Rules for maxima and minima: ``max``, ``min`` and ``clamp`` of two values, the reductions
``reduce_max``/``reduce_min``, max- and min-pooling (``reduce_window_max``/``min``), and
:func:`materialize`, which turns the max of a log-sum-exp pattern that left the pattern into a
plain enclosure.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import primitives as P

from optax_saferate.autobound import elementwise
from optax_saferate.autobound import enclosures
from optax_saferate.autobound import kink_report
from optax_saferate.autobound import logsumexp as lse
from optax_saferate.autobound import maximum as maximum_rule
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.rules.arithmetic import _subtract_values
from optax_saferate.autobound.rules.core import _as_enclosure
from optax_saferate.autobound.rules.core import _fit
from optax_saferate.autobound.rules.core import _out_shape
from optax_saferate.autobound.rules.core import _source
from optax_saferate.autobound.rules.core import apply_relu
from optax_saferate.autobound.rules.core import is_constant
from optax_saferate.autobound.rules.core import register


def maximum(env, ctx, a, b):
    """``max(a, b) = b + relu(a - b)`` (constants allowed on either side), with the value at the
    reference point taken exactly as ``max(a0, b0)``.

    Where ``a - b`` keeps one sign over the trust region the result is ``a`` or ``b`` itself:
    ``b + (a - b)`` would add the remainder of ``b`` twice.
    """
    if not isinstance(b, TaylorEnclosure):
        a, b = b, a  # make `b` the enclosure
    difference = _subtract_values(ctx, a, b)
    merged = enclosures.add(b, apply_relu(env, ctx, difference), ctx)
    merged = _with_value(merged, jnp.maximum, a, b)
    return _exact_where_one_side(ctx, difference, a, b, merged)


def minimum(env, ctx, a, b):
    """``min(a, b) = a - relu(a - b)`` with the value ``min(a0, b0)`` exact, or ``a`` or ``b``
    itself where one is always smaller."""
    if not isinstance(a, TaylorEnclosure):
        a, b = b, a
    difference = _subtract_values(ctx, a, b)
    merged = enclosures.add(a, enclosures.negate(apply_relu(env, ctx, difference)), ctx)
    merged = _with_value(merged, jnp.minimum, a, b)
    return _exact_where_one_side(ctx, difference, b, a, merged)


def _with_value(merged: TaylorEnclosure, pick, a, b) -> TaylorEnclosure:
    """``merged`` with its value at the reference point set to ``pick(a0, b0)``, exactly.

    ``b0 + relu(a0 - b0)`` rounds: with ``|a0|`` far below ``|b0|`` it loses ``a0`` altogether
    (``max(-1e-45, -0.5)`` came out as 0), while ``max`` and ``min`` of two floats are exact.
    """
    a, b = _as_enclosure(a, merged), _as_enclosure(b, merged)
    if not (merged.coefficients and a.coefficients and b.coefficients):
        return merged  # degree 0: the enclosure is a range, not a value
    a0, b0 = a.coefficients[0], b.coefficients[0]
    value = jnp.broadcast_to(pick(a0, b0), merged.shape).astype(merged.dtype)
    return TaylorEnclosure((value, *merged.coefficients[1:]), merged.remainder)


def _exact_where_one_side(ctx, difference, when_positive, when_negative, merged):
    """``when_positive`` where ``difference >= 0`` on all of ``T``, ``when_negative`` where it
    is ``<= 0``, ``merged`` elsewhere."""
    r = enclosures.range_over(difference, ctx)

    def full(x):
        x = _as_enclosure(x, merged)
        if x.shape == merged.shape:
            return x
        return enclosures.map_monotone(lambda c: jnp.broadcast_to(c, merged.shape), x)

    choice = elementwise.select(r.hi <= 0, full(when_negative), merged, ctx)
    return elementwise.select(r.lo >= 0, full(when_positive), choice, ctx)


@register(P.max_p)
def _max(env, ctx, eqn, a, b):
    for value, other in ((a, b), (b, a)):
        if isinstance(value, lse.PatternValue) and value.stage == lse.MAX:
            if is_constant(other) and np.all(np.asarray(other) == -np.inf):
                return value
            return _max(env, ctx, eqn, *[materialize(ctx, env, v) for v in (a, b)])
    return _fit(maximum(env, ctx, a, b), eqn)


@register(P.min_p)
def _min(env, ctx, eqn, a, b):
    return _fit(minimum(env, ctx, a, b), eqn)


@register(P.clamp_p)
def _clamp(env, ctx, eqn, low, x, high):
    return _fit(minimum(env, ctx, maximum(env, ctx, x, low), high), eqn)


# --------------------------------------------------------------------------- reductions


@register(P.reduce_max_p)
def _reduce_max(env, ctx, eqn, x):
    return lse.start(x, tuple(eqn.params["axes"]), _out_shape(eqn))


@register(P.reduce_min_p)
def _reduce_min(env, ctx, eqn, x):
    axes = tuple(eqn.params["axes"])
    return enclosures.negate(reduce_extreme(env, ctx, enclosures.negate(x), axes))


def reduce_extreme(env, ctx, x: TaylorEnclosure, axes) -> TaylorEnclosure:
    """``max`` over ``axes``: all candidates at once at degree 2 (see ``maximum.max_of``),
    otherwise a balanced tree of pairwise ``b + relu(a - b)``."""
    kink_report.note("max")
    if ctx.degree == 2 and axes:
        moved = enclosures.map_monotone(lambda c: jnp.moveaxis(c, axes, tuple(range(len(axes)))), x)
        count = int(np.prod([x.shape[a] for a in axes]))
        flat = enclosures.map_monotone(lambda c: c.reshape((count, *c.shape[len(axes) :])), moved)
        candidates = [enclosures.map_monotone(lambda c, i=i: c[i], flat) for i in range(count)]
        return maximum_rule.max_of(candidates, ctx)
    for axis in sorted(axes, reverse=True):
        while x.shape[axis] > 1:
            n = x.shape[axis]
            half = n // 2
            first = enclosures.map_monotone(
                lambda c, h=half, axis=axis: lax.slice_in_dim(c, 0, h, axis=axis), x
            )
            second = enclosures.map_monotone(
                lambda c, h=half, axis=axis: lax.slice_in_dim(c, h, 2 * h, axis=axis), x
            )
            merged = maximum(env, ctx, first, second)
            if n % 2:
                last = enclosures.map_monotone(
                    lambda c, n=n, axis=axis: lax.slice_in_dim(c, n - 1, n, axis=axis), x
                )
                merged = enclosures.combine_monotone(
                    lambda p, q, axis=axis: jnp.concatenate([p, q], axis), [merged, last], ctx
                )
            x = merged
        x = enclosures.map_monotone(lambda c, axis=axis: jnp.squeeze(c, axis), x)
    return x


def materialize(ctx, env, value):
    """Turn a pattern value that left the pattern into an ordinary enclosure, if it can be."""
    if not isinstance(value, lse.PatternValue):
        return value
    if value.stage == lse.MAX:
        result = reduce_extreme(env, ctx, value.z, value.axes)
        return enclosures.map_monotone(lambda c: lse.lay_out(c, value.layout, value.shape), result)
    raise lse.pattern_error("an unsupported operation", value, "this equation")


# --------------------------------------------------------------------------- pooling


@register(P.reduce_window_max_p)
def _max_pool(env, ctx, eqn, x):
    return _pool_extreme(env, ctx, eqn, x, sign=1.0)


@register(P.reduce_window_min_p)
def _min_pool(env, ctx, eqn, x):
    return enclosures.negate(_pool_extreme(env, ctx, eqn, enclosures.negate(x), sign=1.0))


def _pool_extreme(env, ctx, eqn, x: TaylorEnclosure, sign: float):
    """Max-pooling: the max over each window's candidates, one strided slice per offset."""
    kink_report.note("max-pool")
    params = eqn.params
    dims, strides = params["window_dimensions"], params["window_strides"]
    padding = params["padding"]
    if any(d != 1 for d in params["base_dilation"]):
        raise NotImplementedError(f"max-pool with base dilation at {_source(eqn)}")
    dilation = params["window_dilation"]
    out_shape = _out_shape(eqn)
    zero = jnp.zeros((), x.dtype)
    config = [(lo, hi, 0) for lo, hi in padding]
    padded = enclosures.map_monotone(lambda c: lax.pad(c, zero, config), x)
    valid = lax.pad(jnp.ones(x.shape, bool), False, config)
    windows = []
    for offset in np.ndindex(*dims):
        start = [o * d for o, d in zip(offset, dilation, strict=True)]
        limit = [s + (n - 1) * st + 1 for s, n, st in zip(start, out_shape, strides, strict=True)]

        def take(c, start=start, limit=limit):
            return lax.slice(c, start, limit, strides)

        windows.append((enclosures.map_monotone(take, padded), take(valid)))
    if ctx.degree == 2:
        candidates, masks = zip(*windows, strict=True)
        return maximum_rule.max_of(candidates, ctx, valid=masks)
    best, best_valid = None, None
    for candidate, candidate_valid in windows:
        if best is None:
            best, best_valid = candidate, candidate_valid
            continue
        merged = maximum(env, ctx, candidate, best)
        merged = elementwise.select(
            candidate_valid & best_valid,
            merged,
            elementwise.select(candidate_valid, candidate, best, ctx),
            ctx,
        )
        best, best_valid = merged, candidate_valid | best_valid
    return best
