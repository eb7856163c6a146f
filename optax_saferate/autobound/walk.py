"""The jaxpr walk behind :func:`~optax_saferate.autobound.taylor_bounds`.

``f`` is traced once per input shape with ``jax.make_jaxpr``; each equation is dispatched to its
rule in :mod:`~optax_saferate.autobound.rules` (or to a named function's rule, or walked into
when it is a nested call), and a mixed-degree pass lowers its degree at the first equation that
needs it. Everything the walk emits is ordinary JAX, so ``taylor_bounds`` runs under
``jax.jit`` and ``vmap`` and a jitted caller compiles once.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore
from jax.extend.core import primitives as P

from optax_saferate.autobound import enclosures
from optax_saferate.autobound import logsumexp as lse
from optax_saferate.autobound import rules
from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval
from optax_saferate.autobound.named_functions import _CALL_PARAMS
from optax_saferate.autobound.named_functions import _KINKED_NAMED
from optax_saferate.autobound.named_functions import NAMED_FUNCTIONS
from optax_saferate.autobound.named_functions import _call_name

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


def _no_ranges(key, ctx, value):
    return None


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
