"""The maximum of several degree-2 enclosures at once (max-pooling, ``jnp.max``).

Nesting the pairwise rule ``max(a, b) = b + relu(a - b)`` squares the slope spread at every level,
so a 2x2 window's bound can be orders of magnitude looser than the true remainder. Taking the
maximum of all candidates in one step avoids that.

With candidates ``u_i = (a_i, b_i, R_i)`` (value, slope, remainder interval) and the winner ``w``
(largest value at ``t = 0``, ties broken by the slope on the side of the trust region), the
result is ``(a_w, b_w, [R_w.lo, max_i (R_i.hi + φ_i)])``: the maximum is at least the winner, and

    u_i(t) - a_w - b_w·t = (R_i·t² - δ_i + s_i·t)    with δ_i = a_w - a_i >= 0, s_i = b_i - b_w,

so ``(u_i(t) - a_w - b_w·t)/t² <= R_i.hi + φ_i`` with ``φ_i = sup_{t ∈ T \\ {0}} (s_i/t - δ_i/t²)``.
In ``w = 1/t`` that is a concave parabola: its peak ``s²/(4δ)`` if it lies in range, else its value
at the end ``w = 1/η``. This is exactly the sharp pairwise bound for two candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval


def _parts(u: TaylorEnclosure):
    a = u.coefficients[0]
    b = u.coefficients[1] if len(u.coefficients) > 1 else jnp.zeros_like(a)
    if u.remainder is not None:
        return a, b, u.remainder.lo, u.remainder.hi
    c = u.coefficients[2] if len(u.coefficients) > 2 else jnp.zeros_like(a)
    return a, b, c, c


def _peak(delta, slope, reach):
    """``sup_{0 < t <= reach} slope/t - delta/t²`` for ``delta >= 0`` (``+inf`` if unbounded)."""
    inf = jnp.asarray(jnp.inf, delta.dtype)
    safe_reach = jnp.where(reach > 0, reach, 1.0)
    at_end = slope / safe_reach - delta / safe_reach**2
    safe_delta = jnp.where(delta > 0, delta, 1.0)
    interior = (slope > 0) & (2 * delta <= slope * safe_reach)  # the vertex w = s/(2δ) >= 1/reach
    value = jnp.where(interior, slope * slope / (4 * safe_delta), at_end)
    value = jnp.where((delta == 0) & (slope > 0), inf, value)
    return jnp.where(reach > 0, value, -inf)


def max_of(candidates: Sequence[TaylorEnclosure], ctx: Context, valid=None) -> TaylorEnclosure:
    """The degree-2 enclosure of the elementwise maximum of ``candidates`` (same shape).

    ``valid`` optionally masks candidates out (padding in a pooling window): a sequence of
    boolean arrays, one per candidate; every output element needs at least one valid candidate.
    """
    assert ctx.degree == 2
    parts = [_parts(u) for u in candidates]
    a, b, lo, hi = (jnp.stack(x) for x in zip(*parts, strict=True))
    inf = jnp.asarray(jnp.inf, a.dtype)
    ok = jnp.ones(a.shape, bool) if valid is None else jnp.stack(list(valid))
    a_valid = jnp.where(ok, a, -inf)
    top = jnp.max(a_valid, axis=0, keepdims=True)
    t = ctx.trust_region
    forward = t.hi > 0  # ties go to the steepest candidate on the side that is explored
    tied = ok & (a_valid == top)
    slope_key = jnp.where(tied, jnp.where(forward, b, -b), -inf)
    winner = jnp.argmax(slope_key, axis=0)

    def pick(x):
        return jnp.take_along_axis(x, winner[None], axis=0)

    a_w, b_w, lo_w = pick(a), pick(b), pick(lo)
    delta = jnp.where(ok, top - a, 0)
    phi = jnp.maximum(_peak(delta, b - b_w, t.hi), _peak(delta, b_w - b, -t.lo))
    upper = jnp.where(ok, hi + phi, -inf)
    return TaylorEnclosure((a_w[0], b_w[0]), Interval(lo_w[0], jnp.max(upper, axis=0)))
