"""Bounds of ``f`` of a small 1-D vector ``x0`` over a box (the Lagrange form).

The Taylor coefficients come from nested forward-mode autodiff and the remainder from the
walk's degree-0 pass (interval arithmetic) through the jaxpr of the ``k``-th derivative,
intersected with a centred form. ``f`` must be smooth, which :func:`_first_non_smooth` checks
before anything is bounded.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import Array
from jax.extend import core as jcore

from optax_saferate.autobound import intervals
from optax_saferate.autobound import logsumexp as lse
from optax_saferate.autobound import rules
from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval
from optax_saferate.autobound.named_functions import _CALL_PARAMS
from optax_saferate.autobound.named_functions import _call_name
from optax_saferate.autobound.polynomial_bounds import TaylorBounds
from optax_saferate.autobound.walk import _SMOOTH_PRIMITIVES
from optax_saferate.autobound.walk import _no_ranges
from optax_saferate.autobound.walk import _run


def _vector_bounds(f, k: int, x0: Array, trust_region) -> TaylorBounds:
    """Bounds of ``f`` of a small vector over the box ``trust_region`` (Lagrange form).

    ``c_i = D^i f(x0) / i!`` for ``i < k`` by nested forward-mode autodiff (exact), and the last
    coefficient is an interval enclosure of ``D^k f / k!`` over the whole box: Taylor's theorem
    puts the remainder at ``D^k f(ξ)/k! [δ, …, δ]`` for some ``ξ`` on the segment from ``x0`` to
    ``x0 + δ``. The enclosure comes from the degree-0 pass of this engine (interval arithmetic
    through the derivative's jaxpr, with every rule the scalar engine has), intersected with the
    centred form ``D^k f(x0) + D^{k+1} f(box)·(box - x0)`` where ``D^{k+1} f`` can be bounded.
    This is the classical remainder: sound, and wider than the scalar engine's sharp one (about
    ``k + 1`` times for small boxes); for SafeRate's scalar case use a scalar ``x0``.
    """
    lo, hi = (jnp.broadcast_to(jnp.asarray(e, x0.dtype), x0.shape) for e in trust_region)
    kink = _first_non_smooth(jax.make_jaxpr(f)(x0).jaxpr)
    if kink is not None:
        raise NotImplementedError(
            f"taylor_bounds with a vector x0 needs a smooth f (its remainder comes from the "
            f"range of D^{k} f, which a kink or a jump hides), but f uses `{kink[0]}` on the "
            f"input at {kink[1]}. Bound f along a line instead, t -> f(x0 + t·direction) with a "
            "scalar t: the scalar engine handles relu, max, abs, where and the log-sum-exp."
        )
    derivative = f
    coefficients = []
    for i in range(k):
        coefficients.append(jnp.asarray(derivative(x0)) / math.factorial(i))
        derivative = jax.jacfwd(derivative)
    ctx = Context(Interval(lo - x0, hi - x0), 0)
    remainder = _range_over_box(derivative, x0, ctx)
    # The centred (mean-value) form D^k f(x0) + D^{k+1} f(box)·(box - x0) is also an enclosure,
    # and much the narrower one for small boxes (its width shrinks with the box, squared);
    # each holds the true range, so their intersection does.
    try:
        slope_range = _range_over_box(jax.jacfwd(derivative), x0, ctx)
    except NotImplementedError:
        slope_range = None
    if slope_range is not None:
        offsets = intervals.Interval(
            *(jnp.broadcast_to(e, slope_range.lo.shape) for e in ctx.trust_region)
        )
        spread = intervals.multiply(slope_range, offsets)
        centre = jnp.asarray(derivative(x0))
        centred = intervals.sanitize(
            Interval(centre + jnp.sum(spread.lo, axis=-1), centre + jnp.sum(spread.hi, axis=-1))
        )
        both = intervals.intersect(remainder, centred)
        overlap = both.lo <= both.hi  # always, up to rounding; keep the direct range if not
        remainder = Interval(
            jnp.where(overlap, both.lo, remainder.lo), jnp.where(overlap, both.hi, remainder.hi)
        )
    scale = 1.0 / math.factorial(k)
    ends = (remainder.lo * scale, remainder.hi * scale)
    return TaylorBounds((*coefficients, ends), x0, (lo, hi))


def _range_over_box(g, x0: Array, ctx: Context) -> Interval:
    """An interval containing ``g(x)`` for every ``x`` in the box (the engine's degree-0 pass)."""
    closed = jax.make_jaxpr(g)(x0)
    out, env = _run(closed, x0, ctx, _no_ranges)
    if isinstance(out, lse.PatternValue):
        out = rules.materialize(ctx, env, out)
    if isinstance(out, TaylorEnclosure):
        return intervals.sanitize(out.remainder)
    value = jnp.asarray(out, closed.out_avals[0].dtype)  # g does not depend on x
    return Interval(value, value)


# Named functions that are smooth although their primal code uses max or abs for stability.
_SMOOTH_NAMED = frozenset(
    """softplus silu swish sigmoid log_sigmoid logaddexp gelu tanh logsumexp log_softmax
    softmax""".split()
)


def _first_non_smooth(jaxpr, dependent=None) -> tuple[str, str] | None:
    """The first primitive that is applied to the input and may not be smooth, with its line."""
    dependent = set(jaxpr.invars) if dependent is None else dependent
    for eqn in jaxpr.eqns:
        uses = [v for v in eqn.invars if isinstance(v, jcore.Var) and v in dependent]
        if not uses:
            continue
        dependent.update(eqn.outvars)
        name = str(eqn.primitive)
        if name == "select_n":
            predicate = eqn.invars[0]
            if isinstance(predicate, jcore.Var) and predicate in dependent:
                return name, rules._source(eqn)
            continue
        bodies = [eqn.params[key] for key in _CALL_PARAMS if key in eqn.params]
        if bodies:
            if _call_name(eqn) in _SMOOTH_NAMED:
                continue
            body = getattr(bodies[0], "jaxpr", bodies[0])
            inner = {v for v, outer in zip(body.invars, eqn.invars, strict=False) if outer in uses}
            found = _first_non_smooth(body, inner)
            if found is not None:
                return found
            continue
        if name not in _SMOOTH_PRIMITIVES:
            return name, rules._source(eqn)
    return None
