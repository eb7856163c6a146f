"""Sharp, numerically stable Taylor enclosures of elementwise functions.

For ``σ(u)`` with ``u = (u_0, …, u_{k-1}, U_k)`` let ``R`` be the range of ``u`` over the trust
region and ``S`` an interval with

    σ(v) ∈ Σ_{i<k} σ^(i)(u_0)/i! · (v - u_0)^i + S · (v - u_0)^k      for all v in R.

With ``v - u_0 = t·V`` this gives the enclosure ``Σ_{i<k} d_i·Δ^i + S·V(T)^k·t^k`` (DESIGN §3.3).

``S`` is the intersection of several intervals that each contain the remainder ratio
``R_k(v) = (σ(v) - Σ_{i<k} d_i (v-u_0)^i) / (v-u_0)^k`` for every ``v`` in ``R``:

* **classical**: the range of ``σ^(k)/k!`` over ``R`` (always valid, always stable);
* **sharp**: when ``σ^(k)`` is monotone on ``R``, so is ``R_k``, and ``S`` is spanned by ``R_k`` at
  the two ends of ``R``. Each end value is itself enclosed twice: by the direct formula widened by
  a bound on its rounding error, and by the series form ``d_k + Δ·σ^(k+1)(ξ)/(k+1)!``, which is
  accurate exactly where the direct formula cancels (``|Δ|`` tiny, the float32 problem).

This module holds the framework: :class:`ElementwiseFunction`, the remainder, the enclosure and
``select``. The smooth functions themselves (exp, log, the logistic family, erf, sin, cos,
powers) are catalogued in :mod:`~optax_saferate.autobound.smooth_functions`; relu and the elu
core, which have a kink, are in :mod:`~optax_saferate.autobound.kinks`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import Array

from optax_saferate.autobound import enclosures
from optax_saferate.autobound import intervals
from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval

# Rounding-error allowance of the direct remainder ratio, in units of eps · (sum of the magnitudes
# of the terms that were added). The terms are a handful of products and one library call with a
# few ulps of error; 16 leaves a wide margin.
_ROUNDING_FACTOR = 16.0


def derivative_by_autodiff(fn: Callable[[Array], Array], order: int) -> Callable[[Array], Array]:
    """``σ^(order)`` of an elementwise ``fn``, by nested forward-mode differentiation."""
    result = fn
    for _ in range(order):
        result = _differentiate(result)
    return result


def _differentiate(fn):
    def derivative(x):
        return jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]

    return derivative


CriticalPoints = Callable[[int], Sequence[float] | None]


def no_critical_points(order: int) -> Sequence[float]:
    """For functions all of whose derivatives are monotone on the domain (exp, log, x**p)."""
    del order
    return ()


def critical_point_table(table: Sequence[Sequence[float]]) -> CriticalPoints:
    """Critical points per derivative order from a table; ``None`` (unknown) beyond it."""

    def lookup(order: int):
        return table[order] if order < len(table) else None

    return lookup


@dataclasses.dataclass(frozen=True)
class ElementwiseFunction:
    """A smooth elementwise function with what its enclosure needs.

    Attributes:
      name: shown in error messages.
      fn: the function itself (jnp, elementwise).
      critical_points: ``order -> points`` where ``σ^(order)`` has a local extremum (``()`` when it
        is monotone on the whole domain, ``None`` when unknown: then that degree is refused).
      derivative: ``(order, x) -> σ^(order)(x)``; autodiff of ``fn`` by default.
      domain: ``R`` must lie in this closed interval (``log``: ``(0, inf)`` is written with a
        tiny positive lower end via ``domain_open_lower``).
      domain_open_lower: whether the lower end of ``domain`` is excluded.
      excluded_point: a point ``R`` may not contain (negative integer powers: 0).
      derivative_range: optional ``(order, lo, hi) -> Interval`` replacing the critical-point
        logic (periodic functions).
      monotone_derivative: optional ``(order, lo, hi) -> bool array`` to go with it.
    """

    name: str
    fn: Callable[[Array], Array]
    critical_points: CriticalPoints
    derivative: Callable[[int, Array], Array] | None = None
    domain: tuple[float, float] = (-math.inf, math.inf)
    domain_open_lower: bool = False
    excluded_point: float | None = None
    derivative_range: Callable[[int, Array, Array], Interval] | None = None
    monotone_derivative: Callable[[int, Array, Array], Array] | None = None

    def nth_derivative(self, order: int, x: Array) -> Array:
        if self.derivative is not None:
            return self.derivative(order, x)
        return derivative_by_autodiff(self.fn, order)(x)

    def supports_order(self, order: int) -> bool:
        return self.derivative_range is not None or self.critical_points(order) is not None

    def range_of_derivative(self, order: int, lo: Array, hi: Array) -> Interval:
        """An interval containing ``σ^(order)`` over ``[lo, hi]`` (hull of ends and extrema)."""
        return self.range_between(order, lo, hi)

    def range_between(self, order: int, a: Array, b: Array) -> Interval:
        """:meth:`range_of_derivative` over the hull of ``a`` and ``b``, given in either order.

        The derivative is evaluated at ``a`` and ``b`` themselves rather than at their min and
        max, so that XLA merges those evaluations with the others at the same points (the
        reference point ``u_0`` and the range ends): one ``exp`` per point, not one per use.
        """
        lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
        if self.derivative_range is not None:
            return self.derivative_range(order, lo, hi)
        points = self.critical_points(order)
        if points is None:
            raise NotImplementedError(
                f"the extrema of derivative {order} of {self.name} are not known, so no enclosure "
                f"of degree {order} can be built; use a lower max_degree"
            )
        at_a, at_b = self.nth_derivative(order, a), self.nth_derivative(order, b)
        low, high = jnp.minimum(at_a, at_b), jnp.maximum(at_a, at_b)
        for p in points:
            inside = (lo < p) & (p < hi)
            value = self.nth_derivative(order, jnp.full_like(lo, p))
            low = jnp.where(inside, jnp.minimum(low, value), low)
            high = jnp.where(inside, jnp.maximum(high, value), high)
        return Interval(low, high)

    def is_monotone_derivative(self, order: int, lo: Array, hi: Array) -> Array:
        if self.monotone_derivative is not None:
            return self.monotone_derivative(order, lo, hi)
        points = self.critical_points(order)
        if points is None:
            return jnp.zeros(jnp.shape(lo), bool)
        monotone = jnp.ones(jnp.shape(lo), bool)
        for p in points:
            monotone &= ~((lo < p) & (p < hi))
        return monotone

    def in_domain(self, r: Interval) -> Array:
        low, high = self.domain
        ok = jnp.isfinite(r.lo) & jnp.isfinite(r.hi) & (r.hi <= high)
        ok &= (r.lo > low) if self.domain_open_lower else (r.lo >= low)
        if self.excluded_point is not None:
            ok &= (r.lo > self.excluded_point) | (r.hi < self.excluded_point)
        return ok


# --------------------------------------------------------------------------- the remainder


def taylor_coefficients(spec: ElementwiseFunction, x: Array, count: int) -> list[Array]:
    """``[σ^(i)(x) / i! for i < count]``."""
    return [spec.nth_derivative(i, x) / math.factorial(i) for i in range(count)]


def _ratio_at(spec, v, u0, coefficients, degree, series_available):
    """An interval containing ``R_k(v)``, robust to cancellation (see the module docstring)."""
    dtype = jnp.result_type(u0)
    eps = jnp.finfo(dtype).eps
    delta = v - u0
    tiny = delta == 0
    safe_delta = jnp.where(tiny, jnp.ones_like(delta), delta)
    sigma_v = spec.fn(v)
    numerator = sigma_v
    magnitude = jnp.abs(sigma_v)
    power = jnp.ones_like(delta)
    for c in coefficients[:degree]:
        term = c * power
        numerator = numerator - term
        magnitude = magnitude + jnp.abs(term)
        power = power * safe_delta
    denominator = safe_delta**degree
    direct = numerator / denominator
    error = _ROUNDING_FACTOR * eps * magnitude / jnp.abs(denominator)
    usable = jnp.isfinite(direct) & jnp.isfinite(error)
    inf = jnp.asarray(jnp.inf, dtype)
    bound = Interval(
        jnp.where(usable, direct - error, -inf), jnp.where(usable, direct + error, inf)
    )
    if series_available:
        # R_k(v) = d_k + Δ·σ^(k+1)(ξ)/(k+1)! for some ξ between u0 and v.
        next_range = spec.range_between(degree + 1, u0, v)
        next_range = Interval(
            *(
                jnp.where(jnp.isnan(e), s * inf, e)
                for e, s in ((next_range.lo, -1), (next_range.hi, 1))
            )
        )
        series = intervals.shift(
            intervals.scale(next_range, delta / math.factorial(degree + 1)),
            coefficients[degree],
        )
        series = Interval(
            jnp.where(jnp.isnan(series.lo), -inf, series.lo),
            jnp.where(jnp.isnan(series.hi), inf, series.hi),
        )
        bound = intervals.intersect(bound, series)
    d_k = coefficients[degree]
    return Interval(jnp.where(tiny, d_k, bound.lo), jnp.where(tiny, d_k, bound.hi))


def remainder_interval(
    spec: ElementwiseFunction,
    u0: Array,
    r: Interval,
    degree: int,
    coefficients: list[Array],
    far_end: Array | None = None,
) -> Interval:
    """``S`` for ``σ`` at ``u0`` over the range ``r`` (which contains ``u0``), degree ``k >= 1``.

    ``coefficients`` holds ``σ^(i)(u0)/i!`` for ``i <= k``. ``far_end``, when given, says that
    ``r`` is the hull of ``u0`` and that one point (a linear input over a trust region with an
    end at 0, SafeRate's case): ``R_k`` at ``u0`` is ``d_k`` itself, so only the far end needs
    the ratio, which halves the elementwise work.
    """
    dtype = jnp.result_type(u0)
    inf = jnp.asarray(jnp.inf, dtype)
    ok = spec.in_domain(r)
    scale = 1.0 / math.factorial(degree)
    series_available = spec.supports_order(degree + 1)
    d_k = coefficients[degree]
    if far_end is None:
        # Evaluate on a harmless range where the domain check failed; replaced below.
        lo = jnp.where(ok, r.lo, u0)
        hi = jnp.where(ok, r.hi, u0)
        classical = spec.range_between(degree, lo, hi)
        at_lo = _ratio_at(spec, lo, u0, coefficients, degree, series_available)
        at_hi = _ratio_at(spec, hi, u0, coefficients, degree, series_available)
        sharp = Interval(
            jnp.minimum(jnp.minimum(at_lo.lo, at_hi.lo), d_k),
            jnp.maximum(jnp.maximum(at_lo.hi, at_hi.hi), d_k),
        )
    else:
        v = jnp.where(ok, far_end, u0)
        lo, hi = jnp.minimum(u0, v), jnp.maximum(u0, v)
        classical = spec.range_between(degree, u0, v)
        at_v = _ratio_at(spec, v, u0, coefficients, degree, series_available)
        sharp = Interval(jnp.minimum(at_v.lo, d_k), jnp.maximum(at_v.hi, d_k))
    classical = intervals.scale(classical, scale)
    monotone = spec.is_monotone_derivative(degree, lo, hi)
    both = intervals.intersect(sharp, classical)
    # Both contain the true set; an empty intersection can only come from rounding.
    consistent = both.lo <= both.hi
    s_lo = jnp.where(monotone & consistent, both.lo, classical.lo)
    s_hi = jnp.where(monotone & consistent, both.hi, classical.hi)
    s_lo = jnp.where(ok & ~jnp.isnan(s_lo), s_lo, -inf)
    s_hi = jnp.where(ok & ~jnp.isnan(s_hi), s_hi, inf)
    return Interval(s_lo, s_hi)


def function_range(spec: ElementwiseFunction, r: Interval, order: int = 0) -> Interval:
    """The range of ``σ^(order)`` over ``r`` (order 0: the degree-0 enclosure), unbounded where
    ``r`` leaves the domain."""
    ok = spec.in_domain(r)
    mid = jnp.where(ok, r.lo, 0.0)
    values = spec.range_of_derivative(order, mid, jnp.where(ok, r.hi, 0.0))
    inf = jnp.asarray(jnp.inf, jnp.result_type(r.lo))
    return Interval(jnp.where(ok, values.lo, -inf), jnp.where(ok, values.hi, inf))


# --------------------------------------------------------------------------- enclosures


def _compose(coefficients, s, a: TaylorEnclosure, ctx: Context) -> TaylorEnclosure:
    """``Σ_{i<k} d_i·Δ^i + S·V(T)^k·t^k`` with ``Δ = u - u_0`` and ``V = Δ / t``."""
    k = ctx.degree
    delta = TaylorEnclosure((jnp.zeros_like(a.coefficients[0]), *a.coefficients[1:]), a.remainder)
    result = enclosures.exact(jnp.broadcast_to(coefficients[0], a.shape))
    delta_power = delta
    for i in range(1, k):
        result = enclosures.add(result, enclosures.scale(delta_power, coefficients[i]), ctx)
        if i + 1 < k:
            delta_power = enclosures.multiply(delta_power, delta, ctx)
    v = enclosures.increment_range(a, ctx)
    if isinstance(v, Interval):
        top = intervals.multiply(s, intervals.integer_power(v, k))
    else:
        top = intervals.scale(s, v**k)
    remainder_part = enclosures.with_remainder((), top, ctx)
    return enclosures.add(result, remainder_part, ctx)


def enclose(
    spec: ElementwiseFunction, a: TaylorEnclosure, ctx: Context, known_range: Interval | None = None
) -> TaylorEnclosure:
    """The enclosure of ``σ(u)`` for a smooth elementwise ``σ``.

    ``known_range`` (from ``propagate_trust_regions``) is intersected with the range of ``u``.
    """
    k = ctx.degree
    r = enclosures.range_over(a, ctx)
    if known_range is not None:
        r = intervals.intersect(r, known_range)
    if k == 0:
        return TaylorEnclosure((), function_range(spec, r))
    if not spec.supports_order(k):
        raise NotImplementedError(
            f"{spec.name}: the extrema of its derivative of order {k} are not known, so no "
            f"degree-{k} enclosure can be built; use a lower max_degree or register the function "
            "with critical points for that order"
        )
    u0 = a.coefficients[0]
    coefficients = taylor_coefficients(spec, u0, k + 1)
    s = remainder_interval(spec, u0, r, k, coefficients, _far_end(a, ctx, known_range))
    composed = _compose(coefficients, s, a, ctx)
    if a.remainder is None or not spec.supports_order(1):
        return composed
    return _intersect_remainders(composed, _mean_value_form(spec, a, r, coefficients, ctx))


def _mean_value_form(spec, a: TaylorEnclosure, r: Interval, coefficients, ctx: Context):
    """The enclosure of ``σ(u)`` split at the exact part ``P`` of ``u = P + ρ·t^k``.

    ``σ(P + ρ·t^k) = σ(P) + σ'(ξ)·ρ·t^k`` for some ``ξ`` between ``P(t)`` and ``u(t)`` (mean value
    theorem), so the remainder lies in ``S_P + σ'(hull(range P, range u))·R``, with ``S_P`` the
    remainder of ``σ(P)`` (an exact polynomial input: its range and slope are narrow). This is
    linear in ``R``, where :func:`_compose` squares the slope range ``V = u1 + R·T`` (at degree
    2): through a deep net that squaring makes a wide ``R`` grow doubly exponentially with depth.
    Both forms have the same coefficients below degree ``k``; their remainders are intersected.
    """
    k = ctx.degree
    exact_part = TaylorEnclosure(a.coefficients, None)
    r_exact = enclosures.range_over(exact_part, ctx)
    s = remainder_interval(
        spec, a.coefficients[0], r_exact, k, coefficients, _far_end(exact_part, ctx, None)
    )
    smooth = _compose(coefficients, s, exact_part, ctx)
    slope = function_range(spec, intervals.hull(r, r_exact), order=1)
    moved = intervals.sanitize(intervals.multiply(slope, a.remainder))
    return enclosures.add(smooth, enclosures.with_remainder((), moved, ctx), ctx)


def _intersect_remainders(a: TaylorEnclosure, b: TaylorEnclosure) -> TaylorEnclosure:
    """``a`` with its remainder intersected with ``b``'s (both enclose the same function with
    the same coefficients); where rounding leaves them disjoint, ``a``'s is kept."""
    both = intervals.intersect(a.remainder, b.remainder)
    usable = both.lo <= both.hi
    remainder = Interval(
        jnp.where(usable, both.lo, a.remainder.lo), jnp.where(usable, both.hi, a.remainder.hi)
    )
    return TaylorEnclosure(a.coefficients, remainder)


def _far_end(a: TaylorEnclosure, ctx: Context, known_range: Interval | None) -> Array | None:
    """``u0 + t_far·u1`` when ``u`` is linear in ``t`` and the trust region has an end at a known
    0 (so the range of ``u`` is the hull of ``u0`` and that point); ``None`` otherwise."""
    t = ctx.trust_region
    if known_range is not None or a.remainder is not None or len(a.coefficients) != 2:
        return None
    if enclosures.known_zero(t.lo):
        end = t.hi
    elif enclosures.known_zero(t.hi):
        end = t.lo
    else:
        return None
    u0, u1 = a.coefficients
    return u0 + end * u1


def select(predicate, if_true: TaylorEnclosure, if_false: TaylorEnclosure, ctx: Context):
    """Elementwise choice between two enclosures (padded to a common form first)."""
    a, b = _common_form(if_true, if_false, ctx)
    coefficients = tuple(
        jnp.where(predicate, x, y) for x, y in zip(a.coefficients, b.coefficients, strict=True)
    )
    if a.remainder is None:
        return TaylorEnclosure(coefficients, None)
    remainder = Interval(
        jnp.where(predicate, a.remainder.lo, b.remainder.lo),
        jnp.where(predicate, a.remainder.hi, b.remainder.hi),
    )
    return TaylorEnclosure(coefficients, remainder)


def _common_form(a: TaylorEnclosure, b: TaylorEnclosure, ctx: Context):
    """Pad two enclosures to the same number of terms (and both with a remainder if either)."""
    if a.remainder is None and b.remainder is None:
        n = max(len(a.coefficients), len(b.coefficients))
        return _pad_exact(a, n), _pad_exact(b, n)
    return to_remainder_form(a, ctx), to_remainder_form(b, ctx)


def _pad_exact(a: TaylorEnclosure, n: int) -> TaylorEnclosure:
    zero = jnp.zeros_like(a.coefficients[0])
    return TaylorEnclosure(a.coefficients + (zero,) * (n - len(a.coefficients)), None)


def to_remainder_form(a: TaylorEnclosure, ctx: Context) -> TaylorEnclosure:
    """The same enclosure with exactly ``k`` coefficients and a remainder at degree ``k``."""
    if a.remainder is not None:
        return a
    k = ctx.degree
    coefficients = list(a.coefficients)
    zero = jnp.zeros_like(coefficients[0])
    coefficients += [zero] * (k + 1 - len(coefficients))
    top = coefficients[k]
    return TaylorEnclosure(tuple(coefficients[:k]), Interval(top, top))
