"""Sharp curvature bounds of log-sum-exp along a line: the softmax cross-entropy's remainder.

Along the line ``z(t) = z_0 + t·z_1`` (one log-sum-exp per reduced slice),

    LSE(z(t)) = LSE(z_0) + t·p·z_1 + N(t),    N(t) = log Σ_i p_i e^{t·d_i},

with ``p = softmax(z_0)`` and ``d = z_1 - p·z_1`` (so ``Σ p_i d_i = 0``). ``N`` is convex,
``N(0) = N'(0) = 0``, ``N'(t) = q(t)·d`` and ``N''(t) = Var_{q(t)}(d)`` with
``q(t) = softmax(z(t))``. The best degree-2 remainder coefficient over ``0 < t <= T`` is

    R2*(T) = sup_{0<t<=T} N(t)/t²,

which tends to ``½·Var_p(d)`` as ``T -> 0`` and, once ``T·spread(d)`` is several units (Adam
directions give spreads of tens to hundreds), is far below the classical caps: Popoviciu's
``spread²/8`` and the uniform tilt ``½·e^{T·spread}·Var_p``. :func:`remainder_sup` bounds it
from above, at the cost of a few softmaxes of the slice:

* **tilt**, valid on all of ``(0, T]``: ``q_i(s) <= p_i·e^{s·d_i}`` (``N(s) >= 0``), so
  ``N''(s) <= Σ p_i d_i² e^{s·d_i⁺}`` and ``N(t)/t² <= Σ_i p_i d_i² φ(T·d_i⁺)`` with
  ``φ(x) = (e^x - 1 - x)/x²`` (``φ(0) = ½``). Per-class, so a few classes with large ``d_i``
  cost only their own probability; exact as ``T -> 0``.
* **grid**: on geometric points ``t_1 < … < t_m = T``, ``N`` is evaluated exactly; on each piece
  ``[t_j, t_{j+1}]`` two upper bounds of ``N`` hold: the chord (convexity) and the expansion at
  ``t_j`` with the tilt bound of ``N''`` relative to ``q(t_j)``. Divided by ``t²`` each is a
  quadratic in ``1/t``, whose maximum over the piece is exact; the piece takes the smaller.
  On ``(0, t_1]`` the tilt bound at ``t_1`` applies. ``t_1`` is where ``t·spread(d)`` is
  ``_SMALL_REACH``, so the first piece is already sharp.

The result is the smallest of the three (tilt, grid, Popoviciu), each an upper bound of
``R2*(T)``. For a whole batch the sum of per-slice suprema can exceed the supremum of the sum
(slices peak at different ``t``); that is the price of an elementwise enclosure.

The negative side ``[t_lo, 0)`` is the positive side of the line with ``d`` negated.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from optax_saferate.autobound import intervals

# Grid points on (0, T]: 8 points cost 8 softmaxes of each slice and give bounds within a few
# percent of the best per-slice coefficient on Adam directions (benchmarks/step_quality.py).
GRID_POINTS = 8
# The grid starts where t·spread(d) = _SMALL_REACH: there the tilt bound exceeds ½·Var_p(d)
# by at most a factor φ(0.05)/φ(0) ≈ 1.017.
_SMALL_REACH = 0.05
# Rounding allowance, in units of eps times the magnitude of the terms of each piece bound.
_ROUNDING_FACTOR = 32.0


# Σ_n x^n/(n+2)! up to n = 14: at |x| = _PHI_SERIES_REACH the first omitted term is below 1e-19
# relative, so the series is as accurate as float64 rounding allows.
_PHI_SERIES = tuple(1 / math.factorial(n + 2) for n in range(15))
# Below this the direct form cancels: (e^x - 1) - x loses log2(e^x - 1)/(e^x - 1 - x) bits,
# about 8 ulps at |x| = 0.1 and 2 at 0.5 (measured against mpmath).
_PHI_SERIES_REACH = 0.5


def phi(x: Array) -> Array:
    """``(e^x - 1 - x)/x²`` (``½`` at 0), accurate for every ``x``; increasing and positive.

    ``+inf`` where ``e^x`` overflows (an upper bound), ``0`` at ``-inf``, never NaN.
    """
    # Six series terms (up to |x| = 0.1) were off by 5e-11 relative there, 2e5 float64 ulps, an
    # underestimate for x > 0; and (expm1(x) - x)/(x·x) was NaN where x·x overflows (inf/inf).
    small = jnp.abs(x) < _PHI_SERIES_REACH
    safe = jnp.where(small | ~jnp.isfinite(x), jnp.ones_like(x), x)
    series = jnp.full_like(x, _PHI_SERIES[-1])
    for c in reversed(_PHI_SERIES[:-1]):
        series = c + x * series
    direct = (jnp.expm1(safe) - safe) / safe / safe  # no x·x: it overflows before e^x does
    direct = jnp.where(x == jnp.inf, jnp.inf, jnp.where(x == -jnp.inf, 0, direct))
    return jnp.where(small, series, direct)


def _sum(x: Array, axes) -> Array:
    return jnp.sum(x, axes)


def _weighted(p: Array, x: Array) -> Array:
    """``p·x`` with ``0·inf = 0`` (a class of probability 0 never matters)."""
    return intervals.times(p, x)


def tilt_bound(p: Array, d: Array, reach: Array, axes) -> Array:
    """``Σ_i p_i d_i² φ(reach·d_i⁺)``: an upper bound of ``N(t)/t²`` on ``(0, reach]``.

    ``reach`` is a scalar or has the reduced shape (one reach per slice).
    """
    if jnp.ndim(reach):
        reach = jnp.expand_dims(reach, axes)
    return _sum(_weighted(p, d * d * phi(reach * jnp.maximum(d, 0))), axes)


def _lse(x: Array, axes) -> Array:
    shift = jnp.max(x, axes, keepdims=True)
    shift = jnp.where(jnp.isfinite(shift), shift, 0)
    return jnp.log(_sum(jnp.exp(x - shift), axes)) + jnp.squeeze(shift, axes)


def _log_excess(x: Array) -> Array:
    """``log(e^x - 1 - x)`` (``-inf`` at 0) without overflow or cancellation."""
    big, negative = x >= 1, x <= -1
    far = jnp.where(big, x, 1)
    low = jnp.where(negative, x, -1)
    near = jnp.where(big | negative, 0, x)
    return jnp.where(
        big,
        far + jnp.log1p(-(1 + far) * jnp.exp(-far)),
        jnp.where(negative, jnp.log(jnp.expm1(low) - low), jnp.log(near * near * phi(near))),
    )


def _log_abs_expm1(x: Array) -> Array:
    """``log|e^x - 1|`` (``-inf`` at 0) without overflow."""
    big = x >= 1
    far = jnp.where(big, x, 1)
    return jnp.where(big, far + jnp.log1p(-jnp.exp(-far)), jnp.log(jnp.abs(jnp.expm1(x))))


def _line_terms(log_p: Array, p: Array, d: Array, t: Array, axes):
    """``N(t)``, ``N'(t)`` in the direct form, and where that form is finite (see _line_value)."""
    x = t * d
    excess = _sum(_weighted(p, x * x * phi(x)), axes)
    rise = _sum(_weighted(p, d * jnp.expm1(x)), axes)
    linear = jnp.isfinite(excess) & jnp.isfinite(rise)
    return jnp.log1p(excess), rise / (1 + excess), linear


def _line_value_everywhere(log_p: Array, p: Array, d: Array, t: Array, axes):
    """The direct form where it is finite, the log-space form elsewhere (see _line_value)."""
    value, slope, linear = _line_terms(log_p, p, d, t, axes)
    x = t * d
    log_excess = _lse(log_p + _log_excess(x), axes)
    far_value = jnp.logaddexp(log_excess, 0)
    log_rise = _lse(log_p + jnp.log(jnp.abs(d)) + _log_abs_expm1(x), axes)
    far_slope = jnp.exp(log_rise - far_value)
    return jnp.where(linear, value, far_value), jnp.where(linear, slope, far_slope)


@functools.cache
def _line_value_over(axes: tuple[int, ...]):
    """``_line_value`` for the reduced ``axes``, with its own batching rule.

    The log-space form costs a dozen transcendental ops per class and point and is needed only
    where ``e^{t·d}`` overflows, so a ``jax.lax.cond`` runs it only then. Under ``jax.vmap``
    (SafeRate's ladder maps over trust regions) a cond whose predicate is batched becomes a
    select that runs both branches: half of a 17-rung ladder step on logistic regression. The
    rule below keeps one cond for the whole batch: the direct form for every member, the
    log-space form for all of them as soon as one member needs it (the same values either way).
    """

    def unbatched(log_p, p, d, t):
        value, slope, linear = _line_terms(log_p, p, d, t, axes)
        return jax.lax.cond(
            jnp.all(linear),
            lambda: (value, slope),
            lambda: _line_value_everywhere(log_p, p, d, t, axes),
        )

    line_value = jax.custom_batching.custom_vmap(unbatched)

    @line_value.def_vmap
    def batched(axis_size, in_batched, log_p, p, d, t):
        del axis_size
        in_axes = tuple(0 if b else None for b in in_batched)
        args = (log_p, p, d, t)
        value, slope, linear = jax.vmap(lambda *a: _line_terms(*a, axes), in_axes)(*args)
        everywhere = jax.vmap(lambda *a: _line_value_everywhere(*a, axes), in_axes)
        out = jax.lax.cond(jnp.all(linear), lambda: (value, slope), lambda: everywhere(*args))
        return out, (True, True)

    return line_value


def _line_value(log_p: Array, p: Array, d: Array, t: Array, axes) -> tuple[Array, Array]:
    """``N(t)`` and ``N'(t)`` for ``N(t) = log(1 + S)``, ``S = Σ p_i (e^{t d_i} - 1 - t d_i)``.

    That is ``log Σ p_i e^{t d_i}`` for ``Σ p d = 0`` and ``Σ p = 1``, written so that nothing
    cancels: every term of ``S`` and of ``S' = Σ p_i d_i (e^{t d_i} - 1)`` is ``>= 0``, so both
    keep their relative accuracy however small they are; ``N' = S'/(1 + S)``. Where ``S`` or
    ``S'`` overflows, they are summed in log space.

    The earlier form, ``log Σ exp(log p + t d)`` beyond ``t·spread = 1``, lost everything below
    ``eps`` (``N`` is ``1e-18`` for a class of probability ``1e-23`` whose ``t·d`` is 11: it
    rounded to 0, and the grid bound fell 1000 times below ``sup N/t²``); and ``N'`` taken as
    ``q(t)·d`` carried the rounding of the centring, ``t·Σ p d``, which the series form of ``N``
    drops, so the expansion bound fell short by ``|Σ p d|·w`` (2.5e-6 relative, float64).
    """
    return _line_value_over(tuple(axes))(log_p, p, d, t)


def _quadratic_max(a2: Array, a1: Array, a0: Array, lo: Array, hi: Array) -> Array:
    """``max_{s∈[lo, hi]} a2·s² + a1·s + a0`` (the vertex counts when the parabola opens down)."""

    def value(s):
        return (a2 * s + a1) * s + a0

    ends = jnp.maximum(value(lo), value(hi))
    safe = jnp.where(a2 != 0, a2, 1)
    vertex = jnp.clip(-a1 / (2 * safe), lo, hi)
    return jnp.where(a2 < 0, jnp.maximum(ends, value(vertex)), ends)


def remainder_sup(log_p: Array, p: Array, d: Array, reach: Array, axes) -> Array:
    """An upper bound of ``sup_{0<t<=reach} N(t)/t²`` per slice (``axes`` reduced).

    Args:
      log_p: ``log softmax(z_0)`` (``-inf`` for classes of probability 0).
      p: ``softmax(z_0)``.
      d: the centred slope ``z_1 - p·z_1`` (finite).
      reach: the far end ``T >= 0`` of the one-sided region, a scalar.
      axes: the reduced axes.

    Returns:
      The bound, with ``axes`` removed; at ``reach = 0`` it is ``½·Var_p(d)``.
    """
    axes = tuple(axes)
    dtype = d.dtype
    reach = jnp.asarray(reach, dtype)
    spread = jnp.max(d, axes) - jnp.min(d, axes)
    popoviciu = spread * spread / 8
    tilt = tilt_bound(p, d, reach, axes)
    # The grid on (0, reach]: t_1 = _SMALL_REACH/spread (or reach, if smaller), then geometric.
    positive = reach > 0
    safe_reach = jnp.where(positive, reach, jnp.ones_like(reach))
    safe_spread = jnp.where(spread > 0, spread, jnp.ones_like(spread))
    tiny = safe_reach * jnp.asarray(2.0**-60, dtype)
    first = jnp.clip(_SMALL_REACH / safe_spread, tiny, safe_reach)
    fractions = jnp.asarray(np.linspace(0.0, 1.0, GRID_POINTS), dtype)
    fractions = fractions.reshape((GRID_POINTS,) + (1,) * first.ndim)
    # Explicit leading grid axes: with slices (first.ndim > 0), (m, 1, …) against (…) would be
    # an implicit rank promotion, an error under jax_numpy_rank_promotion='raise'.
    log_first = jnp.log(first)[None]
    grid = jnp.exp(log_first + fractions * (jnp.log(safe_reach) - log_first))
    grid = grid.at[-1].set(jnp.broadcast_to(safe_reach, first.shape))
    shifted_axes = tuple(a + 1 for a in axes)
    full_grid = jnp.expand_dims(grid, shifted_axes)  # (m, ...) with the reduced axes as 1
    log_p_, p_, d_ = log_p[None], p[None], d[None]  # a leading grid axis
    values, slopes = _line_value(log_p_, p_, d_, full_grid, shifted_axes)
    probabilities = jnp.exp(log_p_ + full_grid * d_ - jnp.expand_dims(values, shifted_axes))
    near = tilt_bound(p, d, first, axes)
    t_j, t_k = grid[:-1], grid[1:]
    n_j, n_k = values[:-1], values[1:]
    width = t_k - t_j
    nonempty = width > 0
    safe_width = jnp.where(nonempty, width, jnp.ones_like(width))
    s_lo, s_hi = 1 / t_k, 1 / t_j
    # Chord: N(t) <= n_j + β·(t - t_j); over t², a quadratic in s = 1/t.
    beta = (n_k - n_j) / safe_width
    chord = _quadratic_max(n_j - beta * t_j, beta, jnp.zeros_like(beta), s_lo, s_hi)
    # Expansion at t_j: N(t) <= n_j + μ_j·w + c_j·w², w = t - t_j, with c_j the tilt bound of
    # ∫(w - s)N''(t_j + s)ds / w² relative to q(t_j) (centred at μ_j = N'(t_j)).
    mu = slopes[:-1]
    centred = d_ - jnp.expand_dims(mu, shifted_axes)
    piece_width = jnp.expand_dims(width, shifted_axes)
    tilted = centred * centred * phi(piece_width * jnp.maximum(centred, 0))
    # XLA flushes subnormal results to zero: each class's q_i·tilted_i may lose up to the
    # smallest normal number (times tilted_i, if q_i itself was flushed).
    classes = math.prod(d.shape[a] for a in axes)
    smallest = jnp.finfo(dtype).tiny
    flushed = classes * smallest * (1 + jnp.max(tilted, shifted_axes))
    curvature = _sum(_weighted(probabilities[:-1], tilted), shifted_axes) + flushed
    expansion = _quadratic_max(
        n_j - mu * t_j + curvature * t_j * t_j, mu - 2 * curvature * t_j, curvature, s_lo, s_hi
    )
    # Both forms subtract terms of size |n_j|, |μ_j|·t_j and c_j·t_j² before dividing by t_j²;
    # the allowance covers their rounding (they cancel to the much smaller N(t)/t² - c_j).
    # Each form's own terms (the chord's slope β >= μ_j can be far larger than μ_j).
    unit = _ROUNDING_FACTOR * jnp.finfo(dtype).eps * s_hi * s_hi
    chord = chord + unit * (jnp.abs(n_j) + jnp.abs(beta) * t_k)
    expansion = expansion + unit * (jnp.abs(n_j) + jnp.abs(mu) * t_k + curvature * t_k * t_k)
    # fmin: where e^{w·c} overflows the expansion is inf - inf = NaN, and the chord still holds.
    pieces = jnp.where(nonempty, jnp.fmin(chord, expansion), 0)
    grid_bound = jnp.maximum(near, jnp.max(pieces, 0))
    # Where N(t_j) comes within `classes/eps` of the underflow threshold, its terms may have been
    # flushed to zero (float32: p_i·x² below 1.2e-38), so the grid's N is no longer accurate to
    # its allowance: the slice keeps the tilt bound (found by the thorough profile, float32).
    accurate = jnp.min(values, 0) >= classes * smallest / jnp.finfo(dtype).eps
    grid_bound = jnp.where(accurate, grid_bound, jnp.inf)
    bound = jnp.fmin(jnp.minimum(tilt, popoviciu), grid_bound)  # a NaN grid gives no bound
    bound = jnp.where(jnp.isnan(bound), jnp.inf, bound)
    return jnp.where(positive, bound, tilt)


def tilt_range(p: Array, v: intervals.Interval, reach_hi: Array, reach_lo: Array, axes) -> Array:
    """An upper bound of the total variation ``TV(q, p)`` for ``q = softmax(z_0 + t·V)`` with
    ``V`` in the box ``v`` and ``t`` in ``[-reach_lo, reach_hi]``.

    By convexity ``LSE(z_0 + tV) >= LSE(z_0) + t·p·V``, so ``log(q_i/p_i) <= t·(V_i - p·V)``;
    over the box, ``V_i - p·V <= v_i.hi(1 - p_i) - Σ_{j≠i} p_j v_j.lo`` for ``t > 0`` and
    ``p·V - V_i <= Σ_{j≠i} p_j v_j.hi - (1 - p_i) v_i.lo`` for ``t < 0``. Then
    ``TV = Σ (q_i - p_i)⁺ <= Σ min(p_i·expm1(g_i), 1 - p_i)``, capped at 1.
    """
    keep = lambda x: jnp.expand_dims(x, axes)  # noqa: E731
    weighted_lo = keep(_sum(_weighted(p, v.lo), axes))
    weighted_hi = keep(_sum(_weighted(p, v.hi), axes))
    up = v.hi - weighted_lo - _weighted(p, v.hi - v.lo)
    down = weighted_hi - v.lo - _weighted(p, v.hi - v.lo)
    gain = jnp.maximum(
        intervals.times(reach_hi, jnp.maximum(up, 0)),
        intervals.times(reach_lo, jnp.maximum(down, 0)),
    )
    gain = jnp.where(jnp.isnan(gain), jnp.inf, gain)  # unbounded increments: inf - inf
    excess = jnp.minimum(_weighted(p, jnp.expm1(gain)), 1 - p)
    return jnp.minimum(_sum(excess, axes), 1)


def secant_slope_range(
    log_p: Array, p: Array, v: intervals.Interval, reach_hi, reach_lo, axes
) -> intervals.Interval:
    """The range of ``(LSE(z(t)) - LSE(z_0))/t`` over ``t != 0`` in ``[-reach_lo, reach_hi]``,
    for ``z(t) = z_0 + t·V`` with ``V`` anywhere in the box ``v``: the degree-1 enclosure.

    ``LSE`` is increasing in every argument and convex. For ``t > 0``,
    ``LSE(z_0 + t·V) <= LSE(z_0 + t·V_hi) = LSE(z_0) + t·p·V_hi + N(t)`` with ``N`` the line's
    convex remainder along ``d = V_hi - p·V_hi``, and ``N(t)/t`` grows with ``t`` (``N(0) = 0``);
    below, the tangent gives ``p·V_lo``. For ``t < 0`` the same with the ends swapped. So

        slope ∈ [p·V_lo - N_lo(reach_lo)/reach_lo, p·V_hi + N_hi(reach_hi)/reach_hi],

    the exact range when ``z`` is exactly linear in ``t`` (``V_lo = V_hi``) and a side is
    one-sided, and ``p·z_1`` as the region shrinks. The crude ``[min V_lo, max V_hi]`` (the
    softmax weights can be anything) is the fallback and caps it.

    Args:
      log_p: ``log softmax(z_0)``; p: ``softmax(z_0)``.
      v: the box of ``V`` (``increment_range`` of the logits).
      reach_hi, reach_lo: ``max(T_hi, 0)`` and ``max(-T_lo, 0)``, or ``None`` for a side known
        to be empty (the region ends at the reference point).
      axes: the reduced axes.
    """
    axes = tuple(axes)
    dtype = v.lo.dtype
    eps = jnp.finfo(dtype).eps
    classes = math.prod(v.lo.shape[a] for a in axes)
    crude = intervals.Interval(jnp.min(v.lo, axes), jnp.max(v.hi, axes))
    keep = lambda x: jnp.expand_dims(x, axes)  # noqa: E731

    def side(ends: Array, reach, sign: float):
        mean = _sum(_weighted(p, ends), axes)
        if reach is None:
            return mean
        # d is finite where the box is; a class with p = 0 never matters (its d is set to 0).
        d = jnp.where(p > 0, sign * (ends - keep(mean)), 0)
        finite = jnp.all(jnp.isfinite(d), axes)
        d = jnp.where(jnp.isfinite(d), d, 0)
        reach = jnp.asarray(reach, dtype)
        positive = reach > 0
        safe_reach = jnp.where(positive, reach, jnp.ones_like(reach))
        value, _ = _line_value(log_p, p, d, jnp.broadcast_to(safe_reach, log_p.shape), axes)
        excess = jnp.where(positive, value / safe_reach, 0)
        # Rounding: the centring (Σ p·d is 0 only up to the sum's rounding), the weights' sum
        # (1 up to rounding: a relative error of the weights moves the average of e^{t·d} by
        # eps·t·spread), N itself to a few ulps.
        magnitude = _sum(_weighted(p, jnp.abs(ends)), axes) + jnp.max(jnp.abs(d), axes) + excess
        allowance = 8 * (classes + 2) * eps * magnitude
        bound = mean + sign * (excess + allowance)
        return jnp.where(finite & ~jnp.isnan(bound), bound, sign * jnp.inf)

    upper = side(v.hi, reach_hi, 1.0)
    lower = side(v.lo, reach_lo, -1.0)
    return intervals.Interval(jnp.maximum(lower, crude.lo), jnp.minimum(upper, crude.hi))
