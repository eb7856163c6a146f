"""The jaxpr walk behind :func:`taylor_bounds`.

``f`` is traced once per input shape with ``jax.make_jaxpr``; each equation is dispatched to its
rule in :mod:`rules`. Everything the walk emits is ordinary JAX, so ``taylor_bounds`` runs under
``jax.jit`` and ``vmap`` and a jitted caller compiles once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.extend import core as jcore
from jax.extend.core import primitives as P

from optax_saferate.autobound import elementwise
from optax_saferate.autobound import enclosures
from optax_saferate.autobound import intervals
from optax_saferate.autobound import logsumexp as lse
from optax_saferate.autobound import rules
from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval
from optax_saferate.autobound.named_functions import _CALL_PARAMS
from optax_saferate.autobound.named_functions import _KINKED_NAMED
from optax_saferate.autobound.named_functions import NAMED_FUNCTIONS
from optax_saferate.autobound.named_functions import _call_name


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


def _vector_bounds(f, k: int, x0: Array, trust_region) -> TaylorBounds:
    """Bounds of ``f`` of a small vector over the box ``trust_region`` (Lagrange form).

    ``c_i = D^i f(x0) / i!`` for ``i < k`` by nested forward-mode autodiff (exact), and the last
    coefficient is an interval enclosure of ``D^k f / k!`` over the whole box: Taylor's theorem
    puts the remainder at ``D^k f(ξ)/k! [δ, …, δ]`` for some ``ξ`` on the segment from ``x0`` to
    ``x0 + δ``. The enclosure comes from the degree-0 pass of this engine (interval arithmetic
    through the derivative's jaxpr, with every rule the scalar engine has), intersected with the
    centred form ``D^k f(x0) + D^{k+1} f(box)·(box - x0)`` where ``D^{k+1} f`` can be bounded.
    This is the classical remainder: sound, and wider than the scalar engine's sharp one (about
    ``k + 1`` times for small boxes); for SafeRate's scalar case use a scalar ``x0``.
    """
    lo, hi = (jnp.broadcast_to(jnp.asarray(e, x0.dtype), x0.shape) for e in trust_region)
    kink = _first_non_smooth(jax.make_jaxpr(f)(x0).jaxpr)
    if kink is not None:
        raise NotImplementedError(
            f"taylor_bounds with a vector x0 needs a smooth f (its remainder comes from the "
            f"range of D^{k} f, which a kink or a jump hides), but f uses `{kink[0]}` on the "
            f"input at {kink[1]}. Bound f along a line instead, t -> f(x0 + t·direction) with a "
            "scalar t: the scalar engine handles relu, max, abs, where and the log-sum-exp."
        )
    derivative = f
    coefficients = []
    for i in range(k):
        coefficients.append(jnp.asarray(derivative(x0)) / math.factorial(i))
        derivative = jax.jacfwd(derivative)
    ctx = Context(Interval(lo - x0, hi - x0), 0)
    remainder = _range_over_box(derivative, x0, ctx)
    # The centred (mean-value) form D^k f(x0) + D^{k+1} f(box)·(box - x0) is also an enclosure,
    # and much the narrower one for small boxes (its width shrinks with the box, squared);
    # each holds the true range, so their intersection does.
    try:
        slope_range = _range_over_box(jax.jacfwd(derivative), x0, ctx)
    except NotImplementedError:
        slope_range = None
    if slope_range is not None:
        offsets = intervals.Interval(
            *(jnp.broadcast_to(e, slope_range.lo.shape) for e in ctx.trust_region)
        )
        spread = intervals.multiply(slope_range, offsets)
        centre = jnp.asarray(derivative(x0))
        centred = intervals.sanitize(
            Interval(centre + jnp.sum(spread.lo, axis=-1), centre + jnp.sum(spread.hi, axis=-1))
        )
        both = intervals.intersect(remainder, centred)
        overlap = both.lo <= both.hi  # always, up to rounding; keep the direct range if not
        remainder = Interval(
            jnp.where(overlap, both.lo, remainder.lo), jnp.where(overlap, both.hi, remainder.hi)
        )
    scale = 1.0 / math.factorial(k)
    ends = (remainder.lo * scale, remainder.hi * scale)
    return TaylorBounds((*coefficients, ends), x0, (lo, hi))


def _range_over_box(g, x0: Array, ctx: Context) -> Interval:
    """An interval containing ``g(x)`` for every ``x`` in the box (the engine's degree-0 pass)."""
    closed = jax.make_jaxpr(g)(x0)
    out, env = _run(closed, x0, ctx, _no_ranges)
    if isinstance(out, lse.PatternValue):
        out = rules.materialize(ctx, env, out)
    if isinstance(out, TaylorEnclosure):
        return intervals.sanitize(out.remainder)
    value = jnp.asarray(out, closed.out_avals[0].dtype)  # g does not depend on x
    return Interval(value, value)


# Primitives that are C-infinity where they are defined (singularities such as log(0) or 1/0
# show up as unbounded derivative ranges, which is sound). Anything else applied to the input
# (comparisons, max/min, abs, sign, rounding, stop_gradient, ...) may hide a kink or a jump from
# the derivatives that autodiff computes.
_SMOOTH_PRIMITIVES = frozenset(
    """add sub mul div neg exp exp2 log log1p expm1 tanh logistic sin cos tan atan integer_pow
    pow sqrt rsqrt cbrt erf erfc square dot_general conv_general_dilated reshape broadcast_in_dim
    transpose squeeze expand_dims slice dynamic_slice gather concatenate pad rev reduce_sum
    cumsum convert_element_type copy copy_p reduce_window_sum sharding_constraint device_put
    split stack unstack select_n""".split()
)
# Named functions that are smooth although their primal code uses max or abs for stability.
_SMOOTH_NAMED = frozenset(
    """softplus silu swish sigmoid log_sigmoid logaddexp gelu tanh logsumexp log_softmax
    softmax""".split()
)


def _first_non_smooth(jaxpr, dependent=None) -> tuple[str, str] | None:
    """The first primitive that is applied to the input and may not be smooth, with its line."""
    dependent = set(jaxpr.invars) if dependent is None else dependent
    for eqn in jaxpr.eqns:
        uses = [v for v in eqn.invars if isinstance(v, jcore.Var) and v in dependent]
        if not uses:
            continue
        dependent.update(eqn.outvars)
        name = str(eqn.primitive)
        if name == "select_n":
            predicate = eqn.invars[0]
            if isinstance(predicate, jcore.Var) and predicate in dependent:
                return name, rules._source(eqn)
            continue
        bodies = [eqn.params[key] for key in _CALL_PARAMS if key in eqn.params]
        if bodies:
            if _call_name(eqn) in _SMOOTH_NAMED:
                continue
            body = getattr(bodies[0], "jaxpr", bodies[0])
            inner = {v for v, outer in zip(body.invars, eqn.invars, strict=False) if outer in uses}
            found = _first_non_smooth(body, inner)
            if found is not None:
                return found
            continue
        if name not in _SMOOTH_PRIMITIVES:
            return name, rules._source(eqn)
    return None


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


def _no_ranges(key, ctx, value):
    return None


def _record(recorded, key, ctx, value):
    recorded[key] = enclosures.range_over(value, ctx)
    return None


def _replay(recorded, key, ctx, value):
    known = recorded.get(key)
    if known is None or jnp.shape(known.lo) != value.shape:
        return None
    return known


def _run(closed, x0, ctx, known_ranges, lower_to=None, lower_over=None):
    if ctx.degree == 0:
        x = TaylorEnclosure((), Interval(x0 + ctx.trust_region.lo, x0 + ctx.trust_region.hi))
    elif isinstance(x0, np.ndarray):
        x = enclosures.exact(x0, np.ones_like(x0))
    else:
        x = enclosures.exact(x0, jnp.ones_like(x0))
    if lower_to is not None and lower_to >= ctx.degree:
        lower_to = None
    env = rules.Environment(None, known_ranges, ctx, lower_to)
    env.lower_over = ctx.trust_region if lower_over is None else lower_over
    env.evaluate_jaxpr = functools.partial(evaluate_jaxpr, env=env, ctx=ctx)
    (out,) = evaluate_jaxpr(closed.jaxpr, closed.consts, [x], env=env, ctx=ctx)
    return out, env


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


# --------------------------------------------------------------------------- the walk


def evaluate_jaxpr(jaxpr, consts, args, *, env, ctx):
    """Walk ``jaxpr``; the context is ``env.ctx`` (``ctx`` for an environment without one), which
    a mixed-degree pass lowers once, at the first equation that needs it (:func:`_lower_if_kinked`).
    """
    values = {}

    def read(v):
        if isinstance(v, jcore.Literal):
            return v.val
        value = values[v]
        if env.ctx is not None and _above(value, env.ctx.degree):
            # Written before the pass was lowered: lowered once, on first use after it.
            value = values[v] = _lowered(value, env.ctx)
        return value

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        values[var] = value
    for var, value in zip(jaxpr.invars, args, strict=True):
        values[var] = value
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        if all(rules.is_constant(x) for x in inputs):
            outputs = _bind(eqn, inputs)
        else:
            if _lower_if_kinked(eqn, inputs, env):
                inputs = [read(v) for v in eqn.invars]
            env.enter(eqn, inputs)
            outputs = _apply_rule(eqn, inputs, env, env.ctx or ctx)
        if not eqn.primitive.multiple_results:
            outputs = [outputs]
        for var, value in zip(eqn.outvars, outputs, strict=True):
            if not isinstance(var, _DROP_VAR):
                values[var] = value
    return [read(v) for v in jaxpr.outvars]


def _bind(eqn, inputs):
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(params, tuple):  # older jax returns (subfuns, params)
        subfuns, params = params
    return eqn.primitive.bind(*subfuns, *inputs, **params)


# --------------------------------------------------------------------------- mixed degree


def _lower_if_kinked(eqn, inputs, env) -> bool:
    """In a mixed-degree pass, lower the walk's context before an equation that needs it.

    The higher degree is kept through what has a rule of any degree that is sharp: the smooth
    primitives (linear maps, products, smooth elementwise functions) and the smooth named
    calls; everything else (relu and the other kinks, ``max`` and ``min``, pooling,
    comparisons and the ``select_n`` they drive, ``stop_gradient``, which starts the
    log-sum-exp pattern's shift) is where the pass drops to ``env.lower_to``, for good. Values
    written before are lowered as they are read (:func:`evaluate_jaxpr`). Returns whether it
    lowered.
    """
    ctx = env.ctx
    if env.lower_to is None or ctx is None or ctx.degree <= env.lower_to:
        return False
    if all(rules.is_constant(x) for x in inputs):
        return False
    name = _call_name(eqn)
    if name in NAMED_FUNCTIONS and len(eqn.outvars) == 1:
        kinked = name in _KINKED_NAMED
    elif any(key in eqn.params for key in _CALL_PARAMS):
        kinked = False  # walked into: its own equations decide
    elif eqn.primitive is P.select_n_p:
        kinked = not rules.is_constant(inputs[0])
    else:
        kinked = str(eqn.primitive) not in _SMOOTH_PRIMITIVES
    if kinked:
        env.ctx = Context(env.lower_over, env.lower_to)
    return kinked


def _above(value, degree: int) -> bool:
    if isinstance(value, TaylorEnclosure):
        return bool(value.coefficients) and enclosures.degree_of(value) > degree
    return False


def _lowered(value: TaylorEnclosure, ctx: Context) -> TaylorEnclosure:
    """``value`` (valid at its own, higher degree) as an enclosure of ``ctx.degree``."""
    own = Context(ctx.trust_region, enclosures.degree_of(value))
    return enclosures.lower(value, own, ctx.degree)


# jax.extend.core.DropVar is newer than jax 0.9; writing a dropped output is harmless.
_DROP_VAR = getattr(jcore, "DropVar", ())

# The primitives that take the max of the log-sum-exp pattern on to its next stage.
_MAX_STAGE_AWARE = (
    P.max_p,
    P.is_finite_p,
    P.select_n_p,
    P.stop_gradient_p,
    P.convert_element_type_p,
    P.broadcast_in_dim_p,
    P.reshape_p,
    P.squeeze_p,
)


def _apply_rule(eqn, inputs, env, ctx):
    primitive = eqn.primitive
    pattern = [x for x in inputs if isinstance(x, lse.PatternValue)]
    if pattern and primitive in (P.exp_p, P.log_p):
        result = rules.pattern_elementwise(primitive, ctx, env, eqn, pattern[0])
        if result is not None:
            return result
        inputs = [rules.materialize(ctx, env, x) for x in inputs]
    if pattern and primitive not in _MAX_STAGE_AWARE:
        # A max that is not the shift of a log-sum-exp (jnp.max(u) - c): a plain enclosure.
        inputs = [
            rules.materialize(ctx, env, x)
            if isinstance(x, lse.PatternValue) and x.stage == lse.MAX
            else x
            for x in inputs
        ]
    name = _call_name(eqn)
    # A named call with several outputs is not the function its name says: jax.grad of
    # jax.nn.softplus leaves a `jit[name=softplus]` returning the value and its linearisation.
    if (
        name in NAMED_FUNCTIONS
        and len(eqn.outvars) == 1
        and len(inputs) >= 1
        and isinstance(inputs[0], TaylorEnclosure)
    ):
        recognised = NAMED_FUNCTIONS[name](env, ctx, eqn, inputs)
        if recognised is not None:
            return recognised
    rule = rules.RULES.get(primitive)
    if rule is not None:
        return rule(env, ctx, eqn, *inputs)
    for key in _CALL_PARAMS:
        if key in eqn.params:
            return _walk_into(eqn.params[key], inputs, env, ctx)
    raise NotImplementedError(
        f"AutoBound has no rule for the primitive `{primitive}` (used at {rules._source(eqn)}). "
        "Rewrite the function with supported operations, or register one: "
        "optax_saferate.autobound.register_elementwise(...) for an elementwise function wrapped in "
        "a named jax.jit / jax.custom_jvp, or register_primitive(primitive, rule)."
    )


def _walk_into(jaxpr, inputs, env, ctx):
    if isinstance(jaxpr, jcore.ClosedJaxpr):
        return evaluate_jaxpr(jaxpr.jaxpr, jaxpr.consts, inputs, env=env, ctx=ctx)
    return evaluate_jaxpr(jaxpr, [], inputs, env=env, ctx=ctx)
