"""The log-sum-exp pattern's steps through otherwise unsupported primitives (``is_finite`` and
``stop_gradient`` of the max, ``exp``/``log`` inside the pattern, broadcasts and reshapes of
its reduced stages; see :mod:`~optax_saferate.autobound.logsumexp`).
"""

from __future__ import annotations

from jax.extend.core import primitives as P

from optax_saferate.autobound import enclosures
from optax_saferate.autobound import logsumexp as lse
from optax_saferate.autobound.rules.core import _out_shape
from optax_saferate.autobound.rules.core import _source
from optax_saferate.autobound.rules.core import register
from optax_saferate.autobound.rules.extrema import materialize


@register(P.is_finite_p)
def _is_finite(env, ctx, eqn, x):
    if isinstance(x, lse.PatternValue) and x.stage == lse.MAX:
        return x.at(lse.FINITE)
    raise NotImplementedError(f"is_finite of an input-dependent value at {_source(eqn)}")


@register(P.stop_gradient_p)
def _stop_gradient(env, ctx, eqn, x):
    if isinstance(x, lse.PatternValue) and x.stage == lse.MAX:
        return x.at(lse.SHIFT, _out_shape(eqn))
    raise NotImplementedError(
        f"stop_gradient of an input-dependent value at {_source(eqn)} outside the log-sum-exp "
        "pattern: AutoBound will not silently treat it as a constant (that would bound a "
        "different function). Remove it, or wrap the computation in a function with a "
        "registered rule (optax_saferate.autobound.register_primitive)."
    )


_REDUCED_STAGES = (lse.MAX, lse.FINITE, lse.SHIFT, lse.SUM, lse.LOG)


def _pattern_structural(ctx, env, primitive, eqn, x: lse.PatternValue, rest):
    """Broadcasts and size-1 reshapes of the max, the shift and the sum keep the pattern (their
    layout follows); ``reduce_sum`` of the exponentials makes the sum."""
    shape = _out_shape(eqn)
    if primitive in (P.broadcast_in_dim_p, P.reshape_p, P.squeeze_p) and not rest:
        if x.stage in _REDUCED_STAGES:
            layout = lse.moved_layout(str(primitive), eqn.params, x.layout, x.shape, shape)
            if layout is not None:
                return x.at(x.stage, shape, layout)
    if primitive is P.reduce_sum_p and x.stage == lse.EXP:
        value = lse.summed(x, tuple(eqn.params["axes"]), shape)
        if value is not None:
            return value
    if x.stage == lse.MAX:
        value = materialize(ctx, env, x)
        return enclosures.map_monotone(lambda c: primitive.bind(c, *rest, **eqn.params), value)
    raise lse.pattern_error(str(primitive), x, _source(eqn))


def pattern_elementwise(primitive, ctx, env, eqn, x: lse.PatternValue):
    """``exp`` and ``log`` inside the log-sum-exp pattern."""
    if primitive is P.exp_p and x.stage == lse.SHIFTED:
        return x.at(lse.EXP)
    if primitive is P.log_p and x.stage == lse.SUM:
        return x.at(lse.LOG, _out_shape(eqn))
    if x.stage == lse.MAX:
        return None
    raise lse.pattern_error(str(primitive), x, _source(eqn))
