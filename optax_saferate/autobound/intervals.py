"""Interval arithmetic on arrays.

An :class:`Interval` is a pair of arrays ``(lo, hi)`` of one shape with ``lo <= hi`` elementwise.
Every operation returns an interval that contains all values the operation can take when each
operand ranges over its interval. The trust region ``T`` of the enclosure arithmetic is a scalar
interval; its powers ``T**j`` appear whenever high-degree terms are folded into the remainder.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array


class Interval(NamedTuple):
    """A closed interval ``[lo, hi]``, elementwise over arrays of one shape."""

    lo: Array
    hi: Array

    @property
    def shape(self) -> tuple[int, ...]:
        return jnp.shape(self.lo)


class FromZero(Interval):
    """An interval ``[0, hi]`` whose lower end is known, while tracing, to be exactly 0.

    The first hidden layer's relu remainder over a one-sided trust region has this form. A
    contraction with such an operand needs two products with ``hi`` and no midpoint-radius
    intermediates, and is exact: ``Σ [0, h_j]·[a_j, b_j] = [Σ h_j·min(a_j, 0), Σ h_j·max(b_j, 0)]``.
    Any operation that builds a new interval returns a plain :class:`Interval`.
    """


def point(x: Array) -> Interval:
    """The zero-width interval ``[x, x]``."""
    return Interval(x, x)


def add(a: Interval, b: Interval) -> Interval:
    return Interval(a.lo + b.lo, a.hi + b.hi)


def negate(a: Interval) -> Interval:
    return Interval(-a.hi, -a.lo)


def shift(a: Interval, c: Array) -> Interval:
    """``a + c`` for an exact array ``c``."""
    return Interval(a.lo + c, a.hi + c)


def times(x: Array, y: Array) -> Array:
    """``x * y`` with ``0 * inf = 0``.

    An infinite interval end means "any finite value"; times an exact zero that is zero, where
    IEEE arithmetic would give NaN and poison every bound downstream.
    """
    return jnp.where((x == 0) | (y == 0), jnp.zeros((), jnp.result_type(x, y)), x * y)


def scale(a: Interval, c: Array) -> Interval:
    """``c * a`` for an exact array ``c`` (either sign)."""
    p, q = times(c, a.lo), times(c, a.hi)
    return Interval(jnp.minimum(p, q), jnp.maximum(p, q))


def multiply(a: Interval, b: Interval) -> Interval:
    """The exact product interval ``{x * y : x in a, y in b}``."""
    p1, p2 = times(a.lo, b.lo), times(a.lo, b.hi)
    p3, p4 = times(a.hi, b.lo), times(a.hi, b.hi)
    return Interval(
        jnp.minimum(jnp.minimum(p1, p2), jnp.minimum(p3, p4)),
        jnp.maximum(jnp.maximum(p1, p2), jnp.maximum(p3, p4)),
    )


def square(a: Interval) -> Interval:
    """``{x**2 : x in a}``: nonnegative, and zero when ``a`` straddles zero."""
    lo2, hi2 = a.lo * a.lo, a.hi * a.hi
    straddles = (a.lo <= 0) & (a.hi >= 0)
    return Interval(
        jnp.where(straddles, 0.0, jnp.minimum(lo2, hi2)).astype(lo2.dtype), jnp.maximum(lo2, hi2)
    )


def integer_power(a: Interval, n: int) -> Interval:
    """``{x**n : x in a}`` for an integer ``n >= 0``; exact (monotone or even)."""
    if n == 0:
        one = jnp.ones_like(a.lo)
        return Interval(one, one)
    if n == 1:
        return a
    if n % 2 == 1:
        return Interval(a.lo**n, a.hi**n)
    sq = square(a)
    return Interval(sq.lo ** (n // 2), sq.hi ** (n // 2))


def midpoint_radius(a: Interval) -> tuple[Array, Array]:
    """``(mid, rad)`` with ``a ⊆ [mid - rad, mid + rad]``.

    The radius is taken as the larger distance from the rounded midpoint to either end, so the
    midpoint-radius interval contains ``a`` despite the rounding of ``(lo + hi) / 2``. Those
    distances are rounded too (``[-1, 1e-100]`` gives ``-0.5 ± 0.5``); where ``mid ± rad`` then
    misses an end, the radius moves up one ulp, which makes it at least the exact distance.
    """
    finite_lo, finite_hi = jnp.isfinite(a.lo), jnp.isfinite(a.hi)
    # With an infinite end any finite midpoint will do; the radius is then infinite.
    lo, hi = jnp.where(finite_lo, a.lo, 0), jnp.where(finite_hi, a.hi, 0)
    mid = jnp.where(finite_lo & finite_hi, 0.5 * (lo + hi), jnp.where(finite_lo, lo, hi))
    rad = jnp.maximum(mid - a.lo, a.hi - mid)
    short = (mid - rad > a.lo) | (mid + rad < a.hi)
    rad = jnp.where(short, jnp.nextafter(rad, jnp.inf), rad)
    return mid, rad


def finite_radius(rad: Array) -> Array:
    """An infinite radius as the largest finite number, for use inside a matmul or convolution.

    ``inf · 0`` inside a contraction is NaN, but an unbounded term with weight 0 contributes 0;
    the largest float keeps that, and any nonzero weight still overflows to ``inf``.
    """
    return jnp.where(jnp.isinf(rad), jnp.finfo(jnp.result_type(rad)).max, rad)


def from_midpoint_radius(mid: Array, rad: Array) -> Interval:
    return Interval(mid - rad, mid + rad)


def sanitize(a: Interval) -> Interval:
    """Make every end that says nothing (NaN, or overflowed past the other side) unbounded.

    Overflow can round a lower end up to ``+inf``; reading it as ``-inf`` keeps the interval
    valid, and a NaN end is equally treated as "no information".
    """
    lo = jnp.where(jnp.isnan(a.lo) | (a.lo == jnp.inf), -jnp.inf, a.lo).astype(a.lo.dtype)
    hi = jnp.where(jnp.isnan(a.hi) | (a.hi == -jnp.inf), jnp.inf, a.hi).astype(a.hi.dtype)
    return Interval(lo, hi)


def hull(a: Interval, b: Interval) -> Interval:
    """The smallest interval containing both."""
    return Interval(jnp.minimum(a.lo, b.lo), jnp.maximum(a.hi, b.hi))


def intersect(a: Interval, b: Interval) -> Interval:
    """``a ∩ b``; callers must know the intersection is nonempty (both contain the true set)."""
    return Interval(jnp.maximum(a.lo, b.lo), jnp.minimum(a.hi, b.hi))


def width(a: Interval) -> Array:
    return a.hi - a.lo


def contains(a: Interval, x: Array, tolerance: Array | float = 0.0) -> Array:
    """Elementwise ``lo - tolerance <= x <= hi + tolerance``."""
    return (a.lo - tolerance <= x) & (x <= a.hi + tolerance)


def entire_like(x: Array) -> Interval:
    """The interval ``[-inf, inf]``: a sound answer when nothing finite can be said."""
    inf = jnp.full(jnp.shape(x), jnp.inf, dtype=jnp.result_type(x))
    return Interval(-inf, inf)
