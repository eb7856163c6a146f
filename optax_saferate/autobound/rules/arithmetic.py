"""Rules for elementwise arithmetic: ``add``, ``sub``, ``neg``, ``mul`` and ``div`` (with the
log-sum-exp pattern's steps that pass through them), and the helpers that subtract and multiply
values that may be constants.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.extend.core import primitives as P

from optax_saferate.autobound import enclosures
from optax_saferate.autobound import logsumexp as lse
from optax_saferate.autobound import smooth_functions
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval
from optax_saferate.autobound.rules.core import _fit
from optax_saferate.autobound.rules.core import _out_shape
from optax_saferate.autobound.rules.core import _source
from optax_saferate.autobound.rules.core import apply_function
from optax_saferate.autobound.rules.core import is_constant
from optax_saferate.autobound.rules.core import register


def _subtract_values(ctx, a, b):
    if isinstance(a, TaylorEnclosure) and isinstance(b, TaylorEnclosure):
        return enclosures.add(a, enclosures.negate(b), ctx)
    if isinstance(a, TaylorEnclosure):
        return enclosures.add_constant(a, -b)
    return enclosures.add_constant(enclosures.negate(b), a)


def _multiply_values(ctx, a, b):
    if isinstance(a, TaylorEnclosure) and isinstance(b, TaylorEnclosure):
        return enclosures.multiply(a, b, ctx)
    if isinstance(a, TaylorEnclosure):
        return enclosures.scale(a, b)
    if isinstance(b, TaylorEnclosure):
        return enclosures.scale(b, a)
    return a * b


@register(P.add_p, P.add_jaxvals_p)
def _add(env, ctx, eqn, a, b):
    for value, other in ((a, b), (b, a)):
        if isinstance(value, lse.PatternValue) and isinstance(other, lse.PatternValue):
            if value.stage == lse.LOG and other.stage == lse.SHIFT:
                # log(sum(b·exp(z - s))) + s = LSE(z + log b), if s is the shift of each row.
                rows = lse.same_shift_by_row(value, other, _out_shape(eqn))
                if rows is None:
                    raise lse.pattern_error("add (of another shift)", value, _source(eqn))
                result = lse.weighted_logsumexp(value.z, value.weights, value.axes, ctx)
                shape = _out_shape(eqn)
                return enclosures.map_monotone(
                    lambda c, rows=rows, shape=shape: lse.lay_out(c, rows, shape), result
                )
    for value in (a, b):
        if isinstance(value, lse.PatternValue):
            raise lse.pattern_error("add", value, _source(eqn))
    if isinstance(a, TaylorEnclosure) and isinstance(b, TaylorEnclosure):
        return _fit(enclosures.add(a, b, ctx), eqn)
    if isinstance(a, TaylorEnclosure):
        return _fit(enclosures.add_constant(a, b), eqn)
    return _fit(enclosures.add_constant(b, a), eqn)


@register(P.sub_p)
def _sub(env, ctx, eqn, a, b):
    if isinstance(b, lse.PatternValue) and b.stage == lse.SHIFT and isinstance(a, TaylorEnclosure):
        # z - s, with s = stop_gradient(max(...)): any shift cancels later (see logsumexp.py).
        value = lse.shifted(a, b, _out_shape(eqn))
        if value is not None:
            return value
    if isinstance(a, lse.PatternValue) and a.stage == lse.SHIFTED:
        if isinstance(b, lse.PatternValue) and b.stage == lse.LOG and lse.broadcast_back(a, b):
            return lse.log_softmax(a.z, b.axes, ctx, b.weights)
    for value in (a, b):
        if isinstance(value, lse.PatternValue):
            raise lse.pattern_error("sub", value, _source(eqn))
    return _fit(_subtract_values(ctx, a, b), eqn)


@register(P.neg_p)
def _neg(env, ctx, eqn, x):
    return enclosures.negate(x)


@register(P.mul_p)
def _mul(env, ctx, eqn, a, b):
    for value, other in ((a, b), (b, a)):
        if isinstance(value, lse.PatternValue):
            if value.stage == lse.EXP and is_constant(other):
                return lse.weighted(value, other, _source(eqn))  # logsumexp(..., b=other)
            raise lse.pattern_error("mul", value, _source(eqn))
    if eqn.invars[0] is eqn.invars[1] and isinstance(a, TaylorEnclosure):
        return apply_function(env, ctx, smooth_functions.integer_power(2), a)
    return _fit(_multiply_values(ctx, a, b), eqn)


@register(P.div_p)
def _div(env, ctx, eqn, a, b):
    if isinstance(a, lse.PatternValue) and a.stage == lse.EXP and a.weights is None:
        if isinstance(b, lse.PatternValue) and b.stage == lse.SUM and lse.broadcast_back(a, b):
            return lse.softmax(a.z, b.axes, ctx, b.weights)
    for value in (a, b):
        if isinstance(value, lse.PatternValue):
            raise lse.pattern_error("div", value, _source(eqn))
    if isinstance(a, TaylorEnclosure) and is_constant(b):
        return _fit(_divide_by_constant(a, b), eqn)
    reciprocal = (
        apply_function(env, ctx, smooth_functions.RECIPROCAL, b)
        if isinstance(b, TaylorEnclosure)
        else 1.0 / b
    )
    return _fit(_multiply_values(ctx, a, reciprocal), eqn)


def _divide_by_constant(a: TaylorEnclosure, c) -> TaylorEnclosure:
    remainder = None
    if a.remainder is not None:
        p, q = a.remainder.lo / c, a.remainder.hi / c
        remainder = Interval(jnp.minimum(p, q), jnp.maximum(p, q))
    return TaylorEnclosure(tuple(x / c for x in a.coefficients), remainder)
