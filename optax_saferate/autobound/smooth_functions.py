"""The catalogue of smooth elementwise functions, each an
:class:`~optax_saferate.autobound.elementwise.ElementwiseFunction`: exp, log, log1p, expm1, the
logistic family (sigmoid, tanh, softplus, swish), erf, erfc, sin, cos and real and integer
powers (sqrt, rsqrt, the reciprocal).

The functions that need the location of the extrema of their derivatives carry them as constants
(computed by ``scripts/critical_points.py``, checked by the tests).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import Array

from optax_saferate.autobound import derivatives
from optax_saferate.autobound.elementwise import ElementwiseFunction
from optax_saferate.autobound.elementwise import critical_point_table
from optax_saferate.autobound.elementwise import no_critical_points
from optax_saferate.autobound.intervals import Interval

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

SQRT = real_power(0.5)
RSQRT = real_power(-0.5)
RECIPROCAL = integer_power(-1)
