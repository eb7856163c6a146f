"""Rules for comparisons and ``select_n``: a comparison of input-dependent values becomes a
:class:`~optax_saferate.autobound.rules.core.Comparison`, and ``select_n`` (``jnp.where``) on
a constant or such a predicate chooses between enclosures.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.extend.core import primitives as P

from optax_saferate.autobound import elementwise
from optax_saferate.autobound import enclosures
from optax_saferate.autobound import intervals
from optax_saferate.autobound import logsumexp as lse
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval
from optax_saferate.autobound.rules.arithmetic import _subtract_values
from optax_saferate.autobound.rules.core import RULES
from optax_saferate.autobound.rules.core import Comparison
from optax_saferate.autobound.rules.core import _as_enclosure
from optax_saferate.autobound.rules.core import _fit
from optax_saferate.autobound.rules.core import _out_shape
from optax_saferate.autobound.rules.core import _source
from optax_saferate.autobound.rules.core import is_constant
from optax_saferate.autobound.rules.core import register
from optax_saferate.autobound.rules.extrema import materialize


@register(P.select_n_p)
def _select_n(env, ctx, eqn, predicate, *cases):
    if isinstance(predicate, lse.PatternValue) and predicate.stage == lse.FINITE:
        # jnp.where(isfinite(max), max, 0): finite logits keep the max.
        for case in cases:
            if isinstance(case, lse.PatternValue) and case.stage == lse.MAX:
                return case
    if is_constant(predicate) and any(
        isinstance(c, lse.PatternValue) and c.stage == lse.EXP for c in cases
    ):
        if len(cases) != 2:
            raise NotImplementedError(f"select_n with {len(cases)} cases at {_source(eqn)}")
        return lse.selected(predicate, cases, _source(eqn))  # jnp.sum(exp, where=mask)
    if any(isinstance(c, lse.PatternValue) for c in cases):
        cases = tuple(materialize(ctx, env, c) for c in cases)
    if is_constant(predicate):
        return enclosures.combine_monotone(
            lambda *terms: P.select_n_p.bind(predicate, *terms), cases, ctx
        )
    if isinstance(predicate, Comparison):
        return _select_by_comparison(ctx, eqn, predicate, cases)
    raise NotImplementedError(
        f"select_n with predicate {type(predicate).__name__} at {_source(eqn)}"
    )


def _select_by_comparison(ctx, eqn, comparison: Comparison, cases):
    d = comparison.difference
    r = enclosures.range_over(d, ctx)
    if d.coefficients:
        d0 = d.coefficients[0]
        at_reference = d0 > 0 if comparison.strict_positive else d0 >= 0
        if comparison.nonzero:
            at_reference = d0 != 0
    else:  # degree 0: only elements whose range keeps one sign are kept, decided by it
        at_reference = (r.lo > 0) | (r.hi < 0) if comparison.nonzero else r.lo > 0
    # The choice is the same for every t when the range of d stays strictly on one side of 0.
    constant = (r.lo > 0) | (r.hi < 0)
    if len(cases) != 2:
        raise NotImplementedError(f"select_n with {len(cases)} cases at {_source(eqn)}")
    if comparison.negated:
        cases = cases[::-1]
    if all(is_constant(c) for c in cases):  # a step function of the input
        cases = tuple(enclosures.exact(jnp.broadcast_to(c, _out_shape(eqn))) for c in cases)
    if ctx.degree == 0:
        # A plain range: the result is one of the two cases, so their hull holds it.
        if_false, if_true = (enclosures.range_over(_as_enclosure(c, d), ctx) for c in cases)
        either = intervals.hull(if_true, if_false)
        shape = _out_shape(eqn)
        lo, hi = (
            jnp.broadcast_to(jnp.where(constant, jnp.where(at_reference, t, f), h), shape)
            for t, f, h in zip(if_true, if_false, either, strict=True)
        )
        return TaylorEnclosure((), Interval(lo, hi))
    chosen = enclosures.combine_monotone(
        lambda if_false, if_true: jnp.where(at_reference, if_true, if_false), cases, ctx
    )
    chosen = elementwise.to_remainder_form(chosen, ctx)
    inf = jnp.asarray(jnp.inf, chosen.dtype)
    unbounded = jnp.where(constant, 0.0, inf)
    remainder = Interval(chosen.remainder.lo - unbounded, chosen.remainder.hi + unbounded)
    return TaylorEnclosure(chosen.coefficients, remainder)


def _comparison_rule(strict: bool, flip: bool, nonzero: bool = False, negated: bool = False):
    def rule(env, ctx, eqn, a, b):
        if eqn.invars[0] is eqn.invars[1]:
            # x > x, x < x and x != x are false (x is finite), x >= x, x <= x, x == x true.
            return jnp.full(_out_shape(eqn), not strict)
        lhs, rhs = (b, a) if flip else (a, b)
        difference = _fit(_subtract_values(ctx, lhs, rhs), eqn)
        return Comparison(difference, strict, nonzero, negated)

    return rule


RULES[P.gt_p] = _comparison_rule(strict=True, flip=False)
RULES[P.ge_p] = _comparison_rule(strict=False, flip=False)
RULES[P.lt_p] = _comparison_rule(strict=True, flip=True)
RULES[P.le_p] = _comparison_rule(strict=False, flip=True)
RULES[P.ne_p] = _comparison_rule(strict=True, flip=False, nonzero=True)
# x == y is not (x != y): exact where x - y cannot reach 0 over the region, unbounded where it can.
RULES[P.eq_p] = _comparison_rule(strict=False, flip=False, nonzero=True, negated=True)
