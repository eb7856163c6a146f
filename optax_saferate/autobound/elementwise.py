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

The functions that need the location of the extrema of their derivatives carry them as constants
(computed by ``scripts/critical_points.py``, checked by the tests).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from jax import Array

from optax_saferate.autobound import derivatives
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


# --------------------------------------------------------------------------- the catalogue


def _quarter_turn(quarter_turns: int, x: Array) -> Array:
    """``sin(x + quarter_turns·π/2)`` as ``±sin(x)`` or ``±cos(x)``.

    Adding ``π/2`` to ``x`` first would cost an absolute error of ``eps·|x|``, which is large
    relative to the value near its zeros (``cos`` near ``±π/2``).
    """
    n = quarter_turns % 4
    if n == 0:
        return jnp.sin(x)
    if n == 1:
        return jnp.cos(x)
    if n == 2:
        return -jnp.sin(x)
    return -jnp.cos(x)


def _sin_range(lo: Array, hi: Array, quarter_turns: int = 0) -> Interval:
    """Exact range of ``sin(x + quarter_turns·π/2)`` over ``[lo, hi]``.

    The extrema are located with the shifted arguments (a misjudged extremum within rounding of
    an end changes the result by ``O(eps²)``, sin being flat there); the end values are computed
    without the shift.
    """
    shift = quarter_turns * jnp.pi / 2
    two_pi = 2 * jnp.pi
    first_max = jnp.ceil((lo + shift - jnp.pi / 2) / two_pi) * two_pi + jnp.pi / 2
    first_min = jnp.ceil((lo + shift + jnp.pi / 2) / two_pi) * two_pi - jnp.pi / 2
    at = _quarter_turn(quarter_turns, lo), _quarter_turn(quarter_turns, hi)
    low = jnp.where(first_min <= hi + shift, -1.0, jnp.minimum(*at))
    high = jnp.where(first_max <= hi + shift, 1.0, jnp.maximum(*at))
    return Interval(low.astype(at[0].dtype), high.astype(at[0].dtype))


def _shifted_sine(phase_quarter_turns: int):
    """``σ^(j)(x) = sin(x + (q + j)·π/2)`` for sin (``q = 0``) and cos (``q = 1``)."""

    def derivative(order, x):
        return _quarter_turn(phase_quarter_turns + order, x)

    def derivative_range(order, lo, hi):
        return _sin_range(lo, hi, phase_quarter_turns + order)

    def monotone(order, lo, hi):
        # sin is monotone between consecutive points π/2 + nπ.
        shift = (phase_quarter_turns + order) * jnp.pi / 2
        first = jnp.ceil((lo + shift - jnp.pi / 2) / jnp.pi) * jnp.pi + jnp.pi / 2
        return ~(first < hi + shift)

    return derivative, derivative_range, monotone


_SIGMOID_POINTS = (
    (),
    (0.0,),
    (-1.3169578969248168, 1.3169578969248168),
    (-2.2924316695611777, 0.0, 2.2924316695611777),
    (-3.1443184061549303, -0.8426329481293766, 0.8426329481293766, 3.1443184061549303),
    (-3.9360983706738155, -1.513351847292335, 0.0, 1.513351847292335, 3.9360983706738155),
)
_TANH_POINTS = tuple(tuple(p / 2 for p in row) for row in _SIGMOID_POINTS)
_SWISH_POINTS = (
    (-1.2784645427610737,),
    (-2.3993572805154675, 2.3993572805154675),
    (-3.435840993535111, 0.0, 3.435840993535111),
    (-4.429235100557228, -1.0319582417807491, 1.0319582417807491, 4.429235100557228),
    (-5.400818739495216, -1.8197756117250128, 0.0, 1.8197756117250128, 5.400818739495216),
    (
        -6.3619922836816905,
        -2.5062894864027525,
        -0.7177419231465666,
        0.7177419231465666,
        2.5062894864027525,
        6.3619922836816905,
    ),
)
_ERF_POINTS = (
    (),
    (0.0,),
    (-0.7071067811865476, 0.7071067811865476),
    (-1.224744871391589, 0.0, 1.224744871391589),
    (-1.6506801238857844, -0.5246476232752904, 0.5246476232752904, 1.6506801238857844),
    (-2.0201828704560856, -0.9585724646138185, 0.0, 0.9585724646138185, 2.0201828704560856),
)


def _exp_derivative(order, x):
    return jnp.exp(x)


def _log_derivative(order, x):
    if order == 0:
        return jnp.log(x)
    return (-1.0) ** (order - 1) * math.factorial(order - 1) * x ** (-order)


def _log1p_derivative(order, x):
    if order == 0:
        return jnp.log1p(x)
    return _log_derivative(order, 1 + x)


def _expm1_derivative(order, x):
    return jnp.expm1(x) if order == 0 else jnp.exp(x)


def real_power(exponent: float) -> ElementwiseFunction:
    """``x**p`` for a real, non-integer ``p``: all derivatives monotone on ``x > 0``."""

    def derivative(order, x):
        coefficient = math.prod(exponent - i for i in range(order))
        return coefficient * x ** (exponent - order)

    return ElementwiseFunction(
        name=f"x**{exponent}",
        fn=lambda x: x**exponent,
        derivative=derivative,
        critical_points=no_critical_points,
        domain=(0.0, math.inf),
        domain_open_lower=exponent < 1,
    )


def integer_power(exponent: int) -> ElementwiseFunction:
    """``x**n`` for an integer ``n``; for ``n < 0`` the range may not contain 0."""

    def derivative(order, x):
        coefficient = math.prod(exponent - i for i in range(order))
        if coefficient == 0:
            return jnp.zeros_like(x)
        return coefficient * x ** (exponent - order)

    def critical_points(order):
        remaining = exponent - order
        return (0.0,) if remaining >= 2 and remaining % 2 == 0 else ()

    return ElementwiseFunction(
        name=f"x**{exponent}",
        fn=lambda x: x**exponent,
        derivative=derivative,
        critical_points=critical_points,
        excluded_point=0.0 if exponent < 0 else None,
    )


def _softplus_points(order):
    if order == 0:
        return ()
    return _SIGMOID_POINTS[order - 1] if order - 1 < len(_SIGMOID_POINTS) else None


_sin_parts = _shifted_sine(0)
_cos_parts = _shifted_sine(1)

EXP = ElementwiseFunction("exp", jnp.exp, no_critical_points, derivative=_exp_derivative)
LOG = ElementwiseFunction(
    "log",
    jnp.log,
    no_critical_points,
    derivative=_log_derivative,
    domain=(0.0, math.inf),
    domain_open_lower=True,
)
LOG1P = ElementwiseFunction(
    "log1p",
    jnp.log1p,
    no_critical_points,
    derivative=_log1p_derivative,
    domain=(-1.0, math.inf),
    domain_open_lower=True,
)
EXPM1 = ElementwiseFunction("expm1", jnp.expm1, no_critical_points, derivative=_expm1_derivative)


def _logistic_family(name, fn, points, closed_form):
    derivative = derivatives.with_autodiff_fallback(
        closed_form, fn, derivatives.MAX_CLOSED_FORM_ORDER
    )
    return ElementwiseFunction(name, fn, points, derivative=derivative)


SIGMOID = _logistic_family(
    "sigmoid",
    partial(derivatives.sigmoid_derivative, 0),
    critical_point_table(_SIGMOID_POINTS),
    derivatives.sigmoid_derivative,
)
TANH = _logistic_family(
    "tanh",
    partial(derivatives.tanh_derivative, 0),
    critical_point_table(_TANH_POINTS),
    derivatives.tanh_derivative,
)
SOFTPLUS = _logistic_family(
    "softplus",
    partial(derivatives.softplus_derivative, 0),
    _softplus_points,
    derivatives.softplus_derivative,
)
SWISH = _logistic_family(
    "swish",
    partial(derivatives.swish_derivative, 0),
    critical_point_table(_SWISH_POINTS),
    derivatives.swish_derivative,
)
ERF = ElementwiseFunction("erf", jax.scipy.special.erf, critical_point_table(_ERF_POINTS))
# Its own function, not 1 - erf: that cancels completely in the tail (erfc(6) ~ 2e-17).
# Its derivatives are those of erf negated, so the extrema are the same.
ERFC = ElementwiseFunction("erfc", jax.scipy.special.erfc, critical_point_table(_ERF_POINTS))
SIN = ElementwiseFunction(
    "sin",
    jnp.sin,
    no_critical_points,
    derivative=_sin_parts[0],
    derivative_range=_sin_parts[1],
    monotone_derivative=_sin_parts[2],
)
COS = ElementwiseFunction(
    "cos",
    jnp.cos,
    no_critical_points,
    derivative=_cos_parts[0],
    derivative_range=_cos_parts[1],
    monotone_derivative=_cos_parts[2],
)


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
SQRT = real_power(0.5)
RSQRT = real_power(-0.5)
RECIPROCAL = integer_power(-1)

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
