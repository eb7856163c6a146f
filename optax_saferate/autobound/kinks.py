"""Elementwise functions with a kink: relu, enclosed sharply and finitely even at the kink (abs,
clip, max, leaky_relu, relu6 and elu are built on it by the rules and named functions), and
the C¹ core of elu, whose second derivative jumps at 0.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from optax_saferate.autobound import enclosures
from optax_saferate.autobound import intervals
from optax_saferate.autobound.elementwise import ElementwiseFunction
from optax_saferate.autobound.elementwise import _compose
from optax_saferate.autobound.elementwise import no_critical_points
from optax_saferate.autobound.elementwise import select
from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval

# --------------------------------------------------------------------------- the elu core


def _elu_core_derivative(order, x):
    positive = x > 0
    if order == 0:
        return jnp.where(positive, x, jnp.expm1(jnp.minimum(x, 0)))
    if order == 1:
        return jnp.where(positive, 1.0, jnp.exp(jnp.minimum(x, 0))).astype(x.dtype)
    return jnp.where(positive, 0.0, jnp.exp(jnp.minimum(x, 0))).astype(x.dtype)


def _elu_core_range(order, lo, hi):
    if order <= 1:  # g and g' increase everywhere
        return Interval(_elu_core_derivative(order, lo), _elu_core_derivative(order, hi))
    # e^x left of 0 (increasing), 0 right of it: the two pieces' hull.
    negative = Interval(jnp.exp(jnp.minimum(lo, 0)), jnp.exp(jnp.minimum(hi, 0)))
    low = jnp.where(hi > 0, 0.0, negative.lo).astype(lo.dtype)
    high = jnp.where(lo < 0, negative.hi, 0.0).astype(lo.dtype)
    if order >= 3:
        # g'' jumps at 0, so g^(3) has a Dirac mass there and a range across 0 has no finite
        # bound: the degree >= 3 remainder is not enclosed by the hull of the two pieces.
        crosses = (lo < 0) & (hi > 0)
        low = jnp.where(crosses, -jnp.inf, low).astype(lo.dtype)
        high = jnp.where(crosses, jnp.inf, high).astype(lo.dtype)
    return Interval(low, high)


def _elu_core_monotone(order, lo, hi):
    return (order <= 1) | (lo >= 0) | (hi <= 0)


# g(x) = x for x > 0, e^x - 1 below: the C¹ core of elu, elu_α = α·g + (1 - α)·relu. Its second
# derivative jumps at 0, which the integral form of the remainder allows.
ELU_CORE = ElementwiseFunction(
    "elu",
    lambda x: _elu_core_derivative(0, x),
    no_critical_points,
    derivative=_elu_core_derivative,
    derivative_range=_elu_core_range,
    monotone_derivative=_elu_core_monotone,
)

# --------------------------------------------------------------------------- piecewise linear


def relu_taylor_and_remainder(u0: Array, r: Interval, degree: int) -> tuple[list[Array], Interval]:
    """Taylor coefficients of ``relu`` at ``u0 != 0`` and its sharp remainder over ``r``.

    If ``r`` crosses the kink, ``R_k(v) = ±s / (s + |u0|)^k`` with ``s = |v|`` on the far side,
    which grows up to ``s* = |u0| / (k - 1)`` and falls after; its sign is negative only for an
    odd degree with ``u0 > 0``. (For ``k = 2`` the maximum is ``1 / (4|u0|)``.)
    """
    positive = u0 > 0
    zero = jnp.zeros_like(u0)
    coefficients = [jnp.maximum(u0, 0), positive.astype(u0.dtype)] + [zero] * max(degree - 1, 0)
    far = jnp.where(positive, jnp.maximum(-r.lo, 0), jnp.maximum(r.hi, 0))
    magnitude = jnp.abs(u0)
    safe_magnitude = jnp.where(magnitude == 0, 1.0, magnitude)
    if degree >= 2:
        far = jnp.minimum(far, magnitude / (degree - 1))
    # far / (far + |u0|)^k; for k = 1 an unbounded range gives the limit 1, not inf/inf.
    g = jnp.where(jnp.isinf(far), 1.0, far / (far + safe_magnitude) ** degree).astype(u0.dtype)
    negative_sign = positive if degree % 2 == 1 else jnp.zeros_like(positive)
    # R_k(v) = d_k + (the deviation above); d_k is 0 except for k = 1, where it is the slope.
    d_k = coefficients[degree]
    s = Interval(d_k + jnp.where(negative_sign, -g, zero), d_k + jnp.where(negative_sign, zero, g))
    return coefficients[: degree + 1], s


# --------------------------------------------------------------------------- the relu enclosure


def enclose_relu(a: TaylorEnclosure, ctx: Context, known_range: Interval | None = None):
    """The enclosure of ``relu(u)``, sharp, and finite even at the kink.

    Where ``u_0 = 0`` (dead units, zero padding) no finite degree-``k`` remainder exists for a
    range crossing 0. For ``t >= 0`` positive homogeneity gives ``relu(t·V) = t·relu(V)``, and for
    ``t <= 0``, ``relu(t·V) = t·(V - relu(V))``; ``relu(V)`` is enclosed at degree ``k - 1``.
    A two-sided trust region leaves those units unbounded (``[-inf, inf]``), which is sound.
    """
    k = ctx.degree
    r = enclosures.range_over(a, ctx)
    if known_range is not None:
        r = intervals.intersect(r, known_range)
    if k == 0:
        return TaylorEnclosure((), Interval(jnp.maximum(r.lo, 0), jnp.maximum(r.hi, 0)))
    if k == 2:
        return _relu_degree_two(a, r, ctx)
    u0 = a.coefficients[0]
    coefficients, s = relu_taylor_and_remainder(u0, r, k)
    smooth = _compose(coefficients, s, a, ctx)
    at_kink = u0 == 0
    lower_ctx = Context(ctx.trust_region, k - 1)
    slope = TaylorEnclosure(a.coefficients[1:], a.remainder)
    if not slope.coefficients and slope.remainder is None:
        return smooth
    if slope.remainder is None and len(slope.coefficients) > k:
        slope = enclosures.fold(slope.coefficients, lower_ctx)
    relu_slope = enclose_relu(slope, lower_ctx)
    t = ctx.trust_region
    forward = _shift_up(relu_slope, ctx)
    backward = _shift_up(enclosures.add(slope, enclosures.negate(relu_slope), lower_ctx), ctx)
    nonnegative_t = t.lo >= 0
    nonpositive_t = t.hi <= 0
    kink = select(
        nonnegative_t, forward, select(nonpositive_t, backward, _unbounded(smooth, ctx), ctx), ctx
    )
    return select(at_kink, kink, smooth, ctx)


def _relu_degree_two(a: TaylorEnclosure, r: Interval, ctx: Context) -> TaylorEnclosure:
    """The degree-2 relu enclosure in closed form: the hot path of every relu network.

    With ``u = (u0, u1, U2)``, ``V = u1 + U2·T`` and ``H = [u0 > 0]``:

    * ``u0 != 0``: ``(relu(u0), H·u1, H·U2 + [0, g]·V²)``, ``g`` the sharp kink term of
      :func:`relu_taylor_and_remainder` (zero when the range does not reach the kink);
    * ``u0 == 0`` and ``T ⊆ [0, inf)``: ``relu(t·V(t)) = t·relu(V(t))`` and, relu being monotone
      and 1-Lipschitz, ``relu(V) - relu(u1) ∈ [0, 1]·(V - u1) = [0, 1]·U2·t``, so the enclosure
      is ``(0, relu(u1), hull(0, U2))``; for ``T ⊆ (-inf, 0]`` the same with ``min(u1, 0)``;
    * ``u0 == 0`` and ``T`` two-sided: no finite degree-2 enclosure exists: ``[-inf, inf]``.

    Everything is one elementwise expression that XLA fuses into a pass or two.
    """
    u0 = a.coefficients[0]
    u1 = a.coefficients[1] if len(a.coefficients) > 1 else jnp.zeros_like(u0)
    if a.remainder is not None:
        u2 = a.remainder
    elif len(a.coefficients) > 2:
        u2 = intervals.point(a.coefficients[2])
    else:
        u2 = None
    v = enclosures.increment_range(a, ctx)
    v_squared_max = jnp.maximum(v.lo * v.lo, v.hi * v.hi) if isinstance(v, Interval) else v * v
    _, s = relu_taylor_and_remainder(u0, r, 2)
    positive = u0 > 0
    zero = jnp.zeros_like(u0)
    smooth_lo = jnp.where(positive, u2.lo, zero) if u2 is not None else zero
    smooth_hi = jnp.where(positive, u2.hi, zero) if u2 is not None else zero
    smooth_hi = smooth_hi + intervals.times(s.hi, v_squared_max)
    t = ctx.trust_region
    kink_slope = jnp.where(t.lo >= 0, jnp.maximum(u1, 0), jnp.minimum(u1, 0))
    one_sided = (t.lo >= 0) | (t.hi <= 0)
    inf = jnp.asarray(jnp.inf, u0.dtype)
    kink_lo = jnp.minimum(u2.lo, 0) if u2 is not None else zero
    kink_hi = jnp.maximum(u2.hi, 0) if u2 is not None else zero
    kink_lo = jnp.where(one_sided, kink_lo, -inf)
    kink_hi = jnp.where(one_sided, kink_hi, inf)
    at_kink = u0 == 0
    c1 = jnp.where(at_kink, kink_slope, jnp.where(positive, u1, zero))
    remainder_hi = jnp.where(at_kink, kink_hi, smooth_hi)
    known_one_sided = enclosures.known_zero(t.lo) or enclosures.known_zero(t.hi)
    if u2 is None and known_one_sided:
        # Linear input, one-sided region: both lower ends are 0 (see the cases above), which
        # the next contraction uses to skip the midpoint-radius form (intervals.FromZero).
        return TaylorEnclosure((jnp.maximum(u0, 0), c1), intervals.FromZero(zero, remainder_hi))
    remainder = Interval(jnp.where(at_kink, kink_lo, smooth_lo), remainder_hi)
    return TaylorEnclosure((jnp.maximum(u0, 0), c1), remainder)


def _shift_up(a: TaylorEnclosure, ctx: Context) -> TaylorEnclosure:
    """``t · u(t)`` for an enclosure of degree ``k - 1``: every term moves up one degree."""
    shape = a.shape if a.coefficients else jnp.shape(a.remainder.lo)
    dtype = a.dtype if a.coefficients else jnp.result_type(a.remainder.lo)
    zero = jnp.zeros(shape, dtype)
    if a.remainder is None:
        return enclosures.fold((zero, *a.coefficients), ctx)
    return TaylorEnclosure((zero, *a.coefficients), a.remainder)


def _unbounded(like: TaylorEnclosure, ctx: Context) -> TaylorEnclosure:
    zero = jnp.zeros_like(like.coefficients[0])
    return enclosures.with_remainder((zero,) * ctx.degree, intervals.entire_like(zero), ctx)
