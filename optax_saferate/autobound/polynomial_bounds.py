""":class:`TaylorBounds`, what :func:`~optax_saferate.autobound.taylor_bounds` returns: the
polynomial bounds of ``f`` over a trust region, and their evaluation at a point (for a scalar
or a 1-D vector ``x0``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array


class TaylorBounds(NamedTuple):
    """Polynomial bounds of ``f`` over a trust region (a pytree; returned from ``jit``).

    ``f(x) ∈ c_0 + c_1·(x - x0) + … + c_{k-1}·(x - x0)^{k-1} + [lo, hi]·(x - x0)^k`` for every
    ``x`` in ``trust_region``.

    Attributes:
      coefficients: ``(c_0, …, c_{k-1}, (lo, hi))``.
      x0: the reference point.
      trust_region: ``(a, b)`` with ``a <= x0 <= b`` (elementwise for a vector ``x0``).

    For a vector ``x0`` the powers ``(x - x0)^i`` are outer powers, contracted with ``c_i``, and
    the interval term is taken at its upper (lower) end term by term.
    """

    coefficients: tuple
    x0: Array
    trust_region: tuple[Array, Array]

    @property
    def degree(self) -> int:
        return len(self.coefficients) - 1

    def final_interval(self) -> tuple[Array, Array]:
        """The interval coefficient of the highest degree."""
        return self.coefficients[-1]

    def _evaluate(self, x, upper: bool):
        if jnp.ndim(self.x0) == 1:
            return _evaluate_vector(self, x, upper)
        t = jnp.asarray(x) - self.x0
        value = jnp.zeros_like(self.coefficients[0] * t)
        power = jnp.ones_like(t)
        for c in self.coefficients[:-1]:
            value = value + c * power
            power = power * t
        lo, hi = self.coefficients[-1]
        # At x = x0 the remainder term is 0 even when its interval is unbounded.
        ends = tuple(jnp.where(power == 0, 0.0, e * power) for e in (lo, hi))
        return value + (jnp.maximum(*ends) if upper else jnp.minimum(*ends))

    def lower(self, x) -> Array:
        """The lower bounding polynomial at ``x`` (in the trust region)."""
        return self._evaluate(x, upper=False)

    def upper(self, x) -> Array:
        """The upper bounding polynomial at ``x`` (in the trust region)."""
        return self._evaluate(x, upper=True)


def _evaluate_vector(bounds: TaylorBounds, x, upper: bool) -> Array:
    """``Σ_i c_i[δ, …, δ] + [lo, hi][δ, …, δ]`` with the interval term at its upper/lower end."""
    delta = jnp.asarray(x) - bounds.x0
    value = None
    power = jnp.ones((), delta.dtype)  # δ^{⊗i}, shape (n,)*i
    for c in bounds.coefficients[:-1]:
        term = jnp.tensordot(c, power, axes=power.ndim)
        value = term if value is None else value + term
        power = jnp.multiply.outer(power, delta)
    lo, hi = bounds.coefficients[-1]
    power = jnp.reshape(power, (1,) * (jnp.ndim(lo) - power.ndim) + power.shape)
    # Each term R_J·δ^J at its own end (δ^J = 0 contributes 0 even where R_J is unbounded).
    ends = [jnp.where(power == 0, 0.0, e * power) for e in (lo, hi)]
    chosen = jnp.maximum(*ends) if upper else jnp.minimum(*ends)
    degree = len(bounds.coefficients) - 1  # the last `degree` axes index δ^J
    return value + jnp.sum(chosen, axis=tuple(range(chosen.ndim - degree, chosen.ndim)))
