"""SafeRate: the step size that minimises an automatically derived upper bound of the loss.

Given the base optimizer's update ``u`` (its direction at learning rate 1), SafeRate bounds
``h(η) = L(params + η·u)`` over ``η ∈ [0, η_max]`` with AutoBound,

    h(η) <= h(0) + c1·η + c2_hi·η²,

and takes the ``η`` that minimises the right side. Since the bound equals ``h(0)`` at ``η = 0``,
the loss that ``value_fn`` computes can never go up (DESIGN §4).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from optax_saferate.autobound import kink_report
from optax_saferate.autobound import taylor_bounds


class SafeRateState(NamedTuple):
    """State of :func:`scale_by_saferate`; every field is a scalar of a dtype fixed at ``init``.

    Attributes:
      learning_rate: the step size ``η`` taken by the last update (0 before the first).
      max_learning_rate: the trust region ``η_max`` for the next update.
      value: the loss ``h(0)`` at the last update's starting point.
      slope: the derivative ``c1 = h'(0)`` along the direction.
      curvature_lo: the lower end of the degree-2 remainder interval ``[c2_lo, c2_hi]``.
      curvature_hi: the upper end; the step minimises ``c1·η + c2_hi·η²``.
      predicted_decrease: ``-(c1·η + c2_hi·η²) >= 0``, the guaranteed decrease of the last step.
      count: the number of updates so far.
      refused_steps: updates that took no step (non-finite bound, no descent, or failed
        verification).
      halvings: updates that halved the trust region.
      direction_sign: ``+1`` when the incoming updates point downhill (optax's convention after
        ``scale_by_learning_rate``), ``-1`` when they point uphill (e.g. straight out of
        ``optax.scale_by_adam()``), ``0`` until the first update with a nonzero slope decides.
    """

    learning_rate: Array
    max_learning_rate: Array
    value: Array
    slope: Array
    curvature_lo: Array
    curvature_hi: Array
    predicted_decrease: Array
    count: Array
    refused_steps: Array
    halvings: Array
    direction_sign: Array


def _scalar_dtype(params) -> jnp.dtype:
    """The dtype for ``η`` and the bound: the widest float in ``params``, at least float32."""
    dtypes = [jnp.result_type(x) for x in jax.tree.leaves(params)]
    dtypes = [d for d in dtypes if jnp.issubdtype(d, jnp.floating)]
    if not dtypes:
        raise ValueError("scale_by_saferate needs floating-point params")
    return jnp.promote_types(jnp.result_type(*dtypes), jnp.float32)


def _accepted_arguments(fn: Callable, extra_args: dict[str, Any]) -> dict[str, Any]:
    """The extra arguments whose names ``fn`` accepts (all of them if it takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(extra_args)
    names = {
        name
        for name, p in list(parameters.items())[1:]
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return {k: v for k, v in extra_args.items() if k in names}


def minimize_quadratic_bound(slope: Array, curvature: Array, max_step: Array) -> Array:
    """``argmin_{η ∈ [0, max_step]} slope·η + curvature·η²`` (closed form).

    The vertex clipped to the interval when ``curvature > 0``; otherwise the better endpoint.
    """
    safe = jnp.where(curvature > 0, curvature, 1.0)
    vertex = jnp.clip(-slope / (2 * safe), 0, max_step)
    at_end = slope * max_step + curvature * max_step**2
    endpoint = jnp.where(at_end < 0, max_step, jnp.zeros_like(max_step))
    return jnp.where(curvature > 0, vertex, endpoint)


TRUST_REGION_RULES = ("refine", "ladder", "fit", "halving", "nested")
# trust_region="nested": the subregions [0, η_max·r] bounded in one pass, r = 2^(-j/2) (1/16 to
# 1); the next η_max is the winning subregion's end times 2^(1/4) (measured on the 4x128 softplus
# and 3x64 tanh MLPs against 1, 2^(1/2), 2 and 4: docs/performance.md).
NESTED_RUNGS = tuple(2.0 ** (-j / 2) for j in range(8, -1, -1))
NESTED_GROWTH = 2.0**0.25


def _rung_gains(h0: Array, slope: Array, curvature_hi: Array, rungs: Array, secant_hi=None):
    """Per rung ``[0, T]``: the bound's step, whether it is usable, and its guaranteed decrease
    (``-inf`` where unusable).

    ``secant_hi`` (per rung, or ``None``) is the upper end of the degree-1 enclosure's slope:
    ``h(η) <= h(0) + secant_hi·η`` on ``[0, T]``, whose best step is ``T`` itself; the rung takes
    whichever of the two bounds guarantees more."""
    finite = jnp.isfinite(h0) & jnp.isfinite(slope) & jnp.isfinite(curvature_hi)
    descent = finite & (slope < 0)
    etas = minimize_quadratic_bound(slope, curvature_hi, rungs)
    # A step below the region's rounding unit (η <= eps·T) says the bound is useless at this T,
    # not that the loss wants that step; taking it would move units that sit exactly on a relu
    # kink (dead rows, zero padding, where homogeneity keeps the bound tight) to just beside
    # it, where their sharp kink term 1/(4|u0|) is astronomically large and keeps every later
    # step as tiny: refuse it and shrink.
    usable = descent & (etas > jnp.finfo(rungs.dtype).eps * rungs)
    gains = jnp.where(usable, -(slope * etas + curvature_hi * etas**2), -jnp.inf)
    if secant_hi is None:
        return etas, usable, gains
    linear = jnp.isfinite(h0) & jnp.isfinite(secant_hi) & (secant_hi < 0) & (rungs > 0)
    linear_gains = jnp.where(linear, -secant_hi * rungs, -jnp.inf)
    better = linear_gains > gains
    return jnp.where(better, rungs, etas), usable | linear, jnp.maximum(gains, linear_gains)


def _best_rung(gains: Array, rungs: Array) -> Array:
    """The index of the smallest rung within 0.1% of the best decrease: where the bound's vertex
    lies inside several rungs they tie, and the smallest region holding it is the one to centre
    the next update on."""
    top = jnp.max(gains)
    ties = gains >= top - 1e-3 * jnp.abs(top)
    return jnp.argmin(jnp.where(ties, rungs, jnp.inf))


def _refine_search(bound_over: Callable, rungs: Array):
    """The best rung of a ladder found coarse to fine: every 4th rung, then the winner's
    neighbours 2 rungs away, then 1 away (9 bounds for 17 rungs, in three vmapped rounds).

    It finds the dense ladder's winner whenever the guaranteed decrease is unimodal along the
    ladder, which it is when ``c2_hi(T)`` grows with ``T``: the decrease grows with ``T`` while
    the step reaches the region's end and falls once the vertex lies inside. Returns the
    evaluated rungs (each round's candidates) with their ``h0``, ``c1``, ``[c2_lo, c2_hi]`` and
    the degree-1 slope bound (``inf`` when not computed).
    """
    last = rungs.shape[0] - 1
    coarse = np.unique(np.append(np.arange(0, last + 1, 4), last))
    h0, slope, (lo, hi), secant = jax.vmap(bound_over)(rungs[coarse])
    h0, slope = h0[0], slope[0]
    indices, curvature_lo, curvature_hi, secant_hi = jnp.asarray(coarse), lo, hi, secant
    gains = _rung_gains(h0, slope, hi, rungs[coarse], secant_hi)[2]
    centre = indices[_best_rung(gains, rungs[coarse])]
    for offset in (2, 1):
        candidates = jnp.clip(centre + jnp.asarray([-offset, offset]), 0, last)
        _, _, (lo, hi), secant = jax.vmap(bound_over)(rungs[candidates])
        indices = jnp.concatenate([indices, candidates])
        curvature_lo = jnp.concatenate([curvature_lo, lo])
        curvature_hi = jnp.concatenate([curvature_hi, hi])
        secant_hi = jnp.concatenate([secant_hi, secant])
        gains = _rung_gains(h0, slope, curvature_hi, rungs[indices], secant_hi)[2]
        centre = indices[_best_rung(gains, rungs[indices])]
    return rungs[indices], h0, slope, curvature_lo, curvature_hi, secant_hi


def _check_value(value, dtype) -> Array:
    """``value_fn``'s result as a scalar of ``dtype``, or a clear error."""
    shape, result_dtype = jnp.shape(value), jnp.result_type(value)
    if shape != () or not jnp.issubdtype(result_dtype, jnp.floating):
        raise TypeError(
            "scale_by_saferate needs value_fn to return the scalar loss (a floating-point array of "
            f"shape ()), but it returned shape {shape} and dtype {result_dtype}. Reduce it, e.g. "
            "value_fn=lambda params: jnp.mean(per_example_loss(params))."
        )
    return jnp.asarray(value, dtype)


# The default ladder: 17 rungs a factor sqrt(2) apart, from η_max/16 to 16·η_max. The spacing
# sets how close the step comes to the best region (the winning rung caps it when the bound's
# vertex lies beyond), the reach how fast the region follows the step. Measured against
# (1/4, 1, 4, 16), factor-2 and mixed 9-rung ladders on the 4x128 softplus and 3x64 tanh MLPs
# (docs/performance.md).
DEFAULT_LADDER = tuple(2.0 ** (j / 2) for j in range(-8, 9))
# The bound pass carries degree-3 enclosures through smooth layers (see `working_degree`).
DEFAULT_WORKING_DEGREE = 3


def _validate_options(trust_region: str, ladder) -> tuple[float, ...]:
    if trust_region not in TRUST_REGION_RULES:
        raise ValueError(f"trust_region must be one of {TRUST_REGION_RULES}, got {trust_region!r}")
    try:
        rungs = tuple(float(r) for r in ladder)
    except TypeError:
        rungs = ()
    if (
        len(rungs) < 2
        or min(rungs) <= 0
        or min(rungs) >= 1
        or max(rungs) <= 1
        or not np.all(np.isfinite(rungs))
    ):
        # A ladder without a rung below 1 (e.g. (1, 4)) could only grow the region: the next
        # η_max is the winning rung, so the region would never follow a shrinking step.
        raise ValueError(
            "ladder must be a tuple of positive finite multipliers of η_max with one below 1 and "
            f"one above 1 (so that the region can shrink and grow), e.g. {DEFAULT_LADDER}; got "
            f"{ladder!r}"
        )
    return tuple(sorted(rungs))


def scale_by_saferate(
    initial_max_learning_rate: float = 1.0,
    verify_decrease: bool = False,
    min_max_learning_rate: float = 0.0,
    trust_region: str = "refine",
    ladder: tuple[float, ...] = DEFAULT_LADDER,
    working_degree: int | None = None,
    linear_bound: bool | str = "auto",
) -> optax.GradientTransformationExtraArgs:
    r"""Scale the incoming direction by the step size that minimises a bound of the loss.

    The incoming ``updates`` are a direction ``u``: a base optimizer's update at learning rate 1.
    With ``h(η) = value_fn(params + η·s·u)``, AutoBound gives
    ``h(η) <= h(0) + c1·η + c2_hi·η²`` on ``[0, η_max]``; the step is the minimiser ``η`` of that
    quadratic, and the output is ``η·s·u``.

    The sign ``s`` follows the direction's convention, learned once on the first update with a
    nonzero slope: ``s = +1`` for directions that already point downhill (``optax.adam(1.0)``,
    ``optax.sgd(1.0)``; what :func:`saferate` chains), ``s = -1`` for uphill ones (the output of
    ``optax.scale_by_adam()`` before any ``scale_by_learning_rate``). SafeRate first assumes
    ``+1``; if that first direction points uphill, that update takes no step and flips ``s``.

    **Finding the trust region.** The bound, and so the step, depends on the region
    ``[0, η_max]``: too small and it caps the step, too large and the bound is loose.

    * ``trust_region="refine"`` (the default): each update bounds ``h`` over regions
      ``[0, T_j]``, ``T_j = η_max·ladder[j]`` (by default 17 rungs a factor ``sqrt(2)`` apart,
      ``η_max/16`` to ``16·η_max``), and takes the step of the rung with the largest guaranteed
      decrease ``-(c1·η + c2_hi(T_j)·η²)``. The next ``η_max`` is the winning rung's ``T_j``, so
      the region follows the step by up to a factor 16 per update and no update is spent
      hunting. The rung is found coarse to fine: every 4th rung, then the winner's neighbours 2
      rungs away, then 1 away, each round one vmapped pass (the forward pass, the first layer's
      ``X·D`` and the exact coefficients do not depend on ``T`` and are computed once per
      round). That is 9 bounds for the 17 rungs, and the same rung as ``"ladder"`` whenever the
      decrease is unimodal along the ladder (it grows with ``T`` while the step reaches the
      region's end and falls once ``c2_hi(T)`` grows past the vertex): over 100 full-batch
      steps the two end logistic regression, the 784-128-10 softplus and 3x64 tanh MLPs at the
      same loss, and the 4x128 softplus MLP at 0.309 (``"ladder"`` 0.312). When no
      rung gives a finite bound (or only a step below its rounding unit), no step is taken and
      ``η_max`` moves to a quarter of the lowest rung. On deep smooth nets it takes steps about
      twice as large as ``"fit"``, but each bound's region-dependent work (mostly the
      log-sum-exp rule) is repeated per bound: on 2 CPU cores a step costs about 6x a ``"fit"``
      step (docs/performance.md); pass ``"fit"`` to pay one bound per update.
    * ``trust_region="ladder"``: the same ladder with every rung bounded, in one vmapped pass
      (17 bounds by default, about twice ``"refine"``'s cost); for a short ``ladder`` such as
      ``(0.25, 1.0, 4.0, 16.0)`` it is the cheaper of the two.
    * ``trust_region="fit"``: one region per update, resized to the step it gave.
      If the step reached the region's end (the bound's minimiser lies beyond it), ``η_max``
      doubles; if the minimiser lay inside, ``η_max`` moves to ``sqrt(η·η_max)`` (at least
      ``η_max/4``), towards the region whose end the step just reaches, where the bound is
      tightest for that step; if the bound gave no usable step, ``η_max`` is quartered. One
      bound pass per update, the cost of the paper's rule.
    * ``trust_region="nested"``: each update bounds ``h`` over the nested regions
      ``[0, η_max·r]``, ``r = 2^(-j/2)`` from 1/16 to 1, in one pass whose degree-3 part (all of
      it up to the first kink or log-sum-exp; ``taylor_bounds``' ``working_region``) is computed
      once over ``[0, η_max]`` and only what follows the lowering point is done per region. It
      takes the step of the region with the largest guaranteed decrease; the next ``η_max`` is
      that region's end times ``2^(1/4)``, or twice ``η_max`` when the step reached the end of the
      largest. For a smooth net with a cross-entropy loss only what follows the logits is
      repeated per region, but that log-sum-exp rule is most of a shallow net's bound: on the
      784-128-10 softplus MLP a step costs about 7x a ``"fit"`` step (docs/performance.md); for a
      relu net (lowered at the first relu) the whole net is repeated. Kept as an option.
    * ``trust_region="halving"``: the rule of the paper: one region per update; ``η_max``
      doubles when ``η >= η_max / 2`` and halves when not, or when the bound is not finite.

    **Two bounds per region where the loss has kinks.** With ``linear_bound="auto"`` (the
    default) each region of a loss whose bound meets a kink (relu and the rules built on it,
    ``max``, pooling, ``where`` on the input: :func:`~optax_saferate.autobound.kink_report`,
    decided once while tracing) also gets the degree-1 enclosure ``h(η) <= h(0) + m_hi·η`` on
    ``[0, T]`` (``m_hi`` the upper end of its slope interval), whose best step is ``T`` itself,
    and the region takes whichever bound guarantees the larger decrease. On a smooth loss the
    quadratic one wins (the degree-1 bound's slope range grows like ``2·c2·T``); at a kink it
    is the degree-1 one: a relu unit that can cross its kink inside the region costs the
    quadratic bound ``V²/(4|u0|)`` (huge for a unit close to it) and the degree-1 bound only its
    slope range ``|V|``. Over 100 full-batch steps it moves the 784-128-10 relu MLP from 0.458
    to 0.283 and the CNN from 0.699 to 0.291 (docs/results.md), at one more bound pass per
    region. A smooth loss skips that pass, where it seldom wins and doubles the
    region-dependent work (``linear_bound=True`` forces it: on logistic regression the two end
    100 steps within 2% of each other, in either order depending on the training loop, at 36x
    instead of 29x an Adam step; ``False`` turns it off).

    In all: if ``c1 >= 0`` (``s·u`` is not a descent direction), no step is taken and ``η_max``
    stays. A step ``η <= eps·T`` (``eps`` of the state's dtype) is not taken: at that scale the
    bound is useless, and such a step would move units sitting exactly on a relu kink to just
    beside it, where their bound is huge.

    **Guarantee.** ``value_fn(params + η·s·u) <= value_fn(params)``. With the full training set
    in ``value_fn`` (full batch), the training loss never increases, up to floating-point
    rounding; ``verify_decrease=True`` evaluates the loss at the new point (one more forward
    pass) and refuses the step if it went up, which makes the decrease exact. With mini-batches
    the guarantee covers only the batch ``value_fn`` sees at that step, not the whole training
    loss. Under ``optax.MultiSteps`` the update runs on every micro-batch, so each bound is for
    that micro-batch's loss and the accumulated step has no guarantee.

    Args:
      initial_max_learning_rate: the first trust region ``η_max``.
      verify_decrease: check the new loss and refuse a step that increased it (a Python bool;
        with ``optax.inject_hyperparams`` list it in ``static_args``).
      min_max_learning_rate: a floor for ``η_max`` (0 lets it shrink freely).
      trust_region: ``"refine"`` (a ladder of regions searched coarse to fine; the default),
        ``"ladder"`` (every rung of the ladder), ``"fit"`` (one region per update, resized to
        the step), ``"nested"`` (several regions inside
        ``η_max`` from one degree-3 pass) or ``"halving"`` (the paper's doubling/halving rule);
        a Python string.
      ladder: the rungs as multipliers of ``η_max`` for ``"refine"`` and ``"ladder"`` (by default
        ``2^(j/2)``, ``j = -8..8``), one below and one above 1 (a tuple, so
        ``optax.inject_hyperparams`` leaves it static); the bound pass's region-dependent work
        is done once per rung.
      linear_bound: also bound ``h`` by its degree-1 enclosure on each region and take the
        bound that guarantees more: ``"auto"`` where the quadratic bound met a kink, ``True``
        always, ``False`` never (the quadratic bound alone, the paper's rule).
      working_degree: the degree of the enclosures the bound pass carries through the smooth
        part of the loss before lowering them to degree 2 (``taylor_bounds``'
        ``working_degree``; a Python int >= 2, and with ``optax.inject_hyperparams`` list it in
        ``static_args``). ``None`` (the default) means 3, which makes the bound of a deep smooth
        net several times tighter at the small regions SafeRate's steps use (each layer's
        widening multiplies a degree-3 remainder by ``η_max`` once more); a relu net or a
        logistic regression lowers at its first kink or log-sum-exp, before any nonlinearity,
        and gets the degree-2 bound at the degree-2 cost. 2 is the plain degree-2 pass.

    Raises:
      ValueError: an unknown ``trust_region`` rule, an invalid ``ladder``, ``working_degree``
        or ``linear_bound``.
      TypeError: (from ``update``) ``value_fn`` is missing or does not return a scalar float.

    Returns:
      An ``optax.GradientTransformationExtraArgs``. Its ``update(updates, state, params, *,
      value_fn, value=None, **extra_args)`` requires ``params`` and ``value_fn(params, ...)``,
      the scalar loss; extra arguments whose names ``value_fn`` accepts (for example ``batch``)
      are passed on to it, the others are ignored.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import optax_saferate as osr
      >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
      >>> tx = optax.chain(optax.scale_by_adam(), osr.scale_by_saferate())  # uphill input
      >>> @jax.jit  # one compiled step; an un-jitted update re-traces the bound every call
      ... def step(params, state):
      ...     updates, state = tx.update(jax.grad(loss)(params), state, params, value_fn=loss)
      ...     return optax.apply_updates(params, updates), state
      >>> params = jnp.zeros(2)
      >>> state = tx.init(params)
      >>> for _ in range(20):
      ...     params, state = step(params, state)
      >>> bool(loss(params) < 1e-3)
      True

    References:
      Streeter & Dillon, "Automatically Bounding the Taylor Remainder Series", arXiv:2212.11429;
      "Universal Majorization-Minimization Algorithms", arXiv:2308.00190.
    """
    multipliers = _validate_options(trust_region, ladder)
    if working_degree is None:
        working_degree = DEFAULT_WORKING_DEGREE
    is_int = isinstance(working_degree, int) and not isinstance(working_degree, bool)
    if not is_int or working_degree < 2:
        raise ValueError(
            f"working_degree must be a Python int >= 2 (or None for {DEFAULT_WORKING_DEGREE}), got "
            f"{working_degree!r}; with optax.inject_hyperparams list it in static_args"
        )

    if not (isinstance(linear_bound, bool) or linear_bound == "auto"):
        raise ValueError(
            f'linear_bound must be "auto", True or False, got {linear_bound!r}; with '
            "optax.inject_hyperparams list it in static_args"
        )

    def init_fn(params) -> SafeRateState:
        dtype = _scalar_dtype(params)
        zero = jnp.zeros((), dtype)
        count = jnp.zeros((), jnp.int32)
        return SafeRateState(
            learning_rate=zero,
            max_learning_rate=jnp.asarray(initial_max_learning_rate, dtype),
            value=zero,
            slope=zero,
            curvature_lo=zero,
            curvature_hi=zero,
            predicted_decrease=zero,
            count=count,
            refused_steps=count,
            halvings=count,
            direction_sign=zero,
        )

    def update_fn(
        updates, state: SafeRateState, params=None, *, value_fn=None, value=None, **extra_args
    ):
        del value  # h(0) comes out of the bound pass for free
        if value_fn is None:
            raise TypeError(
                "scale_by_saferate.update needs the loss: pass value_fn=lambda params: loss, "
                "e.g. tx.update(grads, state, params, value_fn=loss_fn)"
            )
        if params is None:
            raise ValueError("scale_by_saferate.update needs params (the point the step starts at)")
        dtype = state.max_learning_rate.dtype
        fn_kwargs = _accepted_arguments(value_fn, extra_args)

        sign = jnp.where(state.direction_sign == 0, 1.0, state.direction_sign).astype(dtype)

        def along_direction(eta):
            step = eta * sign
            moved = jax.tree.map(lambda p, u: p + step * u, params, updates)
            return _check_value(value_fn(moved, **fn_kwargs), dtype)

        max_lr = state.max_learning_rate
        zero = jnp.zeros((), dtype)
        # A NumPy zero is known while tracing: the bound pass then starts from `params` itself
        # and XLA shares its first matmul with the gradient computation.
        # The region's lower end is a NumPy zero too: the engine then knows that end is the
        # reference point and bounds each activation's remainder at the far end only.
        origin = np.zeros((), dtype)

        def bound_over(region_end, working_end=None):
            bound = taylor_bounds(along_direction, 2, working_degree=working_degree)
            working = None if working_end is None else (origin, working_end)
            with kink_report() as kinks:
                h0, slope, curvature = bound(origin, (origin, region_end), working).coefficients
            if not linear_bound or (linear_bound == "auto" and not kinks.found):
                return h0, slope, curvature, jnp.full_like(slope, jnp.inf)
            # The degree-1 pass: its slope interval pays no 1/|u0| kink terms (issue 12).
            _, (_, secant_hi) = taylor_bounds(along_direction, 1)(
                origin, (origin, region_end)
            ).coefficients
            return h0, slope, curvature, secant_hi

        if trust_region == "nested":
            rungs = max_lr * jnp.asarray(NESTED_RUNGS, dtype)
            # The working region is η_max for every rung: the walk up to the lowering point does
            # not depend on the rung and is done once under vmap.
            h0, slope, (curvature_lo, curvature_hi), secant_hi = jax.vmap(
                lambda r: bound_over(r, max_lr)
            )(rungs)
            h0, slope = h0[0], slope[0]
        elif trust_region == "ladder":
            rungs = max_lr * jnp.asarray(multipliers, dtype)
            # vmap over the regions only: what does not depend on T is computed once.
            h0, slope, (curvature_lo, curvature_hi), secant_hi = jax.vmap(bound_over)(rungs)
            h0, slope = h0[0], slope[0]
        elif trust_region == "refine":
            rungs, h0, slope, curvature_lo, curvature_hi, secant_hi = _refine_search(
                bound_over, max_lr * jnp.asarray(multipliers, dtype)
            )
        else:
            rungs = max_lr[None]
            h0, slope, (curvature_lo, curvature_hi), secant_hi = bound_over(max_lr)
            curvature_lo, curvature_hi = curvature_lo[None], curvature_hi[None]
            secant_hi = secant_hi[None]
        # Without linear_bound the secant bound is +inf: it never wins a rung.
        etas, usable, gains = _rung_gains(h0, slope, curvature_hi, rungs, secant_hi)
        best = _best_rung(gains, rungs)
        eta = jnp.where(usable[best], etas[best], zero)
        region = rungs[best]
        curvature_lo, curvature_hi = curvature_lo[best], curvature_hi[best]
        if verify_decrease:
            new_value = along_direction(eta)
            eta = jnp.where(new_value <= h0, eta, zero)
        took_step = eta > 0
        keep = jnp.isfinite(slope) & (slope >= 0)  # no descent along u: not the region's fault
        if trust_region == "nested":
            at_edge = eta >= region * (1 - 1e-3)
            at_top = at_edge & (best == len(NESTED_RUNGS) - 1)
            grown = jnp.where(at_top, 2 * max_lr, NESTED_GROWTH * region)
            moved_to = jnp.where(usable[best], grown, rungs[-1] / 4)
            new_max = jnp.where(keep, max_lr, moved_to)
        elif trust_region in ("ladder", "refine"):
            shrunk = max_lr * multipliers[0] / 4
            moved_to = jnp.where(usable[best], region, shrunk)
            new_max = jnp.where(keep, max_lr, moved_to)
        elif trust_region == "fit":
            # The step h's bound allows grows as the region shrinks towards it (c2_hi(T) grows
            # with T): the best region is the one whose end the step just reaches. Inside it,
            # move half-way there (in log scale), since the next direction differs.
            at_edge = eta >= max_lr * (1 - 1e-3)
            inside = jnp.maximum(eta, max_lr / 16)
            fitted = jnp.sqrt(inside * max_lr)
            moved_to = jnp.where(at_edge, 2 * max_lr, fitted)
            new_max = jnp.where(keep, max_lr, jnp.where(usable[best], moved_to, max_lr / 4))
        else:
            grow = took_step & (eta >= max_lr / 2)
            new_max = jnp.where(grow, 2 * max_lr, jnp.where(keep, max_lr, max_lr / 2))
        new_max = jnp.maximum(new_max, jnp.asarray(min_max_learning_rate, dtype))
        predicted = jnp.where(took_step, gains[best], zero)
        undecided = state.direction_sign == 0
        decided_sign = jnp.where(slope > 0, -sign, sign)
        direction_sign = jnp.where(
            undecided & jnp.isfinite(slope) & (slope != 0), decided_sign, state.direction_sign
        )
        step = eta * sign
        scaled = jax.tree.map(lambda u: (step * u).astype(jnp.result_type(u)), updates)
        new_state = SafeRateState(
            learning_rate=eta,
            max_learning_rate=new_max.astype(dtype),
            value=jnp.where(jnp.isfinite(h0), h0, zero),
            slope=jnp.where(jnp.isfinite(slope), slope, zero),
            curvature_lo=curvature_lo,
            curvature_hi=curvature_hi,
            predicted_decrease=predicted,
            count=state.count + 1,
            refused_steps=state.refused_steps + (~took_step).astype(jnp.int32),
            halvings=state.halvings + (new_max < max_lr).astype(jnp.int32),
            direction_sign=direction_sign.astype(dtype),
        )
        return scaled, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def saferate(
    base_optimizer: optax.GradientTransformation,
    initial_max_learning_rate: float = 1.0,
    verify_decrease: bool = False,
    min_max_learning_rate: float = 0.0,
    trust_region: str = "refine",
    ladder: tuple[float, ...] = DEFAULT_LADDER,
    working_degree: int | None = None,
    linear_bound: bool | str = "auto",
) -> optax.GradientTransformationExtraArgs:
    """``optax.chain(base_optimizer, scale_by_saferate(...))``.

    Build the base optimizer with learning rate 1 (``optax.adam(1.0)``, ``optax.sgd(1.0)``): its
    update is then the direction, and SafeRate picks the step size along it. optax updates are
    already negative (downhill) directions; SafeRate keeps that sign convention.

    Args:
      base_optimizer: any optax transformation producing the direction.
      initial_max_learning_rate: see :func:`scale_by_saferate`.
      verify_decrease: see :func:`scale_by_saferate`.
      min_max_learning_rate: see :func:`scale_by_saferate`.
      trust_region: see :func:`scale_by_saferate`.
      ladder: see :func:`scale_by_saferate`.
      working_degree: see :func:`scale_by_saferate`.
      linear_bound: see :func:`scale_by_saferate`.

    Returns:
      The chained transformation; call ``update(grads, state, params, value_fn=loss_fn)``.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import optax_saferate as osr
      >>> loss = lambda p: jnp.sum(jnp.log1p(jnp.exp(-p)))
      >>> tx = osr.saferate(optax.adam(1.0))
      >>> params = jnp.zeros(3)
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jax.grad(loss)(params), state, params, value_fn=loss)
      >>> bool(loss(optax.apply_updates(params, updates)) < loss(params))
      True
    """
    return optax.chain(
        base_optimizer,
        scale_by_saferate(
            initial_max_learning_rate,
            verify_decrease,
            min_max_learning_rate,
            trust_region,
            ladder,
            working_degree,
            linear_bound,
        ),
    )
