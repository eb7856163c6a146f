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


def sigmoid_derivative(order: int, x: Array) -> Array:
    """``σ^(order)(x)`` for the logistic sigmoid ``σ``."""
    s = jax.nn.sigmoid(x)
    if order == 0:
        return s
    q = jax.nn.sigmoid(-x)
    p = s * q
    if order == 1:
        return p
    if order == 2:
        return p * (q - s)
    if order == 3:
        return p * (1 - 6 * p)
    if order == 4:
        return p * (q - s) * (1 - 12 * p)
    if order == 5:
        return p * (1 - 30 * p + 120 * p * p)
    raise ValueError(f"no closed form for order {order}")


def tanh_derivative(order: int, x: Array) -> Array:
    if order == 0:
        return jnp.tanh(x)
    return 2.0 ** (order + 1) * sigmoid_derivative(order, 2 * x)


def softplus_derivative(order: int, x: Array) -> Array:
    if order == 0:
        return jax.nn.softplus(x)
    return sigmoid_derivative(order - 1, x)


def swish_derivative(order: int, x: Array) -> Array:
    if order == 0:
        return jax.nn.silu(x)
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
