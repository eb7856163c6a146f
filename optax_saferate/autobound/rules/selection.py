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
from optax_saferate.autobound import kink_report
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
    kink_report.note("where")
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
    if not d.coefficients:  # no value at the reference point: no distance to the switch
        inf = jnp.asarray(jnp.inf, chosen.dtype)
        unbounded = jnp.where(constant, 0.0, inf)
        remainder = Interval(chosen.remainder.lo - unbounded, chosen.remainder.hi + unbounded)
        return TaylorEnclosure(chosen.coefficients, remainder)
    jump = _switch_allowance(ctx, d, at_reference, cases, chosen)
    zero = jnp.zeros((), chosen.dtype)
    jump = Interval(jnp.where(constant, zero, jump.lo), jnp.where(constant, zero, jump.hi))
    return TaylorEnclosure(chosen.coefficients, intervals.add(chosen.remainder, jump))


def _switch_allowance(ctx, d: TaylorEnclosure, at_reference, cases, chosen) -> Interval:
    """What a select whose predicate can flip adds to the chosen case's degree-``k`` remainder.

    The select is ``chosen + [switched]·(other - chosen)``. With ``a = |d0| > 0`` and
    ``W = sign(d0)·(d(t) - d0)/t`` (its range over ``T``: ``increment_range``), the predicate
    can flip only where ``sign(d0)·d(t) = a + t·W <= 0``: at ``t >= a/(-W_lo)`` on the right
    and ``|t| >= a/W_hi`` on the left. There ``|t| >= δ``, so the jump divided by ``t^k`` lies
    in ``range(other - chosen)·[-1/δ^k, 1/δ^k]`` (``[0, 1/δ^k]`` for even ``k`` or one side
    only): finite whenever the reference point is off the switching point (``d0 != 0``).
    """
    k, shape = ctx.degree, chosen.shape
    eps = jnp.finfo(chosen.dtype).eps
    d0 = jnp.broadcast_to(d.coefficients[0], shape)
    slope = enclosures.increment_range(d, ctx)
    if not isinstance(slope, Interval):
        slope = intervals.point(slope)
    slope = Interval(*(jnp.broadcast_to(e, shape) for e in slope))
    positive = d0 > 0
    w_lo = jnp.where(positive, slope.lo, -slope.hi)
    w_hi = jnp.where(positive, slope.hi, -slope.lo)
    a = jnp.abs(d0)

    def distance(rate):
        # a / rate, rounded down (8 eps); a = 0 (on the switch) or an undefined rate: 0.
        with_rate = a / jnp.where(rate > 0, rate, jnp.ones_like(rate))
        far = jnp.where(rate > 0, with_rate * (1 - 8 * eps), jnp.inf)
        return jnp.where((a > 0) & ~jnp.isnan(rate), far, jnp.zeros_like(a))

    t = ctx.trust_region
    right, left = distance(-w_lo), distance(w_hi)

    def inverse_power(delta, reach):
        # 1/δ^k rounded up where the region reaches δ on this side, else 0 (no switch there).
        reaches = (reach > 0) & (delta <= reach)
        inverse = (1 / delta) ** k * (1 + 8 * (k + 1) * eps)
        return jnp.where(reaches, inverse, jnp.zeros_like(inverse))

    q_right = inverse_power(right, jnp.broadcast_to(t.hi, shape))
    q_left = inverse_power(left, jnp.broadcast_to(-t.lo, shape))
    if k % 2:
        q = Interval(-q_left, q_right)
    else:
        q = Interval(jnp.zeros_like(q_right), jnp.maximum(q_right, q_left))
    if_false, if_true = cases
    difference = _subtract_values(
        ctx, _as_enclosure(if_false, chosen), _as_enclosure(if_true, chosen)
    )
    spread = enclosures.range_over(difference, ctx)
    spread = Interval(*(jnp.broadcast_to(e, shape) for e in spread))
    other_minus_chosen = Interval(
        jnp.where(at_reference, spread.lo, -spread.hi),
        jnp.where(at_reference, spread.hi, -spread.lo),
    )
    jump = intervals.multiply(other_minus_chosen, q)
    return Interval(jump.lo - 4 * eps * jnp.abs(jump.lo), jump.hi + 4 * eps * jnp.abs(jump.hi))


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
