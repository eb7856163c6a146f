"""Functions AutoBound recognises by name, and how to teach it new ones.

JAX wraps ``jax.nn.relu``, ``softplus``, ``silu``, ``leaky_relu``, ``elu``, ``logaddexp`` (and any
function a user registers) in a named ``jit`` or a ``custom_jvp``/``custom_vjp`` call; the
interpreter looks the name up in :data:`NAMED_FUNCTIONS` and applies the sharp rule here instead
of walking the call's body (whose ``max``/``abs`` for numerical stability would hide that the
function is smooth). ``register_elementwise`` and ``register_primitive`` are the public hooks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array
from jax.extend import core as jcore

from optax_saferate.autobound import elementwise
from optax_saferate.autobound import enclosures
from optax_saferate.autobound import kinks
from optax_saferate.autobound import rules
from optax_saferate.autobound import smooth_functions
from optax_saferate.autobound.elementwise import ElementwiseFunction
from optax_saferate.autobound.enclosures import TaylorEnclosure

# Functions recognised by name when JAX wraps them in a named jit or a custom_jvp/custom_vjp.
NAMED_FUNCTIONS: dict[str, Callable] = {}
# Named calls whose rules have a sharp form at degree 2 only: a mixed-degree pass lowers there.
_KINKED_NAMED = frozenset({"relu", "relu6", "leaky_relu", "elu"})
# The parameters under which a call primitive (jit, custom_jvp_call, ...) holds its body.
_CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def _call_name(eqn) -> str | None:
    """The function name of a named call: ``jit`` has a ``name`` parameter; ``custom_jvp_call``
    and ``custom_vjp_call`` only carry it in the debug info of their body."""
    name = eqn.params.get("name")
    if name is not None:
        return name
    for key in _CALL_PARAMS:
        body = eqn.params.get(key)
        info = getattr(getattr(body, "jaxpr", body), "debug_info", None)
        if info is not None and getattr(info, "func_name", None):
            return info.func_name
    return None


def _single_input(rule):
    """Adapt ``rule(env, ctx, x)`` to named calls whose first input is the enclosure."""

    def named(env, ctx, eqn, inputs):
        if len(inputs) != 1:
            return None
        return [rule(env, ctx, inputs[0])]

    return named


def _value_at(eqn, like: TaylorEnclosure, point: float) -> float:
    """Evaluate a named call's body at a constant point, at trace time (to read a parameter)."""
    for key in _CALL_PARAMS:
        body = eqn.params.get(key)
        if isinstance(body, jcore.ClosedJaxpr):
            with jax.ensure_compile_time_eval():
                x = jnp.full(like.shape, point, like.dtype)
                return float(jnp.ravel(jcore.jaxpr_as_fun(body)(x)[0])[0])
    raise ValueError("named call without a body")


def _slope_parameter(eqn, inputs, point: float):
    """``α`` of leaky_relu/elu: the call's second operand when JAX passes it (a non-default
    value), else read back from the body (``-f(point)``); ``None`` if it depends on the input."""
    if len(inputs) == 2 and rules.is_constant(inputs[1]) and jnp.ndim(inputs[1]) == 0:
        return inputs[1]
    if len(inputs) == 1:
        return -_value_at(eqn, inputs[0], point)
    return None


def _leaky_relu(env, ctx, eqn, inputs):
    # leaky_relu(x) = α·x + (1 - α)·relu(x); α is the second operand or f(-1) = -α.
    alpha = _slope_parameter(eqn, inputs, -1.0)
    if alpha is None:
        return None
    x = inputs[0]
    relu = rules.apply_relu(env, ctx, x)
    return [enclosures.add(enclosures.scale(x, alpha), enclosures.scale(relu, 1 - alpha), ctx)]


def _elu(env, ctx, eqn, inputs):
    # elu_α = α·g + (1 - α)·relu with g the C¹ core; α is the second operand or the limit of
    # -f at -inf.
    alpha = _slope_parameter(eqn, inputs, -1e4)
    if alpha is None:
        return None
    x = inputs[0]
    if ctx.degree >= 3:
        # elu'' jumps at 0, so no sharp core exists beyond degree 2; the composition
        # elu = relu(x) + α·expm1(-relu(-x)) stays finite across the kink (relu's own rule).
        positive = rules.apply_relu(env, ctx, x)
        negative = enclosures.negate(rules.apply_relu(env, ctx, enclosures.negate(x)))
        tail = rules.apply_function(env, ctx, smooth_functions.EXPM1, negative)
        return [enclosures.add(positive, enclosures.scale(tail, alpha), ctx)]
    core = enclosures.scale(rules.apply_function(env, ctx, kinks.ELU_CORE, x), alpha)
    if isinstance(alpha, float) and alpha == 1.0:
        return [core]
    relu = enclosures.scale(rules.apply_relu(env, ctx, x), 1.0 - alpha)
    return [enclosures.add(core, relu, ctx)]


def _relu6(env, ctx, x):
    upper = rules.apply_relu(env, ctx, enclosures.add_constant(x, -6.0))
    return enclosures.add(rules.apply_relu(env, ctx, x), enclosures.negate(upper), ctx)


def _logaddexp(env, ctx, eqn, inputs):
    if len(inputs) != 2:
        return None
    a, b = inputs
    if not isinstance(b, TaylorEnclosure):
        # logaddexp(a, c) = c + softplus(a - c)
        shifted = enclosures.add_constant(a, -b)
        softplus = rules.apply_function(env, ctx, smooth_functions.SOFTPLUS, shifted)
        return [enclosures.add_constant(softplus, b)]
    difference = rules._subtract_values(ctx, a, b)
    softplus = rules.apply_function(env, ctx, smooth_functions.SOFTPLUS, difference)
    return [enclosures.add(b, softplus, ctx)]


def register_elementwise(
    name: str,
    fn: Callable[[Array], Array],
    critical_points: Callable[[int], tuple[float, ...] | None] | tuple = (),
    *,
    derivative: Callable[[int, Array], Array] | None = None,
    domain: tuple[float, float] = (-math.inf, math.inf),
    domain_open_lower: bool = False,
) -> ElementwiseFunction:
    """Teach AutoBound an elementwise function that JAX calls by name.

    The function must reach the jaxpr as one named call: wrap it in ``jax.jit`` (the jaxpr
    shows ``jit[name=<name>]``) or define it with ``jax.custom_jvp``/``custom_vjp``. Its enclosure
    then follows DESIGN §3.3: sharp where a derivative is monotone, classical elsewhere.

    Args:
      name: the function's ``__name__`` as it appears in the jaxpr.
      fn: the elementwise function (used for values; derivatives come from autodiff of it unless
        ``derivative`` is given).
      critical_points: where each derivative ``σ^(j)`` has a local extremum; a table (tuple of
        tuples, one per order ``j = 0, 1, …``) or a function ``j -> points`` (``None`` for
        unknown orders, which are then refused). ``()`` means every derivative is monotone.
      derivative: optional closed form ``(order, x) -> σ^(order)(x)``.
      domain: the interval on which ``fn`` is defined (closed unless said otherwise).
      domain_open_lower: the lower end of ``domain`` is excluded (``log``-like functions,
        defined on ``(0, inf)``): a range that reaches it gets an unbounded enclosure.

    Returns:
      The registered :class:`ElementwiseFunction`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from optax_saferate import autobound as ab
      >>> @jax.jit
      ... def cube_plus_x(x):
      ...     return x**3 + x
      >>> points = lambda j: (0.0,) if j == 1 else ()  # x³ + x: x³'s derivative is least at 0
      >>> _ = ab.register_elementwise("cube_plus_x", cube_plus_x, points)
      >>> float(ab.taylor_bounds(cube_plus_x, 2)(1.0, (1.0, 2.0)).final_interval()[1])
      4.0
    """
    if isinstance(critical_points, tuple):
        table = critical_points
        points = (lambda order: ()) if not table else elementwise.critical_point_table(table)
    else:
        points = critical_points
    spec = ElementwiseFunction(
        name,
        fn,
        points,
        derivative=derivative,
        domain=domain,
        domain_open_lower=domain_open_lower,
    )

    def named(env, ctx, eqn, inputs):
        if len(inputs) != 1:
            return None
        return [rules.apply_function(env, ctx, spec, inputs[0])]

    NAMED_FUNCTIONS[name] = named
    return spec


def register_primitive(primitive: jcore.Primitive, rule: Callable) -> None:
    """Register ``rule(env, ctx, eqn, *inputs) -> value`` for a primitive (advanced)."""
    rules.RULES[primitive] = rule


NAMED_FUNCTIONS.update(
    relu=_single_input(rules.apply_relu),
    relu6=_single_input(_relu6),
    silu=_single_input(
        lambda env, ctx, x: rules.apply_function(env, ctx, smooth_functions.SWISH, x)
    ),
    swish=_single_input(
        lambda env, ctx, x: rules.apply_function(env, ctx, smooth_functions.SWISH, x)
    ),
    softplus=_single_input(
        lambda env, ctx, x: rules.apply_function(env, ctx, smooth_functions.SOFTPLUS, x)
    ),
    leaky_relu=_leaky_relu,
    elu=_elu,
    logaddexp=_logaddexp,
)
