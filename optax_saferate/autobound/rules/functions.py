"""Rules for elementwise functions: the smooth primitives (exp, log, tanh, erf, sin, sqrt, ...),
integer and real powers, ``abs`` and ``sign``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import primitives as P

from optax_saferate.autobound import enclosures
from optax_saferate.autobound import logsumexp as lse
from optax_saferate.autobound import smooth_functions
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval
from optax_saferate.autobound.rules.arithmetic import _multiply_values
from optax_saferate.autobound.rules.core import RULES
from optax_saferate.autobound.rules.core import _fit
from optax_saferate.autobound.rules.core import apply_function
from optax_saferate.autobound.rules.core import apply_relu
from optax_saferate.autobound.rules.core import is_constant
from optax_saferate.autobound.rules.core import register

_SIMPLE_FUNCTIONS = {
    P.exp_p: smooth_functions.EXP,
    P.log_p: smooth_functions.LOG,
    P.log1p_p: smooth_functions.LOG1P,
    P.expm1_p: smooth_functions.EXPM1,
    P.logistic_p: smooth_functions.SIGMOID,
    P.tanh_p: smooth_functions.TANH,
    P.erf_p: smooth_functions.ERF,
    P.erfc_p: smooth_functions.ERFC,
    P.sin_p: smooth_functions.SIN,
    P.cos_p: smooth_functions.COS,
    P.sqrt_p: smooth_functions.SQRT,
    P.rsqrt_p: smooth_functions.RSQRT,
}


def _simple_rule(spec):
    def rule(env, ctx, eqn, x):
        return apply_function(env, ctx, spec, x)

    return rule


for _primitive, _spec in _SIMPLE_FUNCTIONS.items():
    RULES[_primitive] = _simple_rule(_spec)


@register(P.integer_pow_p)
def _integer_pow(env, ctx, eqn, x):
    return _integer_pow_value(env, ctx, x, eqn.params["y"])


@register(P.square_p)
def _square(env, ctx, eqn, x):
    return apply_function(env, ctx, smooth_functions.integer_power(2), x)


@register(P.pow_p)
def _pow(env, ctx, eqn, base, exponent):
    if isinstance(base, TaylorEnclosure) and is_constant(exponent):
        p = np.asarray(exponent)
        if p.ndim == 0 and not isinstance(exponent, jax.core.Tracer):
            p = float(p)
            if p.is_integer():
                return _integer_pow_value(env, ctx, base, int(p))
            return apply_function(env, ctx, smooth_functions.real_power(p), base)
    # base**e = exp(e·log(base)) for a positive base.
    log_base = (
        apply_function(env, ctx, smooth_functions.LOG, base)
        if isinstance(base, TaylorEnclosure)
        else jnp.log(base)
    )
    product = _multiply_values(ctx, log_base, exponent)
    return apply_function(env, ctx, smooth_functions.EXP, _fit(product, eqn))


def _integer_pow_value(env, ctx, x, n):
    if n == 0:
        return jnp.ones(x.shape, x.dtype)
    if n == 1:
        return x
    return apply_function(env, ctx, smooth_functions.integer_power(n), x)


@register(P.abs_p)
def _abs(env, ctx, eqn, x):
    if isinstance(x, lse.PatternValue) and x.stage == lse.SUM:
        return x  # the sum of exponentials is positive
    return enclosures.add(apply_relu(env, ctx, x), apply_relu(env, ctx, enclosures.negate(x)), ctx)


@register(P.sign_p)
def _sign(env, ctx, eqn, x):
    if isinstance(x, lse.PatternValue) and x.stage == lse.SUM:
        return lse.sum_sign(x)
    r = enclosures.range_over(x, ctx)
    if not x.coefficients:  # degree 0: sign is monotone
        return TaylorEnclosure((), Interval(jnp.sign(r.lo), jnp.sign(r.hi)))
    value = jnp.sign(x.coefficients[0])
    constant = (r.lo > 0) | (r.hi < 0)
    spread = jnp.where(constant, 0.0, jnp.inf).astype(x.dtype)
    zero = jnp.zeros_like(value)
    return enclosures.with_remainder(
        (value,) + (zero,) * (ctx.degree - 1), Interval(-spread, spread), ctx
    )
