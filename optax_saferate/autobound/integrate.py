"""Verified integration: an interval that contains ``∫_a^b f``, from AutoBound's enclosures.

On a cell ``[l, r]`` with midpoint ``m`` the degree-``k`` enclosure gives, for ``t = x - m``,
``f(m + t) ∈ Σ_{i<k} c_i t^i + [lo, hi]·t^k``. Integrating over ``t ∈ [h_l, h_r]`` (``h_l <= 0 <=
h_r``) with ``P = h_r^{k+1}/(k+1)`` and ``N = |h_l|^{k+1}/(k+1)``:

    ∫ Σ c_i t^i = Σ c_i (h_r^{i+1} - h_l^{i+1})/(i+1),
    ∫ R·t^k ∈ [lo·(P + N), hi·(P + N)]            (k even: t^k >= 0),
    ∫ R·t^k ∈ [lo·P - hi·N, hi·P - lo·N]          (k odd: t^k < 0 left of m).

Cells are bisected adaptively, the cells with the largest gap (upper - lower) first.

What is rigorous and what is not: the enclosure maths (the engine's), the exact integration
above, the widening of a cell's trust region where ``l - m`` or ``r - m`` is not exact in
float64, the rounding of this module's per-cell arithmetic (covered by an a-priori bound of
``_INTEGRATION_ULPS`` eps times the cell's term magnitudes) and the final sum (``math.fsum``,
rounded outward) are rigorous. NOT rigorous: the engine evaluates ``f``'s coefficients in
round-to-nearest float64 without directed rounding, and the elementary functions are assumed
accurate to a few ulps; this is covered by a further allowance of ``_ENGINE_ULPS`` eps times the
same magnitudes, which is an assumption, not a proof (it can fail if ``f``'s evaluation cancels
catastrophically, e.g. a tiny difference of huge terms).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_saferate.autobound.interpreter import taylor_bounds

_INTEGRATION_ULPS = 32.0  # per-cell arithmetic: ~15 rounded operations at most, with margin
_ENGINE_ULPS = 64.0  # assumed error of the engine's float64 coefficients (see module docstring)
_CHUNK = 256  # cells per compiled call: one compilation per (f, degree)


class IntegralBounds(NamedTuple):
    """An interval ``[lower, upper]`` that contains ``∫_a^b f`` (see the module docstring).

    Attributes:
      lower, upper: the ends of the interval.
      cells: ``(n, 2)`` array of the cells' ends, sorted.
      cell_lower, cell_upper: the per-cell bounds of the integral.
      reached: whether ``upper - lower <= width``.
      stop_reason: ``"width"``, ``"max_cells"`` or ``"resolution"`` (a cell could not be split).
    """

    lower: float
    upper: float
    cells: np.ndarray
    cell_lower: np.ndarray
    cell_upper: np.ndarray
    reached: bool
    stop_reason: str

    @property
    def width(self) -> float:
        return self.upper - self.lower


@functools.lru_cache(maxsize=32)
def _cell_bounder(f: Callable, degree: int):
    bound = taylor_bounds(f, degree)
    eps = float(np.finfo(np.float64).eps)
    tiny = float(np.finfo(np.float64).tiny)

    def one_cell(lo_wide, m, hi_wide, h_l, h_r):
        b = bound(m, (lo_wide, hi_wide))
        *coefficients, (r_lo, r_hi) = b.coefficients
        value, magnitude = 0.0, 0.0
        big = jnp.maximum(-h_l, h_r)
        for i, c in enumerate(coefficients):
            value = value + c * (h_r ** (i + 1) - h_l ** (i + 1)) / (i + 1)
            magnitude = magnitude + jnp.abs(c) * big**i
        k = degree
        pos, neg = h_r ** (k + 1) / (k + 1), jnp.abs(h_l) ** (k + 1) / (k + 1)

        def times(x, y):  # 0·inf = 0: an infinite end means "any finite value"
            return jnp.where(y == 0, 0.0, x * y)

        if k % 2 == 0:
            rem = (times(r_lo, pos + neg), times(r_hi, pos + neg))
        else:
            rem = (times(r_lo, pos) - times(r_hi, neg), times(r_hi, pos) - times(r_lo, neg))
        magnitude = 2 * big * (magnitude + jnp.maximum(jnp.abs(r_lo), jnp.abs(r_hi)) * big**k)
        allowance = (_INTEGRATION_ULPS + _ENGINE_ULPS) * eps * magnitude + 64 * tiny
        lower, upper = value + rem[0] - allowance, value + rem[1] + allowance
        bad = jnp.isnan(lower) | jnp.isnan(upper)
        return jnp.where(bad, -jnp.inf, lower), jnp.where(bad, jnp.inf, upper)

    return jax.jit(jax.vmap(one_cell))


def _bound_cells(f, degree: int, left: np.ndarray, right: np.ndarray):
    mid = left + (right - left) / 2
    h_l, h_r = left - mid, right - mid
    # Where l - m (r - m) is inexact the engine's rounded offset could miss a sliver of the
    # cell; a region wider by 4 eps (|l| + |m|) makes its rounded offset reach past the end.
    eps = np.finfo(np.float64).eps
    exact_l = (h_l + mid == left) & (left - h_l == mid)
    exact_r = (h_r + mid == right) & (right - h_r == mid)
    lo_wide = np.where(
        exact_l, left, np.nextafter(left - 4 * eps * (abs(left) + abs(mid)), -np.inf)
    )
    hi_wide = np.where(
        exact_r, right, np.nextafter(right + 4 * eps * (abs(right) + abs(mid)), np.inf)
    )
    run = _cell_bounder(f, degree)
    n = len(left)
    padded = -(-n // _CHUNK) * _CHUNK
    args = [np.pad(x, (0, padded - n), mode="edge") for x in (lo_wide, mid, hi_wide, h_l, h_r)]
    lows, highs = [], []
    for start in range(0, padded, _CHUNK):
        lo, hi = run(*(jnp.asarray(x[start : start + _CHUNK]) for x in args))
        lows.append(np.asarray(lo))
        highs.append(np.asarray(hi))
    return np.concatenate(lows)[:n], np.concatenate(highs)[:n]


def integrate(
    f: Callable,
    a: float,
    b: float,
    *,
    width: float,
    degree: int = 2,
    max_cells: int = 4096,
    initial_cells: int = 1,
) -> IntegralBounds:
    """An interval guaranteed (see the module docstring) to contain ``∫_a^b f(x) dx``.

    Starts from ``initial_cells`` equal cells and repeatedly bisects the cells with the largest
    gap (those that hold at least half of the total gap) until ``upper - lower <= width`` or
    ``max_cells`` is reached (``initial_cells == max_cells`` is a fixed uniform grid). Runs in
    float64 (``jax.enable_x64`` is switched on inside, so the caller's setting is left alone).

    Args:
      f: a scalar function written with primitives that :func:`taylor_bounds` supports.
      a, b: the ends, ``a <= b``.
      width: the requested width of the interval, ``> 0``.
      degree: the degree of the enclosures, 1 to 4.
      max_cells: the cell budget.
      initial_cells: the number of equal cells to start from.

    Returns:
      An :class:`IntegralBounds`.

    Raises:
      ValueError: bad input (``a > b``, NaN, degree outside 1-4, ``width <= 0``).

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_saferate import autobound as ab
      >>> r = ab.integrate(lambda x: 1.5 * jnp.exp(3 * x) - 25 * x**2, 0.0, 1.0, width=1e-6)
      >>> r.reached, r.lower <= 1.2094351282604983 <= r.upper, round(r.upper, 5)
      (True, True, 1.20944)

    References:
      Streeter & Dillon, "Automatically Bounding the Taylor Remainder Series", arXiv:2212.11429.
    """
    a, b, width = float(a), float(b), float(width)
    if not (math.isfinite(a) and math.isfinite(b)) or a > b:
        raise ValueError(f"integrate needs finite ends with a <= b, got a={a!r}, b={b!r}")
    if not isinstance(degree, int) or not 1 <= degree <= 4:
        raise ValueError(f"degree must be an integer in 1..4, got {degree!r}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    if initial_cells < 1 or max_cells < initial_cells:
        raise ValueError("need 1 <= initial_cells <= max_cells")
    if a == b:
        empty = np.zeros(0)
        return IntegralBounds(0.0, 0.0, np.array([[a, b]]), empty, empty, True, "width")
    with jax.enable_x64(True):
        ends = np.linspace(a, b, initial_cells + 1)
        left, right = ends[:-1], ends[1:]
        low, high = _bound_cells(f, degree, left, right)
        while True:
            total_low, total_high = _outward_sum(low, high)
            if total_high - total_low <= width:
                reason = "width"
                break
            if len(left) >= max_cells:
                reason = "max_cells"
                break
            gap = high - low
            order = np.argsort(-gap, kind="stable")
            unbounded = int(np.sum(~np.isfinite(gap)))
            if unbounded:  # cells with no finite bound hold all of the gap: split every one
                count = unbounded
            else:
                share = np.cumsum(gap[order])
                count = int(np.searchsorted(share, share[-1] / 2)) + 1
            count = min(count, max_cells - len(left))
            chosen = order[:count]
            mid = left[chosen] + (right[chosen] - left[chosen]) / 2
            splittable = (mid > left[chosen]) & (mid < right[chosen])
            if not splittable.any():
                reason = "resolution"
                break
            chosen, mid = chosen[splittable], mid[splittable]
            new_left = np.concatenate([left[chosen], mid])
            new_right = np.concatenate([mid, right[chosen]])
            new_low, new_high = _bound_cells(f, degree, new_left, new_right)
            keep = np.ones(len(left), bool)
            keep[chosen] = False
            left = np.concatenate([left[keep], new_left])
            right = np.concatenate([right[keep], new_right])
            low = np.concatenate([low[keep], new_low])
            high = np.concatenate([high[keep], new_high])
    order = np.argsort(left)
    cells = np.stack([left[order], right[order]], axis=1)
    return IntegralBounds(
        total_low, total_high, cells, low[order], high[order], reason == "width", reason
    )


def _outward_sum(low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """The sums of the cell bounds, correctly rounded (``math.fsum``) and then moved outward."""
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return -math.inf, math.inf
    return (
        math.nextafter(math.fsum(low.tolist()), -math.inf),
        math.nextafter(math.fsum(high.tolist()), math.inf),
    )
