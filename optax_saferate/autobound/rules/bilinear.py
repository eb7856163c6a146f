"""Rules for the bilinear primitives, ``dot_general`` and ``conv_general_dilated``: the product of
two enclosures, or an enclosure and a constant (a linear map).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax.extend.core import primitives as P

from optax_saferate.autobound import enclosures
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.rules.core import RULES


def _dot_general_many(params):
    """``[dot_general(x, y) for y in ys]`` as one dot_general against the ``ys`` concatenated
    along the right operand's last free axis (each large ``x`` is then read once)."""
    (_, rhs_contracting), (_, rhs_batch) = params["dimension_numbers"]

    def many(x, ys):
        ys = [jnp.asarray(y) for y in ys]
        rank = ys[0].ndim
        free = [d for d in range(rank) if d not in rhs_contracting and d not in rhs_batch]
        if not free or any(y.shape != ys[0].shape or y.dtype != ys[0].dtype for y in ys):
            return [P.dot_general_p.bind(x, y, **params) for y in ys]
        axis = free[-1]
        out = P.dot_general_p.bind(x, jnp.concatenate(ys, axis=axis), **params)
        # dot_general's output axes: batch, then x's free axes, then y's free axes (last here).
        return jnp.split(out, len(ys), axis=out.ndim - 1)

    return many


def _bilinear_rule(eqn_params_op):
    def rule(env, ctx, eqn, a, b):
        op = functools.partial(eqn_params_op.bind, **eqn.params)
        if isinstance(a, TaylorEnclosure) and isinstance(b, TaylorEnclosure):
            many = _dot_general_many(eqn.params) if eqn_params_op is P.dot_general_p else None
            return enclosures.multiply(a, b, ctx, op, elementwise=False, op_many=many)
        if isinstance(a, TaylorEnclosure):
            return _one_sided_bilinear(lambda x: op(x, b), lambda x: op(x, jnp.abs(b)), a)
        return _one_sided_bilinear(lambda y: op(a, y), lambda y: op(jnp.abs(a), y), b)

    return rule


def _one_sided_bilinear(fn, fn_abs, a: TaylorEnclosure) -> TaylorEnclosure:
    return enclosures.map_linear(fn, fn_abs, a)


RULES[P.dot_general_p] = _bilinear_rule(P.dot_general_p)
RULES[P.conv_general_dilated_p] = _bilinear_rule(P.conv_general_dilated_p)
