"""Taylor-enclosure arithmetic.

A :class:`TaylorEnclosure` of degree ``k`` describes an array-valued function ``u(x0 + t)`` of a
scalar offset ``t`` in the trust region ``T = [t_lo, t_hi]`` (which contains 0):

    u(x0 + t) ∈ c_0 + c_1·t + … + c_{m-1}·t^{m-1} + R·t^m      for every t in T,

where the ``c_i`` are exact arrays and ``R = [lo, hi]`` is an interval. Two cases:

* ``remainder is None``: ``u`` *is* the polynomial ``Σ c_i t^i`` (an exact polynomial, e.g.
  ``params + t·direction``, or a linear layer of constant data). Then ``m <= k + 1``.
* otherwise ``m == k`` and the remainder interval sits at degree ``k``.

Terms of degree above ``k`` are *folded* into the degree-``k`` interval using interval powers of
``T``: ``c·t^n = (c·t^{n-k})·t^k ∈ (c·T^{n-k})·t^k``.

Constants (values that do not depend on ``t``) are plain arrays and never wrapped; operations
between an enclosure and a constant are handled by the callers (the ``rules`` package) cheaply
and exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import Array

from optax_saferate.autobound import intervals
from optax_saferate.autobound.intervals import Interval


class TaylorEnclosure(NamedTuple):
    """Coefficients ``(c_0, …, c_{m-1})`` and an optional remainder interval at degree ``m``."""

    coefficients: tuple[Array, ...]
    remainder: Interval | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return jnp.shape(self.coefficients[0] if self.coefficients else self.remainder.lo)

    @property
    def dtype(self):
        return jnp.result_type(self.coefficients[0] if self.coefficients else self.remainder.lo)

    @property
    def is_exact(self) -> bool:
        return self.remainder is None


class Context(NamedTuple):
    """The trust region of the offset ``t`` (a scalar interval) and the degree ``k``."""

    trust_region: Interval
    degree: int


# --------------------------------------------------------------------------- constructors


def exact(*coefficients: Array) -> TaylorEnclosure:
    return TaylorEnclosure(tuple(coefficients), None)


def _zeros_like(x: Array) -> Array:
    return jnp.zeros(jnp.shape(x), jnp.result_type(x))


def with_remainder(
    coefficients: Sequence[Array], remainder: Interval, ctx: Context
) -> TaylorEnclosure:
    """An enclosure whose remainder sits at degree ``ctx.degree`` (pads missing terms with 0)."""
    coefficients = tuple(coefficients)
    reference = remainder.lo
    if len(coefficients) < ctx.degree:
        coefficients += tuple(_zeros_like(reference) for _ in range(ctx.degree - len(coefficients)))
    assert len(coefficients) == ctx.degree, (len(coefficients), ctx.degree)
    return TaylorEnclosure(coefficients, remainder)


def fold(coefficients: Sequence[Array], ctx: Context, remainder: Interval | None = None):
    """Turn polynomial terms of degree ``> k`` (plus a degree-``k`` interval) into an enclosure."""
    k = ctx.degree
    coefficients = list(coefficients)
    if remainder is None and len(coefficients) <= k + 1:
        return TaylorEnclosure(tuple(coefficients), None)
    high = coefficients[k:]
    low = coefficients[:k]
    folded = polynomial_range(high, ctx.trust_region) if high else None
    if folded is None:
        total = remainder
    elif remainder is None:
        total = folded
    else:
        total = intervals.add(folded, remainder)
    return with_remainder(low, total, ctx)


def lower(a: TaylorEnclosure, ctx: Context, degree: int) -> TaylorEnclosure:
    """The same function as an enclosure of the lower degree ``m = degree`` (``1 <= m <= k``).

    ``u = Σ_{i<m} c_i t^i + t^m·(c_m + c_{m+1}·t + … + R·t^{k-m})`` and the bracket lies in its
    own range over ``T``, which becomes the degree-``m`` remainder: on ``T = [0, T_hi]`` at degree
    3 to 2 that is ``c_2 + [min(R_lo·T_hi, 0), max(R_hi·T_hi, 0)]``. Exact terms above ``m`` of an
    exact polynomial are folded the same way (:func:`fold`).
    """
    if degree >= ctx.degree or not a.coefficients:
        return a
    low = Context(ctx.trust_region, degree)
    if a.remainder is None:
        return fold(a.coefficients, low)
    tail = TaylorEnclosure(a.coefficients[degree:], a.remainder)
    remainder = range_over(tail, Context(ctx.trust_region, ctx.degree - degree))
    return with_remainder(a.coefficients[:degree], remainder, low)


def degree_of(a: TaylorEnclosure) -> int:
    """The smallest context degree ``a`` is valid at (its remainder's degree, if it has one)."""
    return len(a.coefficients) if a.remainder is not None else max(len(a.coefficients) - 1, 0)


# --------------------------------------------------------------------------- ranges


def polynomial_range(coefficients: Sequence[Array], trust_region: Interval) -> Interval:
    """Range of the exact polynomial ``Σ c_i t^i`` over ``t ∈ T``.

    Exact for degree <= 2 (the vertex of a parabola is checked); interval Horner otherwise.
    """
    t = trust_region
    coefficients = list(coefficients)
    if len(coefficients) == 1:
        return intervals.point(coefficients[0])
    if len(coefficients) == 2:
        c0, c1 = coefficients
        return intervals.shift(intervals.scale(t, c1), c0)
    if len(coefficients) == 3:
        return _quadratic_range(*coefficients, t.lo, t.hi)
    acc = intervals.point(coefficients[-1])
    for c in reversed(coefficients[:-1]):
        acc = intervals.shift(intervals.multiply(acc, _broadcast_interval(t, c)), c)
    return acc


def _broadcast_interval(t: Interval, like: Array) -> Interval:
    return Interval(
        jnp.broadcast_to(t.lo, jnp.shape(like)), jnp.broadcast_to(t.hi, jnp.shape(like))
    )


def _quadratic_range(c0: Array, c1: Array, c2: Array, t_lo: Array, t_hi: Array) -> Interval:
    """Exact range of ``c0 + c1·t + c2·t²`` over ``[t_lo, t_hi]`` (``c2`` may be infinite)."""
    times = intervals.times

    def q(t):
        return c0 + times(t, c1 + times(c2, t))

    q_lo, q_hi = q(t_lo), q(t_hi)
    finite = jnp.isfinite(c2) & (c2 != 0)
    safe_c2 = jnp.where(finite, c2, 1.0)
    vertex = jnp.clip(-c1 / (2 * safe_c2), t_lo, t_hi)
    q_vertex = jnp.where(finite, q(vertex), q_lo)
    lo = jnp.minimum(jnp.minimum(q_lo, q_hi), jnp.where(c2 > 0, q_vertex, q_lo))
    hi = jnp.maximum(jnp.maximum(q_lo, q_hi), jnp.where(c2 < 0, q_vertex, q_hi))
    return Interval(lo, hi)


def range_over(enclosure: TaylorEnclosure, ctx: Context) -> Interval:
    """An interval containing ``u(x0 + t)`` for all ``t ∈ T``.

    For degree 2 this is the exact range of the quadratic for each end of the remainder
    interval (``t² >= 0``, so the value is monotone in the remainder coefficient).
    """
    coefficients, remainder = enclosure.coefficients, enclosure.remainder
    if remainder is None:
        return polynomial_range(coefficients, ctx.trust_region)
    t = ctx.trust_region
    if len(coefficients) == 2:
        low = _quadratic_range(*coefficients, remainder.lo, t.lo, t.hi)
        high = _quadratic_range(*coefficients, remainder.hi, t.lo, t.hi)
        return Interval(low.lo, high.hi)
    if len(coefficients) == 0:
        return remainder
    acc = remainder
    for c in reversed(coefficients):
        acc = intervals.shift(intervals.multiply(acc, _broadcast_interval(t, c)), c)
    return acc


def increment_range(enclosure: TaylorEnclosure, ctx: Context) -> Interval | Array:
    """Range over ``T`` of ``V(t) = (u(x0 + t) - c_0) / t``, the slope from the reference point.

    Returns an exact array when ``V`` is constant (``u`` exact of degree <= 1).
    """
    shifted = TaylorEnclosure(enclosure.coefficients[1:], enclosure.remainder)
    if shifted.remainder is None and len(shifted.coefficients) == 1:
        return shifted.coefficients[0]
    if not shifted.coefficients and shifted.remainder is None:
        return _zeros_like(enclosure.coefficients[0])
    return range_over(shifted, ctx)


# --------------------------------------------------------------------------- linear arithmetic


def add(a: TaylorEnclosure, b: TaylorEnclosure, ctx: Context) -> TaylorEnclosure:
    ca, cb = a.coefficients, b.coefficients
    n = max(len(ca), len(cb))
    coefficients = []
    for i in range(n):
        if i < len(ca) and i < len(cb):
            coefficients.append(ca[i] + cb[i])
        elif i < len(ca):
            coefficients.append(jnp.broadcast_to(ca[i], jnp.broadcast_shapes(a.shape, b.shape)))
        else:
            coefficients.append(jnp.broadcast_to(cb[i], jnp.broadcast_shapes(a.shape, b.shape)))
    if a.remainder is None and b.remainder is None:
        return TaylorEnclosure(tuple(coefficients), None)
    remainder = None
    for r in (a.remainder, b.remainder):
        if r is not None:
            remainder = r if remainder is None else intervals.add(remainder, r)
    shape = jnp.broadcast_shapes(a.shape, b.shape)
    if jnp.shape(remainder.lo) != shape:  # every term has the result's shape
        remainder = Interval(*(jnp.broadcast_to(e, shape) for e in remainder))
    return fold(coefficients, ctx, remainder)


def negate(a: TaylorEnclosure) -> TaylorEnclosure:
    remainder = None if a.remainder is None else intervals.negate(a.remainder)
    return TaylorEnclosure(tuple(-c for c in a.coefficients), remainder)


def known_zero(x) -> bool:
    """Whether ``x`` is a concrete (NumPy) array of zeros, known while tracing.

    The input enclosure of a reference point that is concretely 0 (SafeRate's ``η = 0``) has such
    a constant term. Keeping it structural means ``params + 0·u`` is emitted as ``params`` itself,
    so XLA can share the first layer's matmul with the loss and gradient in the same ``jit``.
    """
    return isinstance(x, np.ndarray) and not x.any()


def add_constant(a: TaylorEnclosure, c: Array) -> TaylorEnclosure:
    if not a.coefficients:  # degree 0: a plain interval
        shape = jnp.broadcast_shapes(a.shape, jnp.shape(c))
        lo, hi = (jnp.broadcast_to(e + c, shape) for e in a.remainder)
        return TaylorEnclosure((), Interval(lo, hi))
    first = a.coefficients[0]
    if known_zero(first):
        shape = jnp.broadcast_shapes(jnp.shape(first), jnp.shape(c))
        first = jnp.broadcast_to(c, shape)
    else:
        first = first + c
    shape = jnp.shape(first)
    rest = tuple(jnp.broadcast_to(x, shape) for x in a.coefficients[1:])
    remainder = a.remainder
    if remainder is not None and jnp.shape(remainder.lo) != shape:
        remainder = Interval(
            jnp.broadcast_to(remainder.lo, shape), jnp.broadcast_to(remainder.hi, shape)
        )
    return TaylorEnclosure((first, *rest), remainder)


def scale(a: TaylorEnclosure, c: Array) -> TaylorEnclosure:
    """``c · u`` for a constant array ``c`` (broadcasting)."""
    remainder = None if a.remainder is None else intervals.scale(a.remainder, c)
    return TaylorEnclosure(tuple(_times(x, c) for x in a.coefficients), remainder)


def _times(x, c):
    if known_zero(x):
        dtype = jnp.result_type(x, c)
        return np.zeros(jnp.broadcast_shapes(jnp.shape(x), jnp.shape(c)), dtype)
    return x * c


def map_monotone(fn: Callable[[Array], Array], a: TaylorEnclosure) -> TaylorEnclosure:
    """Apply a linear map with nonnegative weights (reshape, slice, sum, broadcast, …).

    Such maps send ``[lo, hi]`` to ``[fn(lo), fn(hi)]``, so each coefficient and each end of the
    remainder is mapped on its own.
    """
    remainder = None if a.remainder is None else Interval(fn(a.remainder.lo), fn(a.remainder.hi))
    return TaylorEnclosure(tuple(fn(c) for c in a.coefficients), remainder)


def map_linear(fn: Callable[[Array], Array], fn_abs: Callable[[Array], Array], a: TaylorEnclosure):
    """Apply a linear map of mixed sign: ``fn_abs`` is the same map with absolute weights.

    The remainder enters in midpoint-radius form: ``fn([m ± r]) ⊆ fn(m) ± fn_abs(r)``.
    """
    remainder = None
    if a.remainder is not None:
        mid, rad = _mid_rad(a.remainder)
        remainder = intervals.from_midpoint_radius(fn(mid), fn_abs(rad))
    return TaylorEnclosure(tuple(fn(c) for c in a.coefficients), remainder)


def combine_monotone(
    fn: Callable[..., Array], operands: Sequence[TaylorEnclosure | Array], ctx: Context
) -> TaylorEnclosure:
    """Apply a multi-operand positive linear map (concatenate, pad) coefficient by coefficient.

    Constant operands contribute to the degree-0 coefficient only.
    """
    enclosures = [op for op in operands if isinstance(op, TaylorEnclosure)]
    has_remainder = any(e.remainder is not None for e in enclosures)
    n = ctx.degree if has_remainder else max(len(e.coefficients) for e in enclosures)

    def term(op, i):
        if not isinstance(op, TaylorEnclosure):
            return op if i == 0 else jnp.zeros_like(op)
        if i < len(op.coefficients):
            return op.coefficients[i]
        if op.remainder is not None and i == len(op.coefficients):
            raise AssertionError("remainder below the context degree")
        return _zeros_like(op.coefficients[0])

    coefficients = tuple(fn(*[term(op, i) for op in operands]) for i in range(n))
    if not has_remainder:
        return TaylorEnclosure(coefficients, None)

    def end(op, which):
        if n == 0 and not isinstance(op, TaylorEnclosure):
            return op  # degree 0: a constant is its own range
        if isinstance(op, TaylorEnclosure):
            if op.remainder is not None:
                return getattr(op.remainder, which)
            if len(op.coefficients) > n:  # an exact degree-k term becomes a point remainder
                return op.coefficients[n]
            return _zeros_like(op.coefficients[0])
        return jnp.zeros_like(op)

    remainder = Interval(
        fn(*[end(op, "lo") for op in operands]), fn(*[end(op, "hi") for op in operands])
    )
    return TaylorEnclosure(coefficients, remainder)


# --------------------------------------------------------------------------- bilinear arithmetic


def apply_bilinear(op, x, y, elementwise: bool = False, op_many=None):
    """``op(x, y)`` for a bilinear ``op`` where either operand may be an :class:`Interval`.

    Exact operands give an exact array. An interval operand enters in midpoint-radius form:
    ``op([m ± r], W) ⊆ op(m, W) ± op(r, |W|)`` and, for two intervals,
    ``op(m1 ± r1, m2 ± r2) ⊆ op(m1, m2) ± (op(|m1|, r2) + op(r1, |m2| + r2))``.
    For elementwise multiplication the exact interval product is used instead (it is tighter).
    """
    x_interval, y_interval = isinstance(x, Interval), isinstance(y, Interval)
    if not x_interval and not y_interval:
        return op(x, y)
    if elementwise:
        xi = x if x_interval else intervals.point(x)
        yi = y if y_interval else intervals.point(y)
        if not x_interval:
            return intervals.scale(yi, x)
        if not y_interval:
            return intervals.scale(xi, y)
        return intervals.multiply(xi, yi)
    if isinstance(x, intervals.FromZero) or isinstance(y, intervals.FromZero):
        return _bilinear_from_zero(op, x, y, op_many)
    if x_interval and not y_interval:
        mid, rad = _mid_rad(x)
        return intervals.from_midpoint_radius(op(mid, y), op(rad, jnp.abs(y)))
    if y_interval and not x_interval:
        mid, rad = _mid_rad(y)
        return intervals.from_midpoint_radius(op(x, mid), op(jnp.abs(x), rad))
    m1, r1 = _mid_rad(x)
    m2, r2 = _mid_rad(y)
    return intervals.from_midpoint_radius(
        op(m1, m2), op(jnp.abs(m1), r2) + op(r1, jnp.abs(m2) + r2)
    )


def _bilinear_from_zero(op, x, y, op_many=None) -> Interval:
    """A contraction with a ``[0, h]`` operand: ``[op(h, min(lo, 0)), op(h, max(hi, 0))]``.

    Every product ``[0, h_j]·[a_j, b_j]`` lies in ``h_j·[min(a_j, 0), max(b_j, 0)]``, so the sums
    are exact and each end is a sum of same-signed terms (no ``inf - inf``). Infinite ends enter
    as the largest float, as in the midpoint-radius path (``inf·0`` would be NaN).
    """
    if isinstance(x, intervals.FromZero):
        h, other, h_first = x.hi, y, True
    else:
        h, other, h_first = y.hi, x, False
    lo_end, hi_end = (other.lo, other.hi) if isinstance(other, Interval) else (other, other)
    h = intervals.finite_radius(h)
    biggest = jnp.finfo(jnp.result_type(h)).max
    low = jnp.clip(jnp.minimum(lo_end, 0), -biggest, 0)
    high = jnp.clip(jnp.maximum(hi_end, 0), 0, biggest)
    if h_first:
        return Interval(*_products(op, op_many, h, (low, high)))
    return Interval(op(low, h), op(high, h))


def _products(op, op_many, x, ys) -> list[Array]:
    """``[op(x, y) for y in ys]``, as one batched op when the rule supplies ``op_many``."""
    if op_many is None or len(ys) < 2:
        return [op(x, y) for y in ys]
    return op_many(x, list(ys))


def _mid_rad(a: Interval):
    mid, rad = intervals.midpoint_radius(a)
    return mid, intervals.finite_radius(rad)


def _as_interval(x) -> Interval:
    return x if isinstance(x, Interval) else intervals.point(x)


def multiply(
    a: TaylorEnclosure,
    b: TaylorEnclosure,
    ctx: Context,
    op: Callable[[Array, Array], Array] = jnp.multiply,
    elementwise: bool = True,
    op_many: Callable[[Array, list[Array]], list[Array]] | None = None,
) -> TaylorEnclosure:
    """The enclosure of ``op(u, w)`` for a bilinear ``op`` (``*``, dot_general, convolution).

    With ``u = P_u + R_u·t^k`` and ``w = P_w + R_w·t^k`` (``P`` the exact parts),

        op(u, w) = op(P_u, P_w) + t^k · (op(R_u, w(t)) + op(P_u(t), R_w)),

    so the remainder is ``op(R_u, range(w)) + op(range(P_u), R_w)`` plus the folded terms of
    ``op(P_u, P_w)`` of degree >= k. Grouping ``R_u`` with the whole range of ``w`` (rather than
    with each coefficient) needs fewer bilinear ops and is tighter (DESIGN §3.2).

    ``op_many(x, ys)``, when given, computes ``[op(x, y) for y in ys]`` as one op (a matmul
    against the concatenated ``ys``), so that each large left operand is read once. The
    reference values ``op(c_0, ·)`` stay separate: XLA shares ``op(c_0, w_0)`` with the forward
    pass of the same ``jit``.
    """
    k = ctx.degree
    pa, pb = a.coefficients, b.coefficients
    limit = len(pa) + len(pb) - 1
    terms: list[Array | None] = [None] * limit
    for i, x in enumerate(pa):
        values = [op(x, y) for y in pb] if i == 0 else _products(op, op_many, x, pb)
        for j, value in enumerate(values):
            terms[i + j] = value if terms[i + j] is None else terms[i + j] + value
    remainder = None
    if a.remainder is not None:
        w_range = range_over(b, ctx) if not (b.is_exact and len(pb) == 1) else pb[0]
        remainder = _as_interval(apply_bilinear(op, a.remainder, w_range, elementwise, op_many))
    if b.remainder is not None and pa:
        u_range = polynomial_range(pa, ctx.trust_region) if len(pa) > 1 else pa[0]
        part = _as_interval(apply_bilinear(op, u_range, b.remainder, elementwise))
        remainder = part if remainder is None else intervals.add(remainder, part)
    if remainder is not None and len(terms) < k:
        terms += [_zeros_like(terms[0])] * (k - len(terms))
    return fold(terms, ctx, remainder)


def power(a: TaylorEnclosure, n: int, ctx: Context) -> TaylorEnclosure:
    """``u**n`` for an integer ``n >= 1`` by repeated squaring of enclosures."""
    result = None
    base = a
    while n:
        if n & 1:
            result = base if result is None else multiply(result, base, ctx)
        n >>= 1
        if n:
            base = multiply(base, base, ctx)
    return result
