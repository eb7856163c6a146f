"""The log-sum-exp composite rule and the recogniser for JAX's shifted-max pattern.

JAX computes ``logsumexp``, ``log_softmax``, ``softmax`` and optax's cross-entropies as

    s = stop_gradient(max(z, axes));  log(sum(exp(z - s), axes)) + s     (or z - s - log(...))

The shift cancels exactly, so the pattern is ``LSE(z)``, which has a tight enclosure of its own
(DESIGN §3.4): with ``p = softmax(z_0)`` and ``V = (z - z_0)/t`` ranging over ``V(T)``,

    LSE(z(t)) ∈ LSE(z_0) + (p·z_1)·t + (p·Z_2 + [0, spread(V)²/8])·t²,

where ``spread(V) = max_i V_i.hi - min_i V_i.lo`` (the Hessian of LSE is a covariance matrix,
whose quadratic form is at most ``spread²/4`` by Popoviciu's inequality). It is never NaN.

The recogniser follows values through the pattern as :class:`PatternValue` objects. Any use of a
stop-gradient value outside the pattern raises: silently treating it as a constant would change
the function being bounded.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import Array

from optax_saferate.autobound import elementwise
from optax_saferate.autobound import enclosures
from optax_saferate.autobound import intervals
from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval

# The stages of the pattern, in order.
MAX = "max"  # reduce_max(z) (possibly through max(-inf, .) and the is_finite guard)
FINITE = "finite"  # is_finite(max), the guard optax and jax use
SHIFT = "shift"  # stop_gradient(max)
SHIFTED = "shifted"  # z - shift
EXP = "exp"  # exp(z - shift)
SUM = "sum"  # sum(exp(z - shift))
LOG = "log"  # log(sum(exp(z - shift))) = LSE(z) - shift


@dataclasses.dataclass(frozen=True, eq=False)
class PatternValue:
    """A value inside the log-sum-exp pattern: a stage, the logits ``z`` and the reduced axes."""

    stage: str
    z: TaylorEnclosure
    axes: tuple[int, ...]
    shape: tuple[int, ...]

    def at(self, stage: str, shape=None) -> PatternValue:
        return PatternValue(stage, self.z, self.axes, self.shape if shape is None else shape)


def pattern_error(primitive_name: str, value: PatternValue, source: str) -> NotImplementedError:
    return NotImplementedError(
        f"`{primitive_name}` is applied to a stop_gradient value outside the log-sum-exp pattern "
        f"(stage {value.stage!r}) at {source}. AutoBound treats stop_gradient only where its value "
        "cancels (jax.nn.logsumexp, log_softmax, softmax, optax cross-entropies); elsewhere the "
        "bounded function would silently change. Remove the stop_gradient or register a rule with "
        "optax_saferate.autobound.register_primitive."
    )


def enclose_logsumexp(z: TaylorEnclosure, axes: tuple[int, ...], ctx: Context) -> TaylorEnclosure:
    """The enclosure of ``LSE(z)`` reduced over ``axes`` (the axes are dropped)."""
    k = ctx.degree
    if k == 0:
        r = z.remainder if not z.coefficients else enclosures.range_over(z, ctx)
        # LSE is increasing in every argument.
        return TaylorEnclosure((), Interval(_lse(r.lo, axes), _lse(r.hi, axes)))
    z0 = z.coefficients[0]
    value = _lse(z0, axes)
    p = jnp.exp(z0 - jnp.expand_dims(value, axes))
    v = enclosures.increment_range(z, ctx)
    v = intervals.sanitize(v) if isinstance(v, Interval) else intervals.point(v)
    if k == 1:
        return TaylorEnclosure((value,), Interval(jnp.min(v.lo, axes), jnp.max(v.hi, axes)))
    if k != 2:
        return _enclose_by_chain(z, axes, ctx)
    linear = (
        jnp.sum(p * z.coefficients[1], axes) if len(z.coefficients) > 1 else jnp.zeros_like(value)
    )
    second = z.remainder if z.remainder is not None else _exact_term(z, 2)
    second = intervals.sanitize(second)
    times = intervals.times  # 0·inf = 0: a vanishing probability times an unbounded term
    curvature = Interval(jnp.sum(times(p, second.lo), axes), jnp.sum(times(p, second.hi), axes))
    low, high = _half_variance_bounds(p, v, axes, ctx.trust_region)
    return TaylorEnclosure((value, linear), Interval(curvature.lo + low, curvature.hi + high))


def _half_variance_bounds(p, v: Interval, axes, trust_region: Interval):
    """Bounds of ``½·Var_q(V)`` for ``V`` in the box ``v`` and ``q`` any softmax on the segment.

    The Hessian of LSE at ``ξ`` is the covariance under ``q = softmax(ξ)``; on the segment from
    ``z_0`` to ``z(t)``, ``q_i / p_i ∈ [e^{-γ}, e^{γ}]`` with ``γ = |t|_max · spread(V)``. So
    ``Var_q(V) <= e^γ Σ p_i max_{V_i}(V_i - μ)²`` for any centre ``μ`` and ``Var_q(V) >= e^{-γ}
    (Var_p(m) - 2 Σ p_i |m_i - μ_p(m)| r_i)`` with ``V = m ± r``; Popoviciu's ``spread²/4`` also
    caps it. As the trust region shrinks both ends tend to ``½ Var_p(z_1)``, the exact value.
    """
    spread = jnp.max(v.hi, axes) - jnp.min(v.lo, axes)
    reach = jnp.maximum(jnp.abs(trust_region.lo), jnp.abs(trust_region.hi))
    # Beyond e^60 the Popoviciu cap is the better bound anyway; clipping avoids inf·0.
    gamma = jnp.minimum(reach * spread, 60.0)
    m, r = intervals.midpoint_radius(v)
    mean = jnp.expand_dims(jnp.sum(p * m, axes), axes)
    far = jnp.maximum(jnp.abs(v.lo - mean), jnp.abs(v.hi - mean))
    upper = jnp.exp(gamma) * jnp.sum(intervals.times(p, far * far), axes)
    upper = jnp.minimum(upper, spread * spread / 4)
    variance_mid = jnp.sum(p * (m - mean) ** 2, axes)
    spread_term = jnp.sum(intervals.times(p * jnp.abs(m - mean), r), axes)
    lower = jnp.exp(-gamma) * jnp.maximum(variance_mid - 2 * spread_term, 0)
    return lower / 2, upper / 2


def _exact_term(z: TaylorEnclosure, degree: int) -> Interval:
    c = (
        z.coefficients[degree]
        if len(z.coefficients) > degree
        else jnp.zeros_like(z.coefficients[0])
    )
    return intervals.point(c)


def _lse(x: Array, axes: tuple[int, ...]) -> Array:
    shift = jnp.max(x, axes, keepdims=True)
    shift = jnp.where(jnp.isfinite(shift), shift, 0)
    return jnp.log(jnp.sum(jnp.exp(x - shift), axes)) + jnp.squeeze(shift, axes)


def _enclose_by_chain(z: TaylorEnclosure, axes, ctx: Context) -> TaylorEnclosure:
    """``log(sum(exp(z - s))) + s`` with the constant shift ``s = max(z_0)`` (degrees >= 3)."""
    shift = jnp.max(z.coefficients[0], axes, keepdims=True)
    exp = elementwise.enclose(elementwise.EXP, enclosures.add_constant(z, -shift), ctx)
    total = enclosures.map_monotone(lambda c: jnp.sum(c, axes), exp)
    log = elementwise.enclose(elementwise.LOG, total, ctx)
    return enclosures.add_constant(log, jnp.squeeze(shift, axes))


def log_softmax(z: TaylorEnclosure, axes: tuple[int, ...], ctx: Context) -> TaylorEnclosure:
    """``z - LSE(z)`` with the reduced axes broadcast back."""
    lse = enclose_logsumexp(z, axes, ctx)
    lse = enclosures.map_monotone(lambda c: jnp.expand_dims(c, axes), lse)
    lse = enclosures.map_monotone(lambda c: jnp.broadcast_to(c, z.shape), lse)
    return enclosures.add(z, enclosures.negate(lse), ctx)


def softmax(z: TaylorEnclosure, axes: tuple[int, ...], ctx: Context) -> TaylorEnclosure:
    """``exp(log_softmax(z))``: the exponent is at most 0, so nothing overflows."""
    log_p = log_softmax(z, axes, ctx)
    nonpositive = Interval(
        jnp.full(log_p.shape, -jnp.inf, log_p.dtype), jnp.zeros(log_p.shape, log_p.dtype)
    )
    return elementwise.enclose(elementwise.EXP, log_p, ctx, known_range=nonpositive)
