"""Sharper Jensen bounds: an interval that contains ``E f(X) - f(μ)`` for ``X`` on ``[a, b]``.

Write ``t = X - μ``, ``α = μ - a``, ``β = b - μ`` and ``m_j = E t^j`` (the central moments:
``m_0 = 1``, ``m_1 = 0``, ``m_2`` the variance). The degree-``k`` enclosure of ``f`` at ``μ``
over ``[a, b]`` gives ``f(μ + t) = Σ_{j<k} c_j t^j + R(t)·t^k`` with ``R(t) ∈ [lo, hi]`` for
every ``t`` in ``[-α, β]``, so that

    E f(X) - f(μ) = Σ_{2<=j<k} c_j m_j + E[R(t)·t^k].

Even ``k``: ``t^k >= 0``, so ``E[R·t^k] ∈ [lo, hi]·m_k``. Odd ``k``: split ``t^k = t_+^k -
t_-^k`` with ``P = E t_+^k >= 0`` and ``N = E t_-^k >= 0``; then ``E[R·t^k] ∈ [lo·P - hi·N,
hi·P - lo·N]``. Since ``k - 1`` is even and ``t_+/β + t_-/α <= 1`` on ``[-α, β]`` (the chord
of ``|t|``), ``P/β + N/α <= m_{k-1}``; with ``P - N = m_k`` this gives ``N <= α(β·m_{k-1} -
m_k)/(α + β)`` (an equality for laws on ``{a, μ, b}``); the ends, ``lo·m_k - (hi - lo)·N`` and
``hi·m_k + (hi - lo)·N`` along ``P - N = m_k``, move outward with ``N``, so they are taken at
``N_max``. Degree 1 is the case ``m_1 = 0``, ``m_0 = 1``: ``N_max = αβ/(α + β)`` bounds
``E t_-``, half the mean absolute deviation.

A moment ``m_k`` that is not given is bounded from the lower ones:
``E[t^{k-2}(β - t)(α + t)] >= 0`` for even ``k`` gives ``m_k <= αβ·m_{k-2} + (β - α)·m_{k-1}``
(at ``k = 2`` Bhatia–Davis, ``Var X <= αβ``), and ``m_2 >= 0``, ``m_4 >= m_2² + m_3²/m_2``
(the moment matrix of ``1, t, t²`` is positive semidefinite). For odd ``k`` the remainder is
bounded over the triangle ``P, N >= 0``, ``P/β + N/α <= m_{k-1}`` (its corners). The lower
moments ``m_2 … m_{k-1}`` must be given for ``k >= 3``.

The classical bound, for comparison: for ``f`` twice continuously differentiable,
``E f(X) - f(μ) = ½ E[f''(ξ)·t²] ∈ ½[min f'', max f'']·Var X`` on ``[a, b]``, with the range of
``f''`` enclosed by the engine (degree-2 enclosures of ``jax.grad(jax.grad(f))`` on
``_CURVATURE_CELLS`` equal cells, each minimised and maximised exactly). When the degree-2
enclosure of ``f`` is sharp (one elementwise function) its ``[lo, hi]`` lies inside
``½[min f'', max f'']`` (``R(t)`` is a value of ``f''/2`` by the mean-value theorem).

What is rigorous and what is not: the maths above, the widening of the trust region where
``a - μ`` or ``b - μ`` is not exact in float64, ``α`` and ``β`` rounded up (every bound used
is increasing in both) and this module's arithmetic (an a-priori allowance of
``_ARITHMETIC_ULPS`` eps times the terms' magnitudes) are rigorous, for the mean and moments
*as given* (they are taken as exact: moments computed in floating point carry their own
rounding, which is the caller's). NOT rigorous, exactly as in :mod:`integrate`: the engine's
round-to-nearest coefficients and the library's elementary functions, covered by a further
allowance of ``_ENGINE_ULPS`` eps, an assumption rather than a proof.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from collections.abc import Sequence
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from optax_saferate.autobound.interpreter import TaylorBounds
from optax_saferate.autobound.interpreter import taylor_bounds
from optax_saferate.autobound.vector_inputs import _first_non_smooth

_ARITHMETIC_ULPS = 32.0  # this module's few rounded operations per term, with margin
_ENGINE_ULPS = 64.0  # assumed error of the engine's float64 coefficients (as in integrate)
_MOMENT_RTOL = 1e-9  # moments computed in floating point may miss their limits by rounding
_CURVATURE_CELLS = 64  # cells for the range of f'' (the classical bound's input)
_EPS = float(np.finfo(np.float64).eps)
_TINY = float(np.finfo(np.float64).tiny)


@dataclasses.dataclass(frozen=True)
class JensenBounds:
    """An interval ``[lower, upper]`` that contains ``E f(X) - f(μ)`` (see the module docstring).

    Attributes:
      lower, upper: the ends of the interval from the degree-``degree`` enclosure.
      classical_lower, classical_upper: ``½[min f'', max f'']·Var X`` with the engine's range of
        ``f''`` (``±inf`` where ``f`` has a kink or a jump, such as relu, abs, max or an
        input-dependent ``where``, or where the engine cannot bound ``f''``).
      degree: the degree of the enclosure.
      moments: the given central moments ``(m_2, …)`` that were used (at most up to ``m_degree``).
      moment_bound: ``(low, high)`` bounds of ``m_degree`` derived from ``[a, b]`` and the lower
        moments when it was not given (``None`` when given, and for degree 1).
      enclosure: the degree-``degree`` enclosure of ``f`` at ``μ`` over ``[a, b]``.
    """

    lower: float
    upper: float
    classical_lower: float
    classical_upper: float
    degree: int
    moments: tuple[float, ...]
    moment_bound: tuple[float, float] | None
    enclosure: TaylorBounds | None

    @property
    def width(self) -> float:
        return self.upper - self.lower

    @property
    def classical_width(self) -> float:
        return self.classical_upper - self.classical_lower


def jensen_gap(
    f: Callable,
    a: float,
    b: float,
    mean: float,
    *,
    variance: float | None = None,
    moments: Sequence[float] | None = None,
    degree: int = 2,
) -> JensenBounds:
    """An interval guaranteed (see the module docstring) to contain ``E f(X) - f(mean)``.

    ``X`` is any random variable with values in ``[a, b]``, mean ``mean`` and, when given,
    central moments ``E(X - mean)^j``. Runs in float64 (``jax.enable_x64`` is switched on
    inside, so the caller's setting is left alone).

    Args:
      f: a scalar function written with primitives that :func:`taylor_bounds` supports.
      a, b: the support of ``X``, ``a <= mean <= b``.
      mean: ``E X``.
      variance: ``Var X`` (shorthand for ``moments=(variance,)``); if neither is given at
        degree 2, Bhatia–Davis ``Var X <= (mean - a)(b - mean)`` is used.
      moments: the central moments ``(m_2, m_3, …)`` in order, starting at the variance.
        Degree ``k >= 3`` needs ``m_2 … m_{k-1}``; ``m_k`` is used when given and bounded from
        the others otherwise; higher ones are ignored.
      degree: the degree of the enclosure, 1 to 4.

    Returns:
      A :class:`JensenBounds`.

    Raises:
      ValueError: bad input (non-finite values, ``mean`` outside ``[a, b]``, a degree outside
        1-4, both ``variance`` and ``moments``, too few moments for the degree, or moments no
        law on ``[a, b]`` has, such as ``variance > (mean - a)(b - mean)``).

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_saferate import autobound as ab
      >>> r = ab.jensen_gap(jnp.exp, 0.0, 1.0, 0.5, variance=1 / 12)  # X uniform on [0, 1]
      >>> exact = (math.e - 1) - math.exp(0.5)
      >>> r.lower <= exact <= r.upper, round(r.width / r.classical_width, 3)
      (True, 0.324)

    References:
      Streeter & Dillon, "Automatically Bounding the Taylor Remainder Series", arXiv:2212.11429.
    """
    a, b, mean = _finite("a", a), _finite("b", b), _finite("mean", mean)
    if not a <= mean <= b:
        raise ValueError(f"jensen_gap needs a <= mean <= b, got a={a!r}, mean={mean!r}, b={b!r}")
    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= 4:
        raise ValueError(f"degree must be an integer in 1..4, got {degree!r}")
    if variance is not None and moments is not None:
        raise ValueError("give the variance either as variance= or as moments[0], not both")
    given = () if variance is None else (variance,)
    if moments is not None:
        given = tuple(moments)
    given = tuple(_finite(f"moment m_{j + 2}", m) for j, m in enumerate(given))
    needed = max(degree - 2, 0)
    if len(given) < needed:
        raise ValueError(
            f"degree {degree} needs the central moments m_2 .. m_{degree - 1} "
            f"(moments=(variance, E(X - mean)^3, ...)), got {len(given)} of them"
        )
    used = given[: max(degree - 1, 0)]
    alpha, beta = _distance_up(mean, a), _distance_up(b, mean)
    _check_moments(used, alpha, beta)

    if a == b:
        return JensenBounds(0.0, 0.0, 0.0, 0.0, degree, used, None, None)
    with jax.enable_x64(True):
        region = (_widened(a, mean, -math.inf), _widened(b, mean, math.inf))
        enclosure = taylor_bounds(f, degree)(jnp.float64(mean), region)
        lower, upper, moment_bound = _sharp(enclosure, used, alpha, beta, degree)
        classical = _classical(f, a, b, used[0] if used else None, alpha * beta)
    return JensenBounds(lower, upper, *classical, degree, used, moment_bound, enclosure)


def _finite(name: str, value) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _distance_up(x: float, y: float) -> float:
    """``x - y`` rounded up (``x >= y``): the exact difference or the float above it."""
    d = x - y
    return d if Fraction(x) - Fraction(y) <= Fraction(d) else math.nextafter(d, math.inf)


def _widened(end: float, mean: float, direction: float) -> float:
    """``end``, or a little beyond it where the engine's offset ``end - mean`` is inexact (its
    rounded offset could miss a sliver of the region; 4 eps further makes it reach past)."""
    if Fraction(end) - Fraction(mean) == Fraction(end - mean):
        return end
    pushed = end + math.copysign(4 * _EPS * (abs(end) + abs(mean)), direction)
    return math.nextafter(pushed, direction)


def _check_moments(moments: tuple[float, ...], alpha: float, beta: float) -> None:
    """Each given moment must be possible for a law on ``[-α, β]`` with the lower moments
    (within a relative tolerance for rounding): catches raw instead of central moments."""
    full = (1.0, 0.0, *moments)
    scale = max(alpha, beta)
    for j in range(2, len(full)):
        low, high = _moment_range(full, j, alpha, beta)
        slack = _MOMENT_RTOL * scale**j + _TINY
        if not low - slack <= full[j] <= high + slack:
            raise ValueError(
                f"the central moment m_{j} = {full[j]!r} is impossible for a law on [a, b] with "
                f"mean - a = {alpha!r}, b - mean = {beta!r} and the lower moments: it must lie "
                f"in [{low!r}, {high!r}] (pass central moments E(X - mean)^j, not raw ones)"
            )


def _moment_range(full: tuple[float, ...], j: int, alpha: float, beta: float):
    """Bounds of ``m_j`` from ``m_0 … m_{j-1}`` for a law on ``[-α, β]`` (module docstring)."""
    if j % 2 == 1:  # m_j = P - N over the triangle P, N >= 0, P/β + N/α <= m_{j-1}
        return -alpha * full[j - 1], beta * full[j - 1]
    high = alpha * beta * full[j - 2] + (beta - alpha) * full[j - 1]
    low = 0.0
    if j == 4 and full[2] > 0:
        low = full[2] ** 2 + full[3] ** 2 / full[2]
    return low, max(low, high)


def _times(x: float, y: float) -> float:
    """``x·y`` with ``0·inf = 0``: an infinite remainder end means "any finite value"."""
    return 0.0 if x == 0 or y == 0 else x * y


def _sharp(enclosure: TaylorBounds, moments, alpha: float, beta: float, k: int):
    """The interval of the module docstring, with its rounding allowance."""
    *coefficients, (lo, hi) = enclosure.coefficients
    c = [float(x) for x in coefficients]
    lo, hi = float(lo), float(hi)
    full = (1.0, 0.0, *moments)
    polynomial = math.fsum(c[j] * full[j] for j in range(2, k))
    moment_bound = None
    if k % 2 == 0:
        if len(full) > k:
            m_low = m_high = full[k]
        else:
            m_low, m_high = moment_bound = _moment_range(full, k, alpha, beta)
        rem_low = min(_times(lo, m_low), _times(lo, m_high))
        rem_high = max(_times(hi, m_low), _times(hi, m_high))
        absolute = m_high  # bounds E|t|^k
    else:
        below = full[k - 1]  # m_{k-1}
        if len(full) > k:
            m_k = full[k]
            negative = max(alpha * (beta * below - m_k) / (alpha + beta), -m_k, 0.0)
            positive = m_k + negative
            rem_low = _times(lo, positive) - _times(hi, negative)
            rem_high = _times(hi, positive) - _times(lo, negative)
            absolute = positive + negative
        else:
            moment_bound = _moment_range(full, k, alpha, beta)
            corners = ((0.0, 0.0), (beta * below, 0.0), (0.0, alpha * below))
            rem_low = min(_times(lo, p) - _times(hi, n) for p, n in corners)
            rem_high = max(_times(hi, p) - _times(lo, n) for p, n in corners)
            absolute = max(alpha, beta) * below
    # The engine's error in R is assumed a few ulps of f's size over the region divided by
    # big^k (as integrate assumes per cell), so it enters scaled by E|t|^k / big^k.
    big = max(alpha, beta)
    size = math.fsum(abs(x) * big**i for i, x in enumerate(c)) + max(abs(lo), abs(hi)) * big**k
    magnitude = math.fsum(abs(c[j] * full[j]) for j in range(2, k)) + _times(
        size, absolute / big**k
    )
    allowance = (_ARITHMETIC_ULPS + _ENGINE_ULPS) * _EPS * magnitude + 64 * _TINY
    lower, upper = polynomial + rem_low - allowance, polynomial + rem_high + allowance
    if math.isnan(lower) or math.isnan(upper):
        lower, upper = -math.inf, math.inf
    return lower, upper, moment_bound


@functools.lru_cache(maxsize=32)
def _curvature_bounder(f: Callable):
    """Per cell, bounds of ``f''`` from its degree-2 enclosure, minimised exactly."""
    bound = taylor_bounds(jax.grad(jax.grad(f)), 2)

    def one_cell(lo_wide, m, hi_wide, h_l, h_r):
        c0, c1, (r_lo, r_hi) = bound(m, (lo_wide, hi_wide)).coefficients

        def extreme(r, pick):  # the extreme of c0 + c1 t + r t² on [h_l, h_r]
            ends = pick(c0 + c1 * h_l + r * h_l**2, c0 + c1 * h_r + r * h_r**2)
            vertex = jnp.clip(-c1 / (2 * jnp.where(r == 0, 1.0, r)), h_l, h_r)
            inner = c0 + c1 * vertex + r * vertex**2
            return jnp.where(jnp.isfinite(r) & (r != 0), pick(ends, inner), ends)

        low = jnp.where(r_lo == -jnp.inf, -jnp.inf, extreme(r_lo, jnp.minimum))
        high = jnp.where(r_hi == jnp.inf, jnp.inf, extreme(r_hi, jnp.maximum))
        big = jnp.maximum(-h_l, h_r)
        size = jnp.abs(c0) + jnp.abs(c1) * big + jnp.maximum(jnp.abs(r_lo), jnp.abs(r_hi)) * big**2
        allowance = (_ARITHMETIC_ULPS + _ENGINE_ULPS) * _EPS * size + 64 * _TINY
        bad = jnp.isnan(low) | jnp.isnan(high)
        return jnp.where(bad, -jnp.inf, low - allowance), jnp.where(bad, jnp.inf, high + allowance)

    return jax.jit(jax.vmap(one_cell))


def _curvature_range(f: Callable, a: float, b: float) -> tuple[float, float]:
    ends = np.linspace(a, b, _CURVATURE_CELLS + 1)
    left, right = ends[:-1], ends[1:]
    mid = left + (right - left) / 2
    lo_wide = np.array([_widened(x, m, -math.inf) for x, m in zip(left, mid, strict=True)])
    hi_wide = np.array([_widened(x, m, math.inf) for x, m in zip(right, mid, strict=True)])
    low, high = _curvature_bounder(f)(lo_wide, mid, hi_wide, left - mid, right - mid)
    return float(jnp.min(low)), float(jnp.max(high))


def _classical(f: Callable, a: float, b: float, variance: float | None, bhatia_davis: float):
    """``½[min f'', max f'']·Var X`` (``Var X ∈ [0, αβ]`` when not given), rounded outward."""
    # A kink or a jump hides f'' (JAX differentiates relu to a step, and the step to 0), so the
    # classical bound does not exist there; the sharp one does not need f''.
    if _first_non_smooth(jax.make_jaxpr(f)(jnp.float64(a)).jaxpr) is not None:
        return -math.inf, math.inf
    try:
        d_low, d_high = _curvature_range(f, a, b)
    except NotImplementedError:  # f'' uses a primitive the engine has no rule for
        return -math.inf, math.inf
    v_low, v_high = (0.0, bhatia_davis) if variance is None else (variance, variance)
    lower = 0.5 * min(_times(d_low, v_low), _times(d_low, v_high))
    upper = 0.5 * max(_times(d_high, v_low), _times(d_high, v_high))
    allowance = _ARITHMETIC_ULPS * _EPS * 0.5 * _times(max(abs(d_low), abs(d_high)), v_high)
    return lower - allowance, upper + allowance
