"""Rules for the structural primitives, which copy, sum or rearrange elements (reshape, broadcast,
transpose, slice, gather, ``reduce_sum``, ``cumsum``, ``reduce_window_sum``, ...), change the
dtype, or join and split arrays (concatenate, stack, split, pad, ``dynamic_update_slice``).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax
from jax.extend.core import primitives as P

from optax_saferate.autobound import enclosures
from optax_saferate.autobound import logsumexp as lse
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval
from optax_saferate.autobound.rules.core import RULES
from optax_saferate.autobound.rules.core import Comparison
from optax_saferate.autobound.rules.core import _out_shape
from optax_saferate.autobound.rules.core import _source
from optax_saferate.autobound.rules.core import is_constant
from optax_saferate.autobound.rules.core import register
from optax_saferate.autobound.rules.extrema import materialize
from optax_saferate.autobound.rules.patterns import _pattern_structural
from optax_saferate.autobound.rules.selection import _select_by_comparison


def _structural(primitive):
    """Ops that copy, sum or rearrange elements: applied to every term and interval end."""

    def rule(env, ctx, eqn, x, *rest):
        if isinstance(x, lse.PatternValue):
            return _pattern_structural(ctx, env, primitive, eqn, x, rest)
        if isinstance(x, Comparison) and all(is_constant(r) for r in rest):
            # A broadcast or reshaped mask: rearrange the difference it compares with 0.
            moved = rule(env, ctx, eqn, x.difference, *rest)
            return dataclasses.replace(x, difference=moved)
        if any(not is_constant(r) for r in rest):
            raise NotImplementedError(
                f"`{primitive}` with an input-dependent index or size at {_source(eqn)}: "
                "AutoBound needs indices that do not depend on the bounded input"
            )
        return enclosures.map_monotone(lambda c: primitive.bind(c, *rest, **eqn.params), x)

    return rule


for _primitive in (
    P.reshape_p,
    P.broadcast_in_dim_p,
    P.transpose_p,
    P.squeeze_p,
    P.slice_p,
    P.dynamic_slice_p,
    P.gather_p,
    P.rev_p,
    P.copy_p,
    P.reduce_sum_p,
    P.cumsum_p,
    P.reduce_window_sum_p,
    P.sharding_constraint_p,
    P.device_put_p,
    P.copy_p,
):
    RULES[_primitive] = _structural(_primitive)


@register(P.convert_element_type_p)
def _convert(env, ctx, eqn, x):
    new_dtype = eqn.params["new_dtype"]
    if isinstance(x, lse.PatternValue):
        return x
    if isinstance(x, Comparison) and jnp.issubdtype(new_dtype, jnp.floating):
        # A 0/1 step of the input (derivatives of max and relu convert such masks).
        zero, one = (jnp.full(_out_shape(eqn), v, new_dtype) for v in (0, 1))
        return _select_by_comparison(ctx, eqn, x, (zero, one))
    if not jnp.issubdtype(new_dtype, jnp.floating):
        raise NotImplementedError(
            f"converting an input-dependent value to {new_dtype} at {_source(eqn)} is not "
            "differentiable; AutoBound cannot bound it"
        )
    return enclosures.map_monotone(lambda c: c.astype(new_dtype), x)


@register(P.concatenate_p)
def _concatenate(env, ctx, eqn, *operands):
    return _combine(ctx, eqn, P.concatenate_p, operands, ())


def _stack(env, ctx, eqn, *operands):
    return _combine(ctx, eqn, lax.stack_p, operands, ())


def _split(primitive):
    """``split``/``unstack``: one structural op, several outputs (one enclosure each)."""

    def rule(env, ctx, eqn, x):
        x = materialize(ctx, env, x)

        def parts(c):
            return primitive.bind(c, **eqn.params)

        coefficients = [parts(c) for c in x.coefficients]
        ends = None if x.remainder is None else [parts(e) for e in x.remainder]
        return [
            TaylorEnclosure(
                tuple(c[i] for c in coefficients),
                None if ends is None else Interval(ends[0][i], ends[1][i]),
            )
            for i in range(len(eqn.outvars))
        ]

    return rule


# jnp.stack and jnp.split bind these (jax >= 0.6); older versions lower to concatenate/slice.
if hasattr(lax, "stack_p"):
    RULES[lax.stack_p] = _stack
for _name in ("split_p", "unstack_p"):
    if hasattr(lax, _name):
        RULES[getattr(lax, _name)] = _split(getattr(lax, _name))


@register(P.pad_p)
def _pad(env, ctx, eqn, x, padding_value):
    if not is_constant(padding_value):
        raise NotImplementedError(f"pad with an input-dependent value at {_source(eqn)}")
    config = eqn.params["padding_config"]
    if not x.coefficients:  # degree 0: the remainder is the value range itself
        ends = (P.pad_p.bind(e, padding_value, padding_config=config) for e in x.remainder)
        return TaylorEnclosure((), Interval(*ends))
    coefficients = [P.pad_p.bind(x.coefficients[0], padding_value, padding_config=config)]
    zero = jnp.zeros((), x.dtype)
    coefficients += [P.pad_p.bind(c, zero, padding_config=config) for c in x.coefficients[1:]]
    remainder = None
    if x.remainder is not None:
        remainder = Interval(*(P.pad_p.bind(e, zero, padding_config=config) for e in x.remainder))
    return TaylorEnclosure(tuple(coefficients), remainder)


@register(P.dynamic_update_slice_p)
def _dynamic_update_slice(env, ctx, eqn, operand, update, *indices):
    if any(not is_constant(i) for i in indices):
        raise NotImplementedError(
            f"dynamic_update_slice with input-dependent indices at {_source(eqn)}"
        )
    return _combine(ctx, eqn, P.dynamic_update_slice_p, (operand, update), indices)


def _combine(ctx, eqn, primitive, operands, trailing):
    def fn(*terms):
        return primitive.bind(*terms, *trailing, **eqn.params)

    return enclosures.combine_monotone(fn, operands, ctx)
