""":func:`taylor_bounds`, the engine's entry point.

It checks the degree and the region, runs the jaxpr walk (:mod:`~optax_saferate.autobound.walk`)
for a scalar ``x0`` (after the optional range pass, and as a mixed-degree pass when asked) and
returns :class:`~optax_saferate.autobound.polynomial_bounds.TaylorBounds`; a vector ``x0`` goes to
:mod:`~optax_saferate.autobound.vector_inputs`. Under ``jax.jit`` a region that cannot be
checked is guarded instead: its final interval becomes the whole line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from optax_saferate.autobound import elementwise
from optax_saferate.autobound import enclosures
from optax_saferate.autobound import intervals
from optax_saferate.autobound import logsumexp as lse
from optax_saferate.autobound import rules
from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval
from optax_saferate.autobound.polynomial_bounds import TaylorBounds
from optax_saferate.autobound.vector_inputs import _vector_bounds
from optax_saferate.autobound.walk import _no_ranges
from optax_saferate.autobound.walk import _run


def taylor_bounds(
    f: Callable[[Array], Array],
    max_degree: int,
    propagate_trust_regions: bool = False,
    *,
    working_degree: int | None = None,
) -> Callable[[Array, tuple[Array, Array]], TaylorBounds]:
    """Polynomial upper and lower bounds of ``f`` over a trust region.

    Returns a function ``(x0, (a, b)) -> TaylorBounds`` computing a degree-``max_degree``
    Taylor enclosure of ``f`` at ``x0`` valid for every ``x`` in ``[a, b]``: the first
    ``max_degree`` coefficients are the Taylor coefficients of ``f`` at ``x0`` and the last is an
    interval. With ``a == b == x0`` it is Taylor-mode autodiff.

    For a 1-D vector ``x0`` (a small one: the coefficients are tensors of shape
    ``out_shape + (n,) * i``) the trust region is the box ``[a, b]``, the coefficients are
    ``D^i f(x0)/i!`` and the last one is an interval enclosure of ``D^k f/k!`` over the box (the
    classical Lagrange remainder, wider than the scalar engine's sharp one); ``f`` must then be
    smooth (no relu, max, abs or input-dependent ``where``), which is checked.

    Args:
      f: a function of one scalar array (or a small 1-D vector), written with supported JAX
        primitives (a Flax model and an optax loss are fine).
      max_degree: the degree ``k >= 1`` of the enclosure (2 is the fast path).
      propagate_trust_regions: also propagate plain interval ranges through ``f`` and intersect
        them with the ranges that the enclosures imply before each elementwise function (a
        second, cheap pass; helps far from ``x0``).
      working_degree: a mixed-degree pass (scalar ``x0`` only; ``None`` means ``max_degree``):
        enclosures of this higher degree are carried through the smooth part of ``f`` (linear
        maps, products, smooth activations) and lowered to ``max_degree`` at the first equation
        whose sharp rule is of degree 2 only (relu and the other kinks, ``max``, pooling,
        comparisons, the log-sum-exp pattern) and at the output. Lowering a degree-3 enclosure
        on ``[0, T]`` folds ``c_2 + R_3·t`` into ``c_2 + R_3·[0, T]``, which is far narrower
        than a degree-2 pass's remainder in deep smooth nets for small ``T`` (each layer's
        midpoint-radius product widens a remainder, and a degree-3 remainder is multiplied by
        ``T`` once more). For large ``T`` it can be the wider one.

    Returns:
      ``bound(x0, trust_region, working_region=None) -> TaylorBounds``. A ``working_region``
      ``(wa, wb)`` containing ``trust_region`` (scalar ``x0`` only) carries the enclosures of
      ``working_degree`` over the working region and lowers them over the trust region: the
      result holds on ``trust_region`` (usually a little wider than that region's own pass), and
      under ``jax.vmap`` over trust regions with one working region the walk up to the lowering
      point is done once (SafeRate's ``trust_region="nested"``). A working region that does not
      contain the trust region raises ``ValueError`` (concrete values) or gives the whole line
      as final interval (traced).

    Raises:
      ValueError: (from ``bound``) the region does not contain ``x0`` (``a <= x0 <= b`` fails,
        or is NaN) and the values are concrete. Under ``jax.jit``, where they are traced, the
        final interval is ``[-inf, inf]`` instead: sound, never a wrong bound.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_saferate import autobound as ab
      >>> b = ab.taylor_bounds(jnp.exp, 2)(0.0, (0.0, 1.0))
      >>> [float(c) for c in b.coefficients[:2]], [round(float(e), 4) for e in b.final_interval()]
      ([1.0, 1.0], [0.5, 0.7183])

    References:
      Streeter & Dillon, "Automatically Bounding the Taylor Remainder Series: Tighter Bounds and
      New Applications", arXiv:2212.11429.
    """
    if not isinstance(max_degree, int) or max_degree < 1:
        raise ValueError(f"max_degree must be an integer >= 1, got {max_degree!r}")
    if working_degree is None:
        working_degree = max_degree
    if not isinstance(working_degree, int) or working_degree < max_degree:
        raise ValueError(
            f"working_degree must be an integer >= max_degree ({max_degree}), got "
            f"{working_degree!r}"
        )

    def bound(x0, trust_region, working_region=None) -> TaylorBounds:
        known_zero = isinstance(x0, (int, float, np.ndarray, np.generic)) and not np.any(x0)
        x0 = jnp.asarray(x0)
        if not jnp.issubdtype(x0.dtype, jnp.floating):
            x0 = x0.astype(jnp.result_type(float))
        _check_region(x0, trust_region)
        if working_region is not None:
            _check_working_region(trust_region, working_region)
        if x0.ndim == 1:
            if working_degree != max_degree or working_region is not None:
                raise NotImplementedError(
                    "working_degree and working_region are for a scalar x0 (the scalar engine's "
                    "mixed-degree pass); with a vector x0 leave them unset"
                )
            return _guard_region(_vector_bounds(f, max_degree, x0, trust_region))
        if x0.ndim != 0:
            raise ValueError(
                "taylor_bounds takes a scalar or a 1-D vector x0; got shape "
                f"{x0.shape}. Flatten the input (jax.flatten_util.ravel_pytree) or bound f along "
                "a line, t -> f(x0 + t·direction)."
            )
        a, b = (jnp.asarray(e, x0.dtype) for e in trust_region)
        closed = jax.make_jaxpr(f)(x0)
        if len(closed.out_avals) != 1:
            raise ValueError("f must return a single array")
        t = Interval(*(_offset(e, x0, known_zero) for e in trust_region))
        # Enclosures of the working degree hold over the working region; lowered ones, and so
        # the result, over the trust region inside it (any enclosure over a region holds over a
        # subregion). Under vmap over trust regions with one working region, the walk up to
        # the lowering point does not depend on the batched region and is done once.
        working = t
        if working_region is not None:
            working = Interval(*(_offset(e, x0, known_zero) for e in working_region))
        known_ranges = _no_ranges
        if propagate_trust_regions:
            recorded: dict = {}
            _run(closed, x0, Context(working, 0), functools.partial(_record, recorded))
            known_ranges = functools.partial(_replay, recorded)
        ctx = Context(working, working_degree)
        reference = x0
        if known_zero:
            reference = np.zeros((), x0.dtype)  # a known zero stays structural (see _run)
        out, env = _run(closed, reference, ctx, known_ranges, lower_to=max_degree, lower_over=t)
        final_ctx = Context(t, env.ctx.degree)  # not lowered yet: lowered over t at the output
        coefficients = _coefficients(out, final_ctx, env, closed.out_avals[0], max_degree)
        bounds = TaylorBounds(coefficients, x0, (a, b))
        if working_region is not None:
            bounds = _guard_working_region(bounds, working_region)
        return _guard_region(bounds)

    return bound


def _check_region(x0: Array, trust_region) -> None:
    """Refuse a region that does not contain the reference point, when the values are known."""
    values = [_concrete(x0)] + [_concrete(e) for e in trust_region]
    if any(v is None for v in values):
        return  # traced: _guard_region answers with the whole line instead
    x, a, b = (np.asarray(v, np.float64) for v in values)
    if not np.all((a <= x) & (x <= b)):
        raise ValueError(
            f"taylor_bounds needs a trust region (a, b) with a <= x0 <= b (elementwise), got "
            f"x0={values[0]!r}, a={values[1]!r}, b={values[2]!r}. The enclosure is a Taylor "
            "expansion at x0 over the region, so x0 must lie in it: pass x0 inside (a, b), or "
            "widen the region."
        )


def _check_working_region(trust_region, working_region) -> None:
    """Refuse a working region that does not contain the trust region, when values are known."""
    values = [_concrete(e) for e in (*trust_region, *working_region)]
    if any(v is None for v in values):
        return  # traced: _guard_working_region answers with the whole line instead
    a, b, wa, wb = (np.asarray(v, np.float64) for v in values)
    if not np.all((wa <= a) & (b <= wb)):
        raise ValueError(
            "taylor_bounds' working_region (wa, wb) must contain the trust region (a, b): the "
            "higher-degree enclosures are computed over the working region and the result is "
            f"for the trust region inside it; got (a, b) = ({values[0]!r}, {values[1]!r}), "
            f"(wa, wb) = ({values[2]!r}, {values[3]!r})"
        )


def _guard_working_region(bounds: TaylorBounds, working_region) -> TaylorBounds:
    """Under ``jit``: a working region that does not contain the trust region gives no bound."""
    a, b = bounds.trust_region
    wa, wb = (jnp.asarray(e, jnp.result_type(a)) for e in working_region)
    valid = jnp.all((wa <= a) & (b <= wb))
    return _whole_line_unless(valid, bounds)


def _whole_line_unless(valid: Array, bounds: TaylorBounds) -> TaylorBounds:
    """``bounds`` where ``valid``, else the same polynomial part with ``[-inf, inf]`` as final."""
    lo, hi = bounds.coefficients[-1]
    inf = jnp.asarray(jnp.inf, jnp.result_type(lo))
    final = (jnp.where(valid, lo, -inf), jnp.where(valid, hi, inf))
    return TaylorBounds((*bounds.coefficients[:-1], final), bounds.x0, bounds.trust_region)


def _guard_region(bounds: TaylorBounds) -> TaylorBounds:
    """Under ``jit`` a bad region cannot raise: the final interval becomes the whole line there.

    A region with ``a <= x0 <= b`` false (or NaN) gets ``[-inf, inf]`` as its final interval,
    which is sound for any polynomial part; a valid region's result is unchanged.
    """
    a, b = bounds.trust_region
    valid = jnp.all((a <= bounds.x0) & (bounds.x0 <= b))
    return _whole_line_unless(valid, bounds)


def _concrete(value) -> np.ndarray | None:
    """``value`` as a NumPy array if it is known while tracing (not a tracer), else ``None``."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _offset(end, x0: Array, x0_is_zero: bool) -> Array:
    """``end - x0``; a NumPy zero when both are known to coincide while tracing.

    A trust-region end known to be at the reference point (SafeRate's ``[0, η_max]`` from
    ``η = 0``) lets the elementwise rules skip the ratio at that end (it is ``d_k`` exactly).
    """
    concrete_end = _concrete(end)
    concrete_x0 = np.zeros((), x0.dtype) if x0_is_zero else _concrete(x0)
    if concrete_end is not None and concrete_x0 is not None:
        if np.all(concrete_end == concrete_x0):
            return np.zeros(np.shape(concrete_end), x0.dtype)
    return jnp.asarray(end, x0.dtype) - x0


def _record(recorded, key, ctx, value):
    recorded[key] = enclosures.range_over(value, ctx)
    return None


def _replay(recorded, key, ctx, value):
    known = recorded.get(key)
    if known is None or jnp.shape(known.lo) != value.shape:
        return None
    return known


def _coefficients(out, ctx: Context, env, aval, degree: int | None = None):
    """The result's coefficients at ``degree`` (lowered from ``ctx.degree`` if that is higher)."""
    if isinstance(out, lse.PatternValue):
        out = rules.materialize(ctx, env, out)
    if degree is not None and degree < ctx.degree:
        if isinstance(out, TaylorEnclosure):
            out = enclosures.lower(out, ctx, degree)
        ctx = Context(ctx.trust_region, degree)
    k = ctx.degree
    if not isinstance(out, TaylorEnclosure):
        value = jnp.asarray(out, aval.dtype)
        zero = jnp.zeros_like(value)
        return (value,) + (zero,) * (k - 1) + ((zero, zero),)
    out = elementwise.to_remainder_form(out, ctx)
    remainder = intervals.sanitize(out.remainder)  # an enclosure is never NaN, at worst unbounded
    return (*out.coefficients, (remainder.lo, remainder.hi))
