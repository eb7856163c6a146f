"""The log-sum-exp composite rule and the recogniser for JAX's shifted-max pattern.

JAX computes ``logsumexp``, ``log_softmax``, ``softmax`` and optax's cross-entropies as

    s = stop_gradient(max(z, axes));  log(sum(b·exp(z - s), axes)) + s     (or z - s - log(...))

with optional weights ``b >= 0`` (``logsumexp(..., b=)``; a ``where=`` mask is 0/1 weights).
Whatever ``s`` is, as long as it is constant along the summed axes and the same ``s`` is added
back, it cancels exactly, so the pattern is ``LSE(z + log b)``, which has a tight enclosure of
its own (DESIGN §3.4): with ``p = softmax(z_0)`` and ``V = (z - z_0)/t`` ranging over ``V(T)``,

    LSE(z(t)) ∈ LSE(z_0) + (p·z_1)·t + (p·Z_2 + [0, spread(V)²/8])·t²,

where ``spread(V) = max_i V_i.hi - min_i V_i.lo`` (the Hessian of LSE is a covariance matrix,
whose quadratic form is at most ``spread²/4`` by Popoviciu's inequality). It is never NaN.

The recogniser follows values through the pattern as :class:`PatternValue` objects. It does not
rely on the identity of the enclosures it sees (``jnp.stack`` or a ``where=`` mask hand the max
and the subtraction different copies of the logits): each shift carries a token and a *layout*
(which axis of the max each axis of the value copies), and the pattern is accepted only where
the shift subtracted is constant along the summed axes and the shift added back is the same one,
row for row. Any use of a stop-gradient value outside the pattern raises: silently treating it
as a constant would change the function being bounded.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from optax_saferate.autobound import elementwise
from optax_saferate.autobound import enclosures
from optax_saferate.autobound import intervals
from optax_saferate.autobound import logsumexp_line
from optax_saferate.autobound import smooth_functions
from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval

# The stages of the pattern, in order.
MAX = "max"  # reduce_max(z) (possibly through max(-inf, .) and the is_finite guard)
FINITE = "finite"  # is_finite(max), the guard optax and jax use
SHIFT = "shift"  # stop_gradient(max)
SHIFTED = "shifted"  # z - shift
EXP = "exp"  # exp(z - shift), possibly times constant weights b >= 0
SUM = "sum"  # sum(b·exp(z - shift))
LOG = "log"  # log(sum(b·exp(z - shift))) = LSE(z + log b) - shift

# A layout gives, for each axis of a pattern value, the axis of its *base* array that it copies,
# or None where the value is constant along it (a broadcast axis, or one of size 1). The base is
# the max (MAX, FINITE, SHIFT: the logits' shape without the max's axes), the shift as laid out
# against the logits (SHIFTED, EXP: one entry per axis of z), or the reduced sum (SUM, LOG: z's
# shape without the summed axes). None as a whole layout means it could not be followed.
Layout = tuple  # tuple[int | None, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class PatternValue:
    """A value inside the log-sum-exp pattern.

    Attributes:
      stage: one of the stages above.
      z: the enclosure whose max is taken (MAX, FINITE, SHIFT), or the logits (later stages).
      axes: the max's axes (MAX, FINITE, SHIFT) or the summed axes (SUM, LOG), axes of ``z``.
      shape: the shape of this value.
      layout: see ``Layout``.
      shift: a token identifying the max (and so the stop-gradient shift) the value comes from.
      source: a token identifying the shifted logits ``z - s`` (SHIFTED and later).
      row_shift: SUM, LOG: for each axis of the reduced sum, the axis of the max it uses.
      weights: EXP, SUM, LOG: the constant weights ``b`` on ``exp(z - s)`` (``z``'s shape), or
        None for ``b = 1``.
    """

    stage: str
    z: TaylorEnclosure
    axes: tuple[int, ...]
    shape: tuple[int, ...]
    layout: Layout | None
    shift: object
    source: object = None
    row_shift: Layout = ()
    weights: Array | None = None

    def at(self, stage: str, shape=None, layout=None) -> PatternValue:
        """The same value at another stage (and, for structural ops, shape and layout)."""
        if shape is None or (layout is None and tuple(shape) == self.shape):
            shape, layout = self.shape, self.layout
        return dataclasses.replace(self, stage=stage, shape=tuple(shape), layout=layout)


def pattern_error(primitive_name: str, value: PatternValue, source: str) -> NotImplementedError:
    return NotImplementedError(
        f"`{primitive_name}` is applied to a stop_gradient value outside the log-sum-exp pattern "
        f"(stage {value.stage!r}) at {source}. AutoBound treats stop_gradient only where its value "
        "cancels (jax.nn.logsumexp, log_softmax, softmax, optax cross-entropies); elsewhere the "
        "bounded function would silently change. Remove the stop_gradient or register a rule with "
        "optax_saferate.autobound.register_primitive."
    )


# --------------------------------------------------------------------------- following the pattern


def start(z: TaylorEnclosure, axes: tuple[int, ...], shape) -> PatternValue:
    """``reduce_max(z, axes)``: a new shift, laid out as the max itself."""
    return PatternValue(MAX, z, axes, tuple(shape), _identity_layout(shape), shift=object())


def _identity_layout(shape) -> Layout:
    return tuple(i if n != 1 else None for i, n in enumerate(shape))


def broadcast_layout(layout: Layout | None, shape, out_shape) -> Layout | None:
    """The layout of a value of ``shape`` implicitly broadcast to ``out_shape`` by a binary op
    (a scalar, or size-1 axes)."""
    if layout is None:
        return None
    if len(shape) == 0:
        return (None,) * len(out_shape)
    if len(shape) != len(out_shape):
        return None
    return tuple(
        j if n == m and m != 1 else None for j, n, m in zip(layout, shape, out_shape, strict=False)
    )


def moved_layout(name: str, params, layout: Layout | None, shape, out_shape) -> Layout | None:
    """The layout after ``broadcast_in_dim``, ``squeeze`` or a reshape that only adds or removes
    axes of size 1; None for any other rearrangement."""
    if layout is None:
        return None
    if name == "broadcast_in_dim":
        new = [None] * len(out_shape)
        for i, d in enumerate(params["broadcast_dimensions"]):
            if shape[i] == out_shape[d] and out_shape[d] != 1:
                new[d] = layout[i]
        return tuple(new)
    if name == "squeeze":
        dropped = {d % len(shape) for d in params["dimensions"]}
        return tuple(j for i, j in enumerate(layout) if i not in dropped)
    if name == "reshape" and params.get("dimensions") is None:
        kept = [(n, j) for n, j in zip(shape, layout, strict=False) if n != 1]
        if [n for n, _ in kept] != [m for m in out_shape if m != 1]:
            return None
        entries = iter(j for _, j in kept)
        return tuple(next(entries) if m != 1 else None for m in out_shape)
    return None


def lay_out(c: Array, layout: Layout, out_shape) -> Array:
    """An array of the base shape (``c``), placed in ``out_shape`` as ``layout`` says."""
    target = tuple(c.shape[j] if j is not None else 1 for j in layout)
    return jnp.broadcast_to(jnp.reshape(c, target), out_shape)


def shifted(a: TaylorEnclosure, shift: PatternValue, out_shape) -> PatternValue | None:
    """``a - s``: the logits ``a`` and the shift's layout against them (None if not followed)."""
    layout = broadcast_layout(shift.layout, shift.shape, out_shape)
    if layout is None or tuple(a.shape) != tuple(out_shape):
        return None
    return PatternValue(SHIFTED, a, (), tuple(out_shape), layout, shift.shift, source=object())


def summed(x: PatternValue, axes: tuple[int, ...], out_shape) -> PatternValue | None:
    """``sum(exp(z - s), axes)``, if the shift is constant along ``axes`` (it then cancels)."""
    if x.layout is None or any(x.layout[i] is not None for i in axes):
        return None
    row_shift = tuple(j for i, j in enumerate(x.layout) if i not in axes)
    return dataclasses.replace(
        x,
        stage=SUM,
        axes=axes,
        shape=tuple(out_shape),
        layout=_identity_layout(out_shape),
        row_shift=row_shift,
    )


def same_shift_by_row(log: PatternValue, shift: PatternValue, out_shape) -> Layout | None:
    """For ``log(sum) + s``: the layout of the sum's rows in ``out_shape`` if ``s`` is the very
    shift subtracted in each row (else None)."""
    if shift.shift is not log.shift:
        return None
    rows = broadcast_layout(log.layout, log.shape, out_shape)
    added = broadcast_layout(shift.layout, shift.shape, out_shape)
    if rows is None or added is None:
        return None
    subtracted = tuple(log.row_shift[j] if j is not None else None for j in rows)
    return rows if subtracted == added else None


def broadcast_back(x: PatternValue, reduced: PatternValue) -> bool:
    """Whether ``reduced`` (a SUM or LOG of the shifted logits ``x``) is laid out against ``x``
    as its own sum with the summed axes kept (``keepdims``): ``z - s - log(sum)``, ``e / sum``."""
    if reduced.source is not x.source:
        return False
    layout = broadcast_layout(reduced.layout, reduced.shape, x.shape)
    kept = [i for i in range(len(x.shape)) if i not in reduced.axes]
    expected = tuple(
        None if i in reduced.axes or x.shape[i] == 1 else kept.index(i) for i in range(len(x.shape))
    )
    return layout == expected


def weighted(x: PatternValue, factor, where: str) -> PatternValue:
    """``exp(z - s)·factor`` with ``factor`` a constant: more weights (``b`` of logsumexp).

    Concrete weights must be ``>= 0``: with a negative one the sum can change sign, and its log
    is not a log-sum-exp of real numbers. They stay NumPy arrays, so that what they allow is
    decided while tracing. Traced weights are checked when the bound is computed (a row with a
    negative weight gets no bound: NaN coefficients and an unbounded interval).
    """
    shape = tuple(x.z.shape)
    if jnp.broadcast_shapes(jnp.shape(factor), shape) != shape:
        raise pattern_error("mul", x, where)
    known = _concrete(factor)
    if known is None:
        factor = jnp.broadcast_to(jnp.asarray(factor, x.z.dtype), shape)
    else:
        if not np.all(known >= 0):
            raise NotImplementedError(
                f"log-sum-exp with a negative or NaN weight b at {where}: the sum of b·exp(z) "
                "can then change sign, and its log is not a log-sum-exp of real numbers, so "
                "AutoBound cannot bound it. Use weights b >= 0 (b = 0 drops an entry), or split "
                "the sum into its positive and negative parts."
            )
        factor = np.broadcast_to(known.astype(x.z.dtype), shape)
    weights = factor if x.weights is None else x.weights * factor
    return dataclasses.replace(x, weights=weights)


def selected(predicate, cases, where: str) -> PatternValue:
    """``where(mask, exp(z - s), 0)`` (jnp.sum(..., where=mask)): 0/1 weights. A constant case
    other than 0 is not a weighting: refused if concrete; if traced, the weight of such an entry
    is NaN (no bound in its row)."""
    (i,) = [i for i, c in enumerate(cases) if isinstance(c, PatternValue)]
    x, other = cases[i], cases[1 - i]
    if x.stage != EXP or isinstance(other, PatternValue):
        raise pattern_error("select_n", x, where)
    known_predicate, known_other = _concrete(predicate), _concrete(other)
    if known_predicate is not None and known_other is not None:
        takes_x = known_predicate.astype(bool) if i == 1 else ~known_predicate.astype(bool)
        if not np.all(takes_x | (known_other == 0)):
            raise pattern_error("select_n with a nonzero constant case", x, where)
        return weighted(x, takes_x.astype(x.z.dtype), where)
    takes_x = jnp.asarray(predicate, bool) if i == 1 else ~jnp.asarray(predicate, bool)
    zero = jnp.asarray(other) == 0
    weight = jnp.where(takes_x, 1.0, jnp.where(zero, 0.0, jnp.nan)).astype(x.z.dtype)
    return weighted(x, weight, where)


def sum_sign(x: PatternValue):
    """``sign(sum(b·exp(z - s)))``: 1, or 0 in a row whose weights are all 0 (NaN in a row with
    a traced negative weight, where it is unknown)."""
    ones = jnp.ones(x.shape, x.z.dtype)
    if x.weights is None:
        return ones
    empty, invalid = _row_flags(x.weights, x.axes)
    sign = ones if empty is None else jnp.where(_row_value(empty, x), 0.0, ones)
    return sign if invalid is None else jnp.where(_row_value(invalid, x), jnp.nan, sign)


def _row_value(flags, x: PatternValue):
    """Per-row ``flags`` (the reduced shape) in the layout of the SUM/LOG value ``x``."""
    return lay_out(jnp.asarray(flags), x.layout, x.shape)


def _concrete(value) -> np.ndarray | None:
    """``value`` as a NumPy array if it is known while tracing (not a tracer), else ``None``."""
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


# --------------------------------------------------------------------------- the enclosures


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
        t = ctx.trust_region
        log_p = z0 - jnp.expand_dims(value, axes)
        reach_hi = None if enclosures.known_zero(t.hi) else jnp.maximum(t.hi, 0)
        reach_lo = None if enclosures.known_zero(t.lo) else jnp.maximum(-t.lo, 0)
        slope = logsumexp_line.secant_slope_range(log_p, p, v, reach_hi, reach_lo, axes)
        return TaylorEnclosure((value,), slope)
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
    sharp_lo, sharp_hi = _line_bounds(z, p, linear, value, v, second, curvature, axes, ctx)
    # Both pairs enclose the remainder; so does their intersection.
    upper = jnp.minimum(curvature.hi + high, sharp_hi)
    lower = jnp.minimum(jnp.maximum(curvature.lo + low, sharp_lo), upper)
    return TaylorEnclosure((value, linear), Interval(lower, upper))


def _line_bounds(z, p, linear, value, v: Interval, second: Interval, curvature, axes, ctx):
    """The remainder of ``LSE(z(t))`` split along the exact line ``a(t) = z_0 + t·z_1``.

    With ``z(t) = a(t) + t²·ζ`` (``ζ`` in ``second``), convexity gives
    ``LSE(a) + t²·q(a)·ζ <= LSE(z) <= LSE(a) + t²·q(z)·ζ``, so the remainder lies in
    ``N(t)/t² + [q(a)·ζ, q(z)·ζ]`` with ``N`` the line's own remainder (bounded sharply by
    :func:`logsumexp_line.remainder_sup`) and ``q`` a softmax on the region, within total
    variation ``τ`` of ``p``: ``q·ζ ∈ p·ζ ± τ·spread(ζ)``.
    """
    z0 = z.coefficients[0]
    z1 = z.coefficients[1] if len(z.coefficients) > 1 else jnp.zeros_like(z0)
    d = z1 - jnp.expand_dims(linear, axes)
    log_p = z0 - jnp.expand_dims(value, axes)
    t = ctx.trust_region
    sides = []
    if not enclosures.known_zero(t.hi):
        sides.append(logsumexp_line.remainder_sup(log_p, p, d, jnp.maximum(t.hi, 0), axes))
    if not enclosures.known_zero(t.lo):
        sides.append(logsumexp_line.remainder_sup(log_p, p, -d, jnp.maximum(-t.lo, 0), axes))
    if not sides:  # a zero-width region at the reference point
        sides.append(logsumexp_line.tilt_bound(p, d, jnp.zeros((), d.dtype), axes))
    line_hi = functools.reduce(jnp.maximum, sides)
    reach_hi = jnp.maximum(jnp.asarray(t.hi, d.dtype), 0)
    reach_lo = jnp.maximum(-jnp.asarray(t.lo, d.dtype), 0)
    variation = logsumexp_line.tilt_range(p, v, reach_hi, reach_lo, axes)

    def spread(x):
        return jnp.max(x, axes) - jnp.min(x, axes)

    upper = line_hi + curvature.hi + intervals.times(variation, spread(second.hi))
    # N(t)/t² = ∫(1 - u)·Var_{q(ut)}(d) du >= ½·e^{-γ}·Var_p(d), since q_i >= p_i·e^{-γ}.
    gamma = jnp.minimum(jnp.maximum(reach_hi, reach_lo) * spread(d), 60.0)
    line_lo = 0.5 * jnp.exp(-gamma) * jnp.sum(intervals.times(p, d * d), axes)
    lower = line_lo + curvature.lo - intervals.times(variation, spread(second.lo))
    lower = jnp.where(jnp.isnan(lower), -jnp.inf, lower)
    upper = jnp.where(jnp.isnan(upper), jnp.inf, upper)
    return lower, upper


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
    exp = elementwise.enclose(smooth_functions.EXP, enclosures.add_constant(z, -shift), ctx)
    total = enclosures.map_monotone(lambda c: jnp.sum(c, axes), exp)
    log = elementwise.enclose(smooth_functions.LOG, total, ctx)
    return enclosures.add_constant(log, jnp.squeeze(shift, axes))


def weighted_logsumexp(
    z: TaylorEnclosure, weights: Array | None, axes: tuple[int, ...], ctx: Context
) -> TaylorEnclosure:
    """The enclosure of ``log(sum(b·exp(z), axes)) = LSE(z + log b)`` for constant ``b >= 0``.

    ``log b`` is an added constant (exact). An entry with ``b = 0`` (or ``z_0 = -inf``) has the
    logit ``-inf``: its probability is 0 for every ``t``, so its higher terms are replaced by
    those of the row's largest entry, which leaves every sum and the spread of the row as if the
    entry were not there (the coefficients are those of the log-sum-exp of the other entries).
    A row whose weights are all 0 is ``-inf``, exactly. With traced weights, a row holding a
    negative (or NaN) weight is not a log-sum-exp: NaN coefficients and an unbounded interval.
    """
    if weights is None:
        return enclose_logsumexp(z, axes, ctx)
    known = _concrete(weights)
    positive = weights > 0
    log_b = jnp.where(positive, jnp.log(jnp.where(positive, weights, 1)), -jnp.inf)
    z = enclosures.add_constant(z, log_b.astype(z.dtype))
    if known is not None and np.all(known > 0):
        return enclose_logsumexp(z, axes, ctx)
    z = _without_vanishing_entries(z, axes, ctx.degree)
    result = elementwise.to_remainder_form(enclose_logsumexp(z, axes, ctx), ctx)
    coefficients, remainder = list(result.coefficients), result.remainder
    if known is None:
        empty, invalid = ~jnp.any(positive, axes), ~jnp.all(weights >= 0, axes)
    else:  # negative weights were refused when they were multiplied in
        empty, invalid = ~np.any(known > 0, axes), None
    if coefficients and (known is None or np.any(empty)):  # log(0) = -inf for every t
        coefficients = [
            jnp.where(empty, -jnp.inf if i == 0 else 0.0, c).astype(c.dtype)
            for i, c in enumerate(coefficients)
        ]
        remainder = Interval(*(jnp.where(empty, 0.0, e).astype(e.dtype) for e in remainder))
    if invalid is not None:
        coefficients = [jnp.where(invalid, jnp.nan, c).astype(c.dtype) for c in coefficients]
        remainder = Interval(
            jnp.where(invalid, -jnp.inf, remainder.lo).astype(remainder.lo.dtype),
            jnp.where(invalid, jnp.inf, remainder.hi).astype(remainder.hi.dtype),
        )
    return TaylorEnclosure(tuple(coefficients), remainder)


def _row_flags(weights: Array, axes: tuple[int, ...]):
    """``(empty, invalid)`` per row: all weights 0, some weight negative or NaN. Each is None
    where it is known to be false everywhere (concrete weights; negative ones were refused)."""
    known = _concrete(weights)
    if known is None:
        return ~jnp.any(weights > 0, axes), ~jnp.all(weights >= 0, axes)
    empty = ~np.any(known > 0, axes)
    return (empty if np.any(empty) else None), None


def _without_vanishing_entries(
    z: TaylorEnclosure, axes: tuple[int, ...], degree: int
) -> TaylorEnclosure:
    """``z`` with the higher terms of each ``-inf`` entry replaced by those of its row's largest
    entry (degrees 1 and 2), or by zeros (degree 3 and up, where the chain rule's ``exp`` of
    ``-inf`` with a nonzero slope would be unbounded). Sound: ``-inf + anything finite`` is
    ``-inf``; the entry's probability is 0 at every ``t``, and a copy of another entry of the row
    changes neither a sum weighted by the probabilities nor the spread of the row."""
    if not z.coefficients:
        return z  # degree 0: a plain range, -inf at both ends
    z0 = z.coefficients[0]
    vanishing = jnp.isneginf(z0)
    if degree >= 3:

        def zero(c):
            return jnp.where(vanishing, jnp.zeros((), c.dtype), c)

        remainder = None if z.remainder is None else Interval(*(zero(e) for e in z.remainder))
        return TaylorEnclosure((z0, *(zero(c) for c in z.coefficients[1:])), remainder)
    kept = [i for i in range(z0.ndim) if i not in axes]
    order = kept + list(axes)
    rows = tuple(z0.shape[i] for i in kept)

    def flat(c):
        c = jnp.broadcast_to(c, z0.shape)
        return jnp.reshape(jnp.transpose(c, order), (*rows, -1))

    largest = jnp.argmax(flat(z0), axis=-1, keepdims=True)

    def pick(c):
        chosen = jnp.reshape(jnp.take_along_axis(flat(c), largest, axis=-1), rows)
        return jnp.where(vanishing, jnp.expand_dims(chosen, axes), c)

    coefficients = (z0, *(pick(c) for c in z.coefficients[1:]))
    remainder = None if z.remainder is None else Interval(*(pick(e) for e in z.remainder))
    return TaylorEnclosure(coefficients, remainder)


def log_softmax(
    z: TaylorEnclosure, axes: tuple[int, ...], ctx: Context, weights: Array | None = None
) -> TaylorEnclosure:
    """``z - LSE(z + log b)`` with the reduced axes broadcast back."""
    lse = weighted_logsumexp(z, weights, axes, ctx)
    lse = enclosures.map_monotone(lambda c: jnp.expand_dims(c, axes), lse)
    lse = enclosures.map_monotone(lambda c: jnp.broadcast_to(c, z.shape), lse)
    return enclosures.add(z, enclosures.negate(lse), ctx)


def softmax(
    z: TaylorEnclosure, axes: tuple[int, ...], ctx: Context, weights: Array | None = None
) -> TaylorEnclosure:
    """``exp(z) / sum(b·exp(z))`` as ``exp(z - LSE(z + log b))``. Where ``b >= 1`` (always
    without weights) the exponent is at most 0, so nothing overflows; that range is passed on."""
    log_p = log_softmax(z, axes, ctx, weights)
    top = jnp.zeros(log_p.shape, log_p.dtype)
    if weights is not None:
        top = jnp.where(weights >= 1, top, jnp.inf).astype(log_p.dtype)
    nonpositive = Interval(jnp.full(log_p.shape, -jnp.inf, log_p.dtype), top)
    return elementwise.enclose(smooth_functions.EXP, log_p, ctx, known_range=nonpositive)
