"""Closed-form derivatives of the logistic family: sigmoid, tanh, softplus, swish.

Nested autodiff of these functions re-evaluates exponentials at every order and every point;
the bound pass of a softplus network spent most of its time there. All orders below come from
the two numbers ``s = sigmoid(x)`` and ``q = sigmoid(-x) = 1 - s`` (computed separately, so
``s·q`` keeps its relative accuracy in both tails), which XLA computes once per point.

With ``p = s·q`` (``σ' = p``):

    σ''    = p (q - s)
    σ'''   = p (1 - 6p)
    σ''''  = p (q - s)(1 - 12p)
    σ^(5)  = p (1 - 30p + 120p²)

``tanh^(n)(x) = 2^(n+1) σ^(n)(2x)``, ``softplus^(n) = σ^(n-1)`` and
``swish^(n)(x) = n σ^(n-1)(x) + x σ^(n)(x)``. Orders beyond the table fall back to autodiff.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

MAX_CLOSED_FORM_ORDER = 5


def _logistic_parts(x: Array) -> tuple[Array, Array, Array]:
    """``(σ(x), σ(-x), σ(-x) - σ(x))``, each to full relative accuracy in both tails.

    From ``e = exp(-|x|)`` and ``m = expm1(-|x|)``: ``σ(|x|) = 1/(1+e)``, ``σ(-|x|) = e/(1+e)``
    and ``σ(-|x|) - σ(|x|) = m/(1+e)`` (no cancellation near 0).
    """
    y = -jnp.abs(x)
    e = jnp.exp(y)
    big = 1 / (1 + e)
    small = e * big
    difference = jnp.sign(x) * (_expm1_from_exp(y, e) * big)
    positive = x >= 0
    return jnp.where(positive, big, small), jnp.where(positive, small, big), difference


def _expm1_from_exp(y: Array, e: Array) -> Array:
    """``expm1(y)`` for ``y <= 0`` given ``e = exp(y)``, without a second transcendental.

    Below ``-1/2``, ``e - 1`` is exact up to ``e``'s own rounding (``|e - 1| >= 0.39``). Above,
    the Taylor series to ``y^n/n!`` with ``0.5^n/(n+1)! < eps``. Why not ``jnp.expm1``: XLA's CPU
    fusion does not duplicate a transcendental into two consumers, so an ``expm1`` shared by the
    bound's terms is written out as a whole array (about 10 ms per 10⁷ elements on 2 CPU
    cores); this polynomial fuses into each consumer instead.
    """
    terms = 15 if jnp.finfo(jnp.result_type(y)).bits > 32 else 8
    small = jnp.maximum(y, -0.5)
    series = jnp.ones_like(small)
    for n in range(terms, 1, -1):
        series = 1 + series * small / n
    return jnp.where(y < -0.5, e - 1, small * series)


def sigmoid_derivative(order: int, x: Array) -> Array:
    """``σ^(order)(x)`` for the logistic sigmoid ``σ``."""
    s, q, q_minus_s = _logistic_parts(x)
    if order == 0:
        return s
    p = s * q
    if order == 1:
        return p
    if order == 2:
        return p * q_minus_s
    if order == 3:
        return p * (1 - 6 * p)
    if order == 4:
        return p * q_minus_s * (1 - 12 * p)
    if order == 5:
        return p * (1 - 30 * p + 120 * p * p)
    raise ValueError(f"no closed form for order {order}")


def tanh_derivative(order: int, x: Array) -> Array:
    if order == 0:
        # tanh(x) = σ(2x) - σ(-2x): the same exp and expm1 as the derivatives at 2x.
        return -_logistic_parts(2 * x)[2]
    return 2.0 ** (order + 1) * sigmoid_derivative(order, 2 * x)


def softplus_derivative(order: int, x: Array) -> Array:
    if order == 0:
        return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))
    return sigmoid_derivative(order - 1, x)


def swish_derivative(order: int, x: Array) -> Array:
    if order == 0:
        return x * sigmoid_derivative(0, x)
    return order * sigmoid_derivative(order - 1, x) + x * sigmoid_derivative(order, x)


def with_autodiff_fallback(closed_form, fn, max_order: int):
    """``closed_form(order, x)`` up to ``max_order``, nested autodiff of ``fn`` beyond it."""

    def derivative(order: int, x: Array) -> Array:
        if order <= max_order:
            return closed_form(order, x)
        result = fn
        for _ in range(order):
            result = _differentiate(result)
        return result(x)

    return derivative


def _differentiate(fn):
    def derivative(x):
        return jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]

    return derivative
