r"""Universal majorization-minimization: steps from an AutoBound quadratic majorizer on a box.

Each step bounds ``f(x + t)`` over the box ``|t_i| <= r_i`` with a degree-2 enclosure,

    f(x + t) <= f(x) + g·t + Σ_ij max(H_lo_ij·t_i·t_j, H_hi_ij·t_i·t_j)      (|t_i| <= r_i),

turns the interval curvature ``[H_lo, H_hi]`` into quadratics that majorize it on the box (a
separable one, :func:`majorizer_curvature`, minimised on the box in closed form by
:func:`minimize_on_box`; and a coupled one, :func:`majorizer_matrix`, whose Newton step is
scaled into the box), and moves to the step with the lower majorizer value (:func:`mm_step`).
A majorizer equals ``f(x)`` at ``t = 0``, so the loss never goes up; the box then adapts to the
step as SafeRate's trust region does. There is no learning rate: the only setting is the first
box's size.

Two faces: :func:`minimize` (a loop that returns the iterates, their values, each step's
majorizer and why it stopped: what one wants for a small problem) and :func:`scale_by_mm` (an
optax transformation over a small pytree of parameters, for a training loop that already
exists). Both run the same jitted step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from jax.flatten_util import ravel_pytree

from optax_saferate.autobound import taylor_bounds
from optax_saferate.saferate import _accepted_arguments

# The box grows (doubles) along a coordinate whose step reached this fraction of its edge.
_EDGE = 1 - 1e-3


def majorizer_curvature(hessian_lo: Array, hessian_hi: Array) -> Array:
    r"""The diagonal ``d`` of a separable quadratic majorizing an interval quadratic form.

    For every ``t`` and every ``H`` with ``H_lo <= H <= H_hi`` (elementwise, ``n × n``),

        Σ_ij max(H_lo_ij·t_i·t_j, H_hi_ij·t_i·t_j) <= Σ_i d_i·t_i²,
        d_i = H_hi_ii + ½·Σ_{j≠i} (m_ij + m_ji),      m_ij = max(|H_lo_ij|, |H_hi_ij|).

    Proof: a diagonal term has ``t_i² >= 0``, so its larger end is ``H_hi_ii·t_i²`` (whatever
    the sign of ``H_hi_ii``). An off-diagonal term is at most ``m_ij·|t_i·t_j|``, and
    ``|t_i·t_j| <= (t_i² + t_j²)/2`` (from ``(|t_i| - |t_j|)² >= 0``). Summing over the ordered
    pairs ``i ≠ j``, the ``t_i²`` collects ``m_ij/2`` from ``(i, j)`` and ``m_ji/2`` from
    ``(j, i)``. The bound is tight along a coordinate axis of a diagonal interval Hessian; with
    off-diagonal terms it pays their absolute values, as Gershgorin's theorem does.

    Args:
      hessian_lo: ``(n, n)``, the lower ends of the interval coefficient of ``t_i·t_j``.
      hessian_hi: ``(n, n)``, the upper ends.

    Returns:
      ``d`` of shape ``(n,)``; an entry may be negative (concave along that axis) or non-finite
      (the enclosure is unbounded).

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_saferate import mm
      >>> mm.majorizer_curvature(jnp.array([[1.0, -0.5], [-0.5, 2.0]]), jnp.array([[1.5, 0.25],
      ...     [0.25, 3.0]])).tolist()
      [2.0, 3.5]
    """
    magnitude = jnp.maximum(jnp.abs(hessian_lo), jnp.abs(hessian_hi))
    off_diagonal = jnp.where(jnp.eye(magnitude.shape[0], dtype=bool), 0.0, magnitude)
    spread = (jnp.sum(off_diagonal, axis=0) + jnp.sum(off_diagonal, axis=1)) / 2
    return jnp.diagonal(hessian_hi) + spread


def majorizer_matrix(hessian_lo: Array, hessian_hi: Array) -> Array:
    r"""A symmetric ``M`` with ``tᵀ M t`` majorizing an interval quadratic form, for every ``t``.

    With the midpoint ``C = (H_lo + H_hi)/2`` and radius ``ρ = (H_hi - H_lo)/2``,

        Σ_ij max(H_lo_ij·t_i·t_j, H_hi_ij·t_i·t_j) = tᵀ C t + Σ_ij ρ_ij·|t_i·t_j|
                                                   <= tᵀ (sym(C) + diag(s)) t,
        s_i = ρ_ii + ½·Σ_{j≠i} (ρ_ij + ρ_ji),      sym(C) = (C + Cᵀ)/2.

    (``max(a·p, b·p) = (a+b)/2·p + (b-a)/2·|p|``, then ``|t_i t_j| <= (t_i² + t_j²)/2`` as in
    :func:`majorizer_curvature`.) Only the intervals' widths go to the diagonal, so ``M`` keeps
    the coupling between coordinates that the diagonal majorizer pays for in absolute value:
    for a narrow interval Hessian it is close to the Hessian itself.

    Args:
      hessian_lo: ``(n, n)``, the lower ends of the interval coefficient of ``t_i·t_j``.
      hessian_hi: ``(n, n)``, the upper ends.

    Returns:
      ``M`` of shape ``(n, n)``.
    """
    centre = (hessian_lo + hessian_hi) / 2
    radius = (hessian_hi - hessian_lo) / 2
    off_diagonal = jnp.where(jnp.eye(radius.shape[0], dtype=bool), 0.0, radius)
    spread = jnp.diagonal(radius) + (jnp.sum(off_diagonal, axis=0) + jnp.sum(off_diagonal, 1)) / 2
    return (centre + centre.T) / 2 + jnp.diag(spread)


def _newton_on_box(gradient: Array, matrix: Array, radius: Array) -> Array:
    """``α·t_N``: the minimiser ``t_N = -M⁻¹g/2`` of ``g·t + tᵀMt`` (``M`` positive definite)
    scaled back into the box; NaN where ``M`` is not positive definite.

    Along the segment from 0 to ``t_N`` the convex quadratic decreases, so the scaled step
    still decreases it (it is not the box's minimiser when ``α < 1``, only a descent step).
    """
    factor = jax.scipy.linalg.cho_factor(matrix)
    newton = -jax.scipy.linalg.cho_solve(factor, gradient) / 2
    reach = jnp.max(jnp.abs(newton) / radius)
    # The clip only removes rounding: |newton_i| / reach <= r_i.
    return jnp.clip(newton / jnp.maximum(reach, 1.0), -radius, radius)


def minimize_on_box(gradient: Array, curvature: Array, radius: Array) -> Array:
    r"""``argmin_{|t_i| <= r_i} Σ_i g_i·t_i + d_i·t_i²`` (closed form, coordinate by coordinate).

    The objective is separable, so each coordinate is a 1-D problem: for ``d_i > 0`` its
    minimiser is the vertex ``-g_i/(2 d_i)`` clipped to ``[-r_i, r_i]``; for ``d_i <= 0`` it is
    concave (or linear) and its minimum is at an end, the one downhill of ``g_i`` (``+r_i`` when
    ``g_i = 0 > d_i``), unless that end does not decrease it (``g_i = d_i = 0``: ``t_i = 0``).

    Args:
      gradient: ``g``, shape ``(n,)``.
      curvature: ``d``, shape ``(n,)`` (finite).
      radius: ``r >= 0``, shape ``(n,)``.

    Returns:
      ``t`` of shape ``(n,)``, with ``Σ g·t + d·t² <= 0``.
    """
    safe = jnp.where(curvature > 0, curvature, 1.0)
    vertex = jnp.clip(-gradient / (2 * safe), -radius, radius)
    end = jnp.where(gradient > 0, -radius, radius)
    at_end = gradient * end + curvature * end**2
    edge = jnp.where(at_end < 0, end, jnp.zeros_like(end))
    return jnp.where(curvature > 0, vertex, edge)


class MMStep(NamedTuple):
    """One MM step from ``x`` over the box ``|t_i| <= radius_i`` (all arrays).

    Attributes:
      value: ``f(x)``.
      gradient: ``∇f(x)``, shape ``(n,)``.
      majorizer: ``Q``, shape ``(n, n)``: ``f(x + t) <= f(x) + g·t + tᵀQt`` on the box; the
        diagonal majorizer's ``diag(d)`` or :func:`majorizer_matrix`'s ``M``, whichever step
        promised the larger decrease.
      step: ``t``; zeros when not ``accepted``.
      predicted_decrease: ``-(g·t + tᵀQt) >= 0`` for the step taken (0 when refused).
      new_value: ``f(x + t)`` (``f(x)`` when refused).
      accepted: the bound was finite, promised a decrease, and ``f(x + t) <= f(x)`` held.
      next_radius: the box for the next step.
    """

    value: Array
    gradient: Array
    majorizer: Array
    step: Array
    predicted_decrease: Array
    new_value: Array
    accepted: Array
    next_radius: Array


def _bound(fn: Callable[[Array], Array], x: Array, radius: Array):
    """``(f(x), ∇f(x), H_lo, H_hi)``: the degree-2 enclosure over the box ``x ± radius``.

    For ``n = 1`` the scalar engine bounds ``s -> f([s])`` over ``[x - r, x + r]``: its remainder
    is sharp (the range of the remainder ratio, not of ``f''/2``) and ``f`` may have kinks,
    where the vector engine's classical remainder is wider (tests/test_mm.py measures it) and
    needs a smooth ``f``.
    """
    lo, hi = x - radius, x + radius
    if x.shape[0] == 1:
        scalar = taylor_bounds(lambda s: fn(jnp.reshape(s, (1,))), 2)
        value, slope, ends = scalar(x[0], (lo[0], hi[0])).coefficients
        return value, jnp.reshape(slope, (1,)), *(jnp.reshape(e, (1, 1)) for e in ends)
    value, gradient, (hessian_lo, hessian_hi) = taylor_bounds(fn, 2)(x, (lo, hi)).coefficients
    return value, gradient, hessian_lo, hessian_hi


def _quadratic(gradient: Array, matrix: Array, step: Array) -> Array:
    return gradient @ step + step @ (matrix @ step)


def mm_step(fn: Callable[[Array], Array], x: Array, radius: Array) -> MMStep:
    r"""One majorization-minimization step of ``fn`` from ``x`` over the box ``x ± radius``.

    With ``(f0, g, [H_lo, H_hi])`` from the enclosure (see the module docstring), two
    quadratics majorize ``f(x + t) - f0`` on the box and give a step each:

    * the separable ``g·t + Σ d_i t_i²`` (:func:`majorizer_curvature`), minimised on the box in
      closed form (:func:`minimize_on_box`);
    * ``g·t + tᵀMt`` (:func:`majorizer_matrix`), when ``M`` is positive definite: its
      minimiser ``-M⁻¹g/2``, scaled back into the box if it lies outside (a descent step for
      that quadratic; it keeps the coupling between coordinates, which the separable one pays
      for: on Rosenbrock's valley it is the difference between a Newton-like and a
      gradient-like step).

    The step is the one with the lower majorizer value ``q``; since its majorizer holds on the
    box, ``f(x + t) <= f0 + q <= f0``. It is taken when the bound is finite, ``q < 0``, and
    ``f(x + t) <= f0`` holds when evaluated (a guard against rounding; one more evaluation of
    ``fn``). Then the box adapts, coordinate by coordinate:

    * a coordinate whose step reached the box's edge doubles its radius (the majorizer's
      minimiser may lie beyond);
    * one whose step stayed inside moves its radius to ``sqrt(|t_i|·r_i)``, at least ``r_i/4``:
      towards the box that the step just fits, where the enclosure is tightest for it;
    * a refused step (non-finite bound, no decrease) quarters every radius.

    No radius shrinks below the rounding unit of its coordinate (``eps·max(|x_i|, 1)``): a
    smaller box could not move ``x`` at all.

    Args:
      fn: the scalar function of a 1-D vector to minimise; smooth if ``n > 1`` (checked by
        :func:`~optax_saferate.autobound.taylor_bounds`).
      x: the current point, shape ``(n,)``, floating point.
      radius: the box's half-widths, shape ``(n,)``.

    Returns:
      An :class:`MMStep`.
    """
    value, gradient, hessian_lo, hessian_hi = _bound(fn, x, radius)
    finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(gradient))
    finite &= jnp.all(jnp.isfinite(hessian_lo) & jnp.isfinite(hessian_hi))
    gradient_or_zero = jnp.where(finite, gradient, 0.0)
    hessian_lo, hessian_hi = (jnp.where(finite, h, 1.0) for h in (hessian_lo, hessian_hi))
    curvature = majorizer_curvature(hessian_lo, hessian_hi)
    separable = jnp.diag(curvature)
    coupled = majorizer_matrix(hessian_lo, hessian_hi)
    candidates = (
        (separable, minimize_on_box(gradient_or_zero, curvature, radius)),
        (coupled, _newton_on_box(gradient_or_zero, coupled, radius)),
    )
    (q_separable, q_coupled) = (_quadratic(gradient_or_zero, m, t) for m, t in candidates)
    use_coupled = q_coupled < q_separable  # False when M is not positive definite (NaN)
    majorizer = jnp.where(use_coupled, coupled, separable)
    step = jnp.where(use_coupled, candidates[1][1], candidates[0][1])
    decrease = -jnp.where(use_coupled, q_coupled, q_separable)
    new_value = fn(x + step)
    accepted = finite & (decrease > 0) & (new_value <= value)
    zero = jnp.zeros_like(value)
    step = jnp.where(accepted, step, jnp.zeros_like(step))
    at_edge = jnp.abs(step) >= _EDGE * radius
    fitted = jnp.sqrt(jnp.maximum(jnp.abs(step), radius / 16) * radius)
    grown = jnp.where(at_edge, 2 * radius, fitted)
    next_radius = jnp.where(accepted, grown, radius / 4)
    floor = jnp.finfo(x.dtype).eps * jnp.maximum(jnp.abs(x + step), 1.0)
    return MMStep(
        value=value,
        gradient=gradient,
        majorizer=majorizer,
        step=step,
        predicted_decrease=jnp.where(accepted, decrease, zero),
        new_value=jnp.where(accepted, new_value, value),
        accepted=accepted,
        next_radius=jnp.maximum(next_radius, floor),
    )


def _check_function(fn, x: Array) -> None:
    out = jax.eval_shape(fn, x)
    if out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(
            "MM needs fn to return a scalar float (shape ()), but it returned shape "
            f"{out.shape} and dtype {out.dtype}; reduce it, e.g. with jnp.sum or jnp.mean."
        )


def _as_vector(x0) -> Array:
    x = jnp.asarray(x0)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(
            f"minimize needs a non-empty 1-D vector x0, got shape {x.shape}; flatten a pytree "
            "with jax.flatten_util.ravel_pytree (or use scale_by_mm, which does)."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _initial_radius(initial_radius: float, x: Array) -> Array:
    if not (isinstance(initial_radius, int | float) and math.isfinite(initial_radius)) or (
        initial_radius <= 0
    ):
        raise ValueError(f"initial_radius must be a positive finite number, got {initial_radius!r}")
    return jnp.full(x.shape, initial_radius, x.dtype)


# One compilation per function (by identity) and shape: calling minimize again with the same fn
# reuses it.
_jitted_step = jax.jit(mm_step, static_argnums=0)


class MMResult(NamedTuple):
    """What :func:`minimize` returns.

    Attributes:
      x: the last iterate.
      value: ``f(x)``.
      iterates: every point visited, shape ``(k + 1, n)``, ``iterates[0] = x0``.
      values: ``f`` at each, shape ``(k + 1,)``; non-increasing.
      majorizers: each step's ``Q``, shape ``(k, n, n)``: step ``j`` bounds
        ``f(iterates[j] + t) <= values[j] + gradients[j]·t + tᵀ majorizers[j] t`` on its box
        (see :class:`MMStep`).
      gradients: ``∇f(iterates[j])``, shape ``(k, n)``.
      radii: each step's box half-widths, shape ``(k, n)``.
      accepted: whether each step moved, shape ``(k,)``.
      reason: why it stopped: ``"gradient"`` (``max|∇f| <= gtol``), ``"step"`` (a step inside
        its box moved no coordinate by more than ``xtol·max(|x_i|, 1)``), ``"stalled"`` (a
        refused step with every radius at its floor) or ``"max_iterations"``.
      iterations: the number of steps ``k`` (each is one bound pass and one evaluation of f).
    """

    x: Array
    value: Array
    iterates: np.ndarray
    values: np.ndarray
    majorizers: np.ndarray
    gradients: np.ndarray
    radii: np.ndarray
    accepted: np.ndarray
    reason: str
    iterations: int


def minimize(
    fn: Callable[[Array], Array],
    x0,
    *,
    initial_radius: float = 1.0,
    max_iterations: int = 500,
    gtol: float = 1e-6,
    xtol: float = 1e-10,
) -> MMResult:
    r"""Minimise ``fn`` over a small vector by universal majorization-minimization.

    Each iteration is one :func:`mm_step` (one jitted function, compiled once): a degree-2
    AutoBound enclosure of ``fn`` over the box ``x ± r``, the quadratic majorizers
    ``f(x) + g·t + tᵀQt`` it implies on the box, the step to the better one's minimiser on the
    box, and the box's adaptation. The
    values never increase: ``f(x_{k+1}) <= f(x_k)`` holds exactly (it is checked), and follows
    from the enclosure. For ``n = 1`` the scalar engine's sharp remainder is used.

    Args:
      fn: a scalar function of a 1-D vector (n up to about 100: the enclosure carries ``n × n``
        interval Hessians), written with the primitives AutoBound supports; smooth if ``n > 1``.
      x0: the starting point, shape ``(n,)``.
      initial_radius: the first box's half-width along every coordinate (it adapts from there;
        a poor choice costs a few steps, not the guarantee).
      max_iterations: the most steps to take.
      gtol: stop when ``max_i |∂f/∂x_i| <= gtol`` at the current point.
      xtol: stop after a step that stayed inside its box and moved no coordinate by more than
        ``xtol·max(|x_i|, 1)``.

    Returns:
      An :class:`MMResult` (the iterates, values, each step's majorizer and box, and the reason).

    Raises:
      ValueError: ``x0`` is not a non-empty 1-D vector, or a setting is out of range.
      TypeError: ``fn`` does not return a scalar float.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_saferate import mm
      >>> result = mm.minimize(lambda x: jnp.sum(jnp.exp(x) - 2 * x), jnp.zeros(2))
      >>> result.reason, [round(v, 6) for v in result.x.tolist()]
      ('gradient', [0.693147, 0.693147])

    References:
      Streeter & Dillon, "Universal Majorization-Minimization Algorithms", arXiv:2308.00190;
      "Automatically Bounding the Taylor Remainder Series", arXiv:2212.11429.
    """
    x = _as_vector(x0)
    _check_function(fn, x)
    radius = _initial_radius(initial_radius, x)
    if not isinstance(max_iterations, int) or max_iterations < 0:
        raise ValueError(f"max_iterations must be a non-negative int, got {max_iterations!r}")
    if gtol < 0 or xtol < 0:
        raise ValueError(f"gtol and xtol must be >= 0, got gtol={gtol!r}, xtol={xtol!r}")
    iterates, values = [np.asarray(x)], []
    records: dict[str, list] = {"majorizers": [], "gradients": [], "radii": [], "accepted": []}
    reason = "max_iterations"
    eps = float(jnp.finfo(x.dtype).eps)
    for _ in range(max_iterations):
        out = jax.device_get(_jitted_step(fn, x, radius))
        if not values:
            values.append(out.value)
        if np.max(np.abs(out.gradient)) <= gtol:
            reason = "gradient"
            break
        items = (out.majorizer, out.gradient, radius, out.accepted)
        for key, item in zip(records, items, strict=True):
            records[key].append(np.asarray(item))
        x = x + out.step
        iterates.append(np.asarray(x))
        values.append(out.new_value)
        inside = np.all(np.abs(out.step) < _EDGE * np.asarray(radius))
        small = np.all(np.abs(out.step) <= xtol * np.maximum(np.abs(iterates[-1]), 1.0))
        floor = eps * np.maximum(np.abs(iterates[-1]), 1.0)
        radius = out.next_radius
        if out.accepted and inside and small:
            reason = "step"
            break
        if not out.accepted and np.all(np.asarray(radius) <= floor):
            reason = "stalled"
            break
    if not values:  # max_iterations == 0
        values.append(np.asarray(fn(x)))
    n, dtype = x.shape[0], np.dtype(x.dtype)

    def stacked(key, shape, kind):
        return np.asarray(records[key], kind).reshape((-1, *shape))

    return MMResult(
        x=x,
        value=jnp.asarray(values[-1]),
        iterates=np.stack(iterates),
        values=np.asarray(values, dtype),
        majorizers=stacked("majorizers", (n, n), dtype),
        gradients=stacked("gradients", (n,), dtype),
        radii=stacked("radii", (n,), dtype),
        accepted=stacked("accepted", (), bool),
        reason=reason,
        iterations=len(records["accepted"]),
    )


class MMState(NamedTuple):
    """State of :func:`scale_by_mm` (fixed shapes and dtypes: no recompilation).

    Attributes:
      radius: the box half-widths for the next update, one per parameter (flattened).
      value: the loss at the last update's starting point.
      majorizer: the last step's ``Q`` (:class:`MMStep`), over the flattened parameters.
      predicted_decrease: the guaranteed decrease of the last update (0 when refused).
      count: the number of updates so far.
      refused_steps: updates that took no step.
    """

    radius: Array
    value: Array
    majorizer: Array
    predicted_decrease: Array
    count: Array
    refused_steps: Array


def scale_by_mm(initial_radius: float = 1.0) -> optax.GradientTransformationExtraArgs:
    r"""The MM step of :func:`mm_step` as an optax transformation over a small pytree.

    The parameters are flattened (``jax.flatten_util.ravel_pytree``) into a vector ``x`` of
    ``n`` entries (``n`` up to about 100); each update bounds ``value_fn`` over the box
    ``x ± r``, takes the step to the minimiser of the majorizer on the box and adapts ``r``.
    The incoming ``updates`` are ignored (the step needs no base direction: pass the gradient,
    or zeros); the returned update is the step itself, to be added with
    ``optax.apply_updates``. ``value_fn(params) `` then never increases (the step is verified).

    Args:
      initial_radius: the first box's half-width along every parameter.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update(updates, state, params, *,
      value_fn, **extra_args)`` needs ``params`` and the scalar loss ``value_fn(params, ...)``
      (extra arguments it accepts by name, e.g. ``batch``, are passed on; others are ignored).

    Raises:
      ValueError: ``initial_radius`` is not positive and finite.
      TypeError: (from ``update``) ``value_fn`` is missing or does not return a scalar float.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from optax_saferate import mm
      >>> loss = lambda p: jnp.sum((p["w"] - 3.0) ** 2)
      >>> params, opt = {"w": jnp.zeros(2)}, mm.scale_by_mm()
      >>> state = opt.init(params)
      >>> for _ in range(5):
      ...     updates, state = opt.update(params, state, params, value_fn=loss)
      ...     params = optax.apply_updates(params, updates)
      >>> params["w"].tolist()
      [3.0, 3.0]

    References:
      Streeter & Dillon, "Universal Majorization-Minimization Algorithms", arXiv:2308.00190.
    """
    _initial_radius(initial_radius, jnp.zeros(1))

    def init_fn(params) -> MMState:
        flat, _ = ravel_pytree(params)
        flat = _as_vector(flat)
        zero, count = jnp.zeros((), flat.dtype), jnp.zeros((), jnp.int32)
        return MMState(
            radius=_initial_radius(initial_radius, flat),
            value=zero,
            majorizer=jnp.zeros((flat.shape[0],) * 2, flat.dtype),
            predicted_decrease=zero,
            count=count,
            refused_steps=count,
        )

    def update_fn(updates, state: MMState, params=None, *, value_fn=None, **extra_args):
        del updates
        if value_fn is None:
            raise TypeError(
                "scale_by_mm.update needs the loss: pass value_fn=lambda params: loss, e.g. "
                "tx.update(grads, state, params, value_fn=loss_fn)"
            )
        if params is None:
            raise ValueError("scale_by_mm.update needs params (the point the step starts at)")
        flat, unravel = ravel_pytree(params)
        kwargs = _accepted_arguments(value_fn, extra_args)
        dtype = state.radius.dtype

        def fn(vector):
            return value_fn(unravel(vector.astype(flat.dtype)), **kwargs)

        _check_function(fn, flat.astype(dtype))
        out = mm_step(fn, flat.astype(dtype), state.radius)
        new_state = MMState(
            radius=out.next_radius,
            value=out.value.astype(dtype),
            majorizer=out.majorizer,
            predicted_decrease=out.predicted_decrease.astype(dtype),
            count=state.count + 1,
            refused_steps=state.refused_steps + (~out.accepted).astype(jnp.int32),
        )
        return unravel(out.step.astype(flat.dtype)), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
