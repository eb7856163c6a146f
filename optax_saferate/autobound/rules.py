"""The table from JAX primitives to enclosure rules.

A rule receives the :class:`~optax_saferate.autobound.enclosures.Context`, the equation and its
input values, at least one of which is not a constant (a :class:`TaylorEnclosure`, or a value
inside a recognised pattern), and returns the output value (a list for multi-output primitives).
Equations whose inputs are all constants never reach a rule: the interpreter evaluates them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import primitives as P

from optax_saferate.autobound import elementwise
from optax_saferate.autobound import enclosures
from optax_saferate.autobound import intervals
from optax_saferate.autobound import kinks
from optax_saferate.autobound import logsumexp as lse
from optax_saferate.autobound import maximum as maximum_rule
from optax_saferate.autobound import smooth_functions
from optax_saferate.autobound.elementwise import ElementwiseFunction
from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval

Rule = Callable[..., object]
RULES: dict[object, Rule] = {}


def is_constant(x) -> bool:
    return not isinstance(x, (TaylorEnclosure, lse.PatternValue, Comparison))


@dataclasses.dataclass(frozen=True, eq=False)
class Comparison:
    """A boolean that depends on the input: ``difference (op) 0`` elementwise.

    It is only usable as the predicate of ``select_n``. Where the range of ``difference`` keeps
    one sign over the trust region the choice is constant and the select is exact; elsewhere the
    case chosen at the reference point gets the jump to the other case as a degree-``k`` term,
    finite when the reference point is off the switching point (``_switch_allowance``), and
    unbounded (sound) on it.
    """

    difference: TaylorEnclosure
    strict_positive: bool  # True for `> 0`, False for `>= 0`
    nonzero: bool = False  # True for `!= 0` (then strict_positive does not matter)
    negated: bool = False  # True for `== 0`: the negation of `!= 0` (select_n swaps its cases)


class Environment:
    """What rules may ask of the interpreter: evaluate a nested jaxpr, know input ranges."""

    def __init__(self, evaluate_jaxpr, known_ranges, ctx: Context | None = None, lower_to=None):
        self.evaluate_jaxpr = evaluate_jaxpr
        self.known_ranges = known_ranges
        # The walk's current context, and the degree it drops to at the first equation with a
        # sharp rule at that degree only (a mixed-degree pass; see interpreter.taylor_bounds).
        self.ctx = ctx
        self.lower_to = lower_to
        # The equation being evaluated (a key that is the same in every pass over the jaxpr:
        # the equation and how many times this pass has evaluated it) and its first input.
        self.current = (None, None)
        self.visits: dict[int, int] = {}

    def next_range(self, ctx: Context, value: TaylorEnclosure) -> Interval | None:
        """The range ``propagate_trust_regions`` recorded for ``value``, or ``None``.

        Only an equation's own first input has one: the degree-0 pass and the enclosure pass
        may take different routes inside one rule (a max as one rule or a tree of relus, elu
        as one core or two relus), so a range is found by the equation, never by call order.
        """
        key, first = self.current
        if key is None or value is not first:
            return None
        return self.known_ranges(key, ctx, value)

    def enter(self, eqn, inputs) -> None:
        """Mark ``eqn`` (with ``inputs``) as the equation being evaluated."""
        count = self.visits.get(id(eqn), 0)
        self.visits[id(eqn)] = count + 1
        self.current = ((id(eqn), count), inputs[0] if inputs else None)


def register(*primitives):
    def decorate(rule):
        for p in primitives:
            RULES[p] = rule
        return rule

    return decorate


def _as_enclosure(x, like: TaylorEnclosure) -> TaylorEnclosure:
    if isinstance(x, TaylorEnclosure):
        return x
    return enclosures.exact(jnp.broadcast_to(jnp.asarray(x, like.dtype), like.shape))


def _out_shape(eqn):
    return tuple(eqn.outvars[0].aval.shape)


def _fit(value: TaylorEnclosure, eqn) -> TaylorEnclosure:
    """Broadcast every term to the equation's output shape (jaxprs broadcast scalars)."""
    shape = _out_shape(eqn)
    if value.shape == shape:
        return value
    return enclosures.map_monotone(lambda c: jnp.broadcast_to(c, shape), value)


# --------------------------------------------------------------------------- elementwise


def apply_function(env, ctx, spec: ElementwiseFunction, x: TaylorEnclosure) -> TaylorEnclosure:
    return elementwise.enclose(spec, x, ctx, env.next_range(ctx, x))


def apply_relu(env, ctx, x: TaylorEnclosure) -> TaylorEnclosure:
    return kinks.enclose_relu(x, ctx, env.next_range(ctx, x))


_SIMPLE_FUNCTIONS = {
    P.exp_p: smooth_functions.EXP,
    P.log_p: smooth_functions.LOG,
    P.log1p_p: smooth_functions.LOG1P,
    P.expm1_p: smooth_functions.EXPM1,
    P.logistic_p: smooth_functions.SIGMOID,
    P.tanh_p: smooth_functions.TANH,
    P.erf_p: smooth_functions.ERF,
    P.erfc_p: smooth_functions.ERFC,
    P.sin_p: smooth_functions.SIN,
    P.cos_p: smooth_functions.COS,
    P.sqrt_p: smooth_functions.SQRT,
    P.rsqrt_p: smooth_functions.RSQRT,
}


def _simple_rule(spec):
    def rule(env, ctx, eqn, x):
        return apply_function(env, ctx, spec, x)

    return rule


for _primitive, _spec in _SIMPLE_FUNCTIONS.items():
    RULES[_primitive] = _simple_rule(_spec)


@register(P.integer_pow_p)
def _integer_pow(env, ctx, eqn, x):
    return _integer_pow_value(env, ctx, x, eqn.params["y"])


@register(P.square_p)
def _square(env, ctx, eqn, x):
    return apply_function(env, ctx, smooth_functions.integer_power(2), x)


@register(P.pow_p)
def _pow(env, ctx, eqn, base, exponent):
    if isinstance(base, TaylorEnclosure) and is_constant(exponent):
        p = np.asarray(exponent)
        if p.ndim == 0 and not isinstance(exponent, jax.core.Tracer):
            p = float(p)
            if p.is_integer():
                return _integer_pow_value(env, ctx, base, int(p))
            return apply_function(env, ctx, smooth_functions.real_power(p), base)
    # base**e = exp(e·log(base)) for a positive base.
    log_base = (
        apply_function(env, ctx, smooth_functions.LOG, base)
        if isinstance(base, TaylorEnclosure)
        else jnp.log(base)
    )
    product = _multiply_values(ctx, log_base, exponent)
    return apply_function(env, ctx, smooth_functions.EXP, _fit(product, eqn))


def _integer_pow_value(env, ctx, x, n):
    if n == 0:
        return jnp.ones(x.shape, x.dtype)
    if n == 1:
        return x
    return apply_function(env, ctx, smooth_functions.integer_power(n), x)


@register(P.abs_p)
def _abs(env, ctx, eqn, x):
    if isinstance(x, lse.PatternValue) and x.stage == lse.SUM:
        return x  # the sum of exponentials is positive
    return enclosures.add(apply_relu(env, ctx, x), apply_relu(env, ctx, enclosures.negate(x)), ctx)


@register(P.sign_p)
def _sign(env, ctx, eqn, x):
    if isinstance(x, lse.PatternValue) and x.stage == lse.SUM:
        return lse.sum_sign(x)
    r = enclosures.range_over(x, ctx)
    if not x.coefficients:  # degree 0: sign is monotone
        return TaylorEnclosure((), Interval(jnp.sign(r.lo), jnp.sign(r.hi)))
    value = jnp.sign(x.coefficients[0])
    constant = (r.lo > 0) | (r.hi < 0)
    spread = jnp.where(constant, 0.0, jnp.inf).astype(x.dtype)
    zero = jnp.zeros_like(value)
    return enclosures.with_remainder(
        (value,) + (zero,) * (ctx.degree - 1), Interval(-spread, spread), ctx
    )


def maximum(env, ctx, a, b):
    """``max(a, b) = b + relu(a - b)`` (constants allowed on either side), with the value at the
    reference point taken exactly as ``max(a0, b0)``.

    Where ``a - b`` keeps one sign over the trust region the result is ``a`` or ``b`` itself:
    ``b + (a - b)`` would add the remainder of ``b`` twice.
    """
    if not isinstance(b, TaylorEnclosure):
        a, b = b, a  # make `b` the enclosure
    difference = _subtract_values(ctx, a, b)
    merged = enclosures.add(b, apply_relu(env, ctx, difference), ctx)
    merged = _with_value(merged, jnp.maximum, a, b)
    return _exact_where_one_side(ctx, difference, a, b, merged)


def minimum(env, ctx, a, b):
    """``min(a, b) = a - relu(a - b)`` with the value ``min(a0, b0)`` exact, or ``a`` or ``b``
    itself where one is always smaller."""
    if not isinstance(a, TaylorEnclosure):
        a, b = b, a
    difference = _subtract_values(ctx, a, b)
    merged = enclosures.add(a, enclosures.negate(apply_relu(env, ctx, difference)), ctx)
    merged = _with_value(merged, jnp.minimum, a, b)
    return _exact_where_one_side(ctx, difference, b, a, merged)


def _with_value(merged: TaylorEnclosure, pick, a, b) -> TaylorEnclosure:
    """``merged`` with its value at the reference point set to ``pick(a0, b0)``, exactly.

    ``b0 + relu(a0 - b0)`` rounds: with ``|a0|`` far below ``|b0|`` it loses ``a0`` altogether
    (``max(-1e-45, -0.5)`` came out as 0), while ``max`` and ``min`` of two floats are exact.
    """
    a, b = _as_enclosure(a, merged), _as_enclosure(b, merged)
    if not (merged.coefficients and a.coefficients and b.coefficients):
        return merged  # degree 0: the enclosure is a range, not a value
    a0, b0 = a.coefficients[0], b.coefficients[0]
    value = jnp.broadcast_to(pick(a0, b0), merged.shape).astype(merged.dtype)
    return TaylorEnclosure((value, *merged.coefficients[1:]), merged.remainder)


def _exact_where_one_side(ctx, difference, when_positive, when_negative, merged):
    """``when_positive`` where ``difference >= 0`` on all of ``T``, ``when_negative`` where it
    is ``<= 0``, ``merged`` elsewhere."""
    r = enclosures.range_over(difference, ctx)

    def full(x):
        x = _as_enclosure(x, merged)
        if x.shape == merged.shape:
            return x
        return enclosures.map_monotone(lambda c: jnp.broadcast_to(c, merged.shape), x)

    choice = elementwise.select(r.hi <= 0, full(when_negative), merged, ctx)
    return elementwise.select(r.lo >= 0, full(when_positive), choice, ctx)


@register(P.max_p)
def _max(env, ctx, eqn, a, b):
    for value, other in ((a, b), (b, a)):
        if isinstance(value, lse.PatternValue) and value.stage == lse.MAX:
            if is_constant(other) and np.all(np.asarray(other) == -np.inf):
                return value
            return _max(env, ctx, eqn, *[materialize(ctx, env, v) for v in (a, b)])
    return _fit(maximum(env, ctx, a, b), eqn)


@register(P.min_p)
def _min(env, ctx, eqn, a, b):
    return _fit(minimum(env, ctx, a, b), eqn)


@register(P.clamp_p)
def _clamp(env, ctx, eqn, low, x, high):
    return _fit(minimum(env, ctx, maximum(env, ctx, x, low), high), eqn)


# --------------------------------------------------------------------------- arithmetic


def _subtract_values(ctx, a, b):
    if isinstance(a, TaylorEnclosure) and isinstance(b, TaylorEnclosure):
        return enclosures.add(a, enclosures.negate(b), ctx)
    if isinstance(a, TaylorEnclosure):
        return enclosures.add_constant(a, -b)
    return enclosures.add_constant(enclosures.negate(b), a)


def _multiply_values(ctx, a, b):
    if isinstance(a, TaylorEnclosure) and isinstance(b, TaylorEnclosure):
        return enclosures.multiply(a, b, ctx)
    if isinstance(a, TaylorEnclosure):
        return enclosures.scale(a, b)
    if isinstance(b, TaylorEnclosure):
        return enclosures.scale(b, a)
    return a * b


@register(P.add_p, P.add_jaxvals_p)
def _add(env, ctx, eqn, a, b):
    for value, other in ((a, b), (b, a)):
        if isinstance(value, lse.PatternValue) and isinstance(other, lse.PatternValue):
            if value.stage == lse.LOG and other.stage == lse.SHIFT:
                # log(sum(b·exp(z - s))) + s = LSE(z + log b), if s is the shift of each row.
                rows = lse.same_shift_by_row(value, other, _out_shape(eqn))
                if rows is None:
                    raise lse.pattern_error("add (of another shift)", value, _source(eqn))
                result = lse.weighted_logsumexp(value.z, value.weights, value.axes, ctx)
                shape = _out_shape(eqn)
                return enclosures.map_monotone(
                    lambda c, rows=rows, shape=shape: lse.lay_out(c, rows, shape), result
                )
    for value in (a, b):
        if isinstance(value, lse.PatternValue):
            raise lse.pattern_error("add", value, _source(eqn))
    if isinstance(a, TaylorEnclosure) and isinstance(b, TaylorEnclosure):
        return _fit(enclosures.add(a, b, ctx), eqn)
    if isinstance(a, TaylorEnclosure):
        return _fit(enclosures.add_constant(a, b), eqn)
    return _fit(enclosures.add_constant(b, a), eqn)


@register(P.sub_p)
def _sub(env, ctx, eqn, a, b):
    if isinstance(b, lse.PatternValue) and b.stage == lse.SHIFT and isinstance(a, TaylorEnclosure):
        # z - s, with s = stop_gradient(max(...)): any shift cancels later (see logsumexp.py).
        value = lse.shifted(a, b, _out_shape(eqn))
        if value is not None:
            return value
    if isinstance(a, lse.PatternValue) and a.stage == lse.SHIFTED:
        if isinstance(b, lse.PatternValue) and b.stage == lse.LOG and lse.broadcast_back(a, b):
            return lse.log_softmax(a.z, b.axes, ctx, b.weights)
    for value in (a, b):
        if isinstance(value, lse.PatternValue):
            raise lse.pattern_error("sub", value, _source(eqn))
    return _fit(_subtract_values(ctx, a, b), eqn)


@register(P.neg_p)
def _neg(env, ctx, eqn, x):
    return enclosures.negate(x)


@register(P.mul_p)
def _mul(env, ctx, eqn, a, b):
    for value, other in ((a, b), (b, a)):
        if isinstance(value, lse.PatternValue):
            if value.stage == lse.EXP and is_constant(other):
                return lse.weighted(value, other, _source(eqn))  # logsumexp(..., b=other)
            raise lse.pattern_error("mul", value, _source(eqn))
    if eqn.invars[0] is eqn.invars[1] and isinstance(a, TaylorEnclosure):
        return apply_function(env, ctx, smooth_functions.integer_power(2), a)
    return _fit(_multiply_values(ctx, a, b), eqn)


@register(P.div_p)
def _div(env, ctx, eqn, a, b):
    if isinstance(a, lse.PatternValue) and a.stage == lse.EXP and a.weights is None:
        if isinstance(b, lse.PatternValue) and b.stage == lse.SUM and lse.broadcast_back(a, b):
            return lse.softmax(a.z, b.axes, ctx, b.weights)
    for value in (a, b):
        if isinstance(value, lse.PatternValue):
            raise lse.pattern_error("div", value, _source(eqn))
    if isinstance(a, TaylorEnclosure) and is_constant(b):
        return _fit(_divide_by_constant(a, b), eqn)
    reciprocal = (
        apply_function(env, ctx, smooth_functions.RECIPROCAL, b)
        if isinstance(b, TaylorEnclosure)
        else 1.0 / b
    )
    return _fit(_multiply_values(ctx, a, reciprocal), eqn)


def _divide_by_constant(a: TaylorEnclosure, c) -> TaylorEnclosure:
    remainder = None
    if a.remainder is not None:
        p, q = a.remainder.lo / c, a.remainder.hi / c
        remainder = Interval(jnp.minimum(p, q), jnp.maximum(p, q))
    return TaylorEnclosure(tuple(x / c for x in a.coefficients), remainder)


# --------------------------------------------------------------------------- bilinear


def _dot_general_many(params):
    """``[dot_general(x, y) for y in ys]`` as one dot_general against the ``ys`` concatenated
    along the right operand's last free axis (each large ``x`` is then read once)."""
    (_, rhs_contracting), (_, rhs_batch) = params["dimension_numbers"]

    def many(x, ys):
        ys = [jnp.asarray(y) for y in ys]
        rank = ys[0].ndim
        free = [d for d in range(rank) if d not in rhs_contracting and d not in rhs_batch]
        if not free or any(y.shape != ys[0].shape or y.dtype != ys[0].dtype for y in ys):
            return [P.dot_general_p.bind(x, y, **params) for y in ys]
        axis = free[-1]
        out = P.dot_general_p.bind(x, jnp.concatenate(ys, axis=axis), **params)
        # dot_general's output axes: batch, then x's free axes, then y's free axes (last here).
        return jnp.split(out, len(ys), axis=out.ndim - 1)

    return many


def _bilinear_rule(eqn_params_op):
    def rule(env, ctx, eqn, a, b):
        op = functools.partial(eqn_params_op.bind, **eqn.params)
        if isinstance(a, TaylorEnclosure) and isinstance(b, TaylorEnclosure):
            many = _dot_general_many(eqn.params) if eqn_params_op is P.dot_general_p else None
            return enclosures.multiply(a, b, ctx, op, elementwise=False, op_many=many)
        if isinstance(a, TaylorEnclosure):
            return _one_sided_bilinear(lambda x: op(x, b), lambda x: op(x, jnp.abs(b)), a)
        return _one_sided_bilinear(lambda y: op(a, y), lambda y: op(jnp.abs(a), y), b)

    return rule


def _one_sided_bilinear(fn, fn_abs, a: TaylorEnclosure) -> TaylorEnclosure:
    return enclosures.map_linear(fn, fn_abs, a)


RULES[P.dot_general_p] = _bilinear_rule(P.dot_general_p)
RULES[P.conv_general_dilated_p] = _bilinear_rule(P.conv_general_dilated_p)


# --------------------------------------------------------------------------- structural


def _structural(primitive):
    """Ops that copy, sum or rearrange elements: applied to every term and interval end."""

    def rule(env, ctx, eqn, x, *rest):
        if isinstance(x, lse.PatternValue):
            return _pattern_structural(ctx, env, primitive, eqn, x, rest)
        if isinstance(x, Comparison) and all(is_constant(r) for r in rest):
            # A broadcast or reshaped mask: rearrange the difference it compares with 0.
            moved = rule(env, ctx, eqn, x.difference, *rest)
            return dataclasses.replace(x, difference=moved)
        if any(not is_constant(r) for r in rest):
            raise NotImplementedError(
                f"`{primitive}` with an input-dependent index or size at {_source(eqn)}: "
                "AutoBound needs indices that do not depend on the bounded input"
            )
        return enclosures.map_monotone(lambda c: primitive.bind(c, *rest, **eqn.params), x)

    return rule


for _primitive in (
    P.reshape_p,
    P.broadcast_in_dim_p,
    P.transpose_p,
    P.squeeze_p,
    P.slice_p,
    P.dynamic_slice_p,
    P.gather_p,
    P.rev_p,
    P.copy_p,
    P.reduce_sum_p,
    P.cumsum_p,
    P.reduce_window_sum_p,
    P.sharding_constraint_p,
    P.device_put_p,
    P.copy_p,
):
    RULES[_primitive] = _structural(_primitive)


@register(P.convert_element_type_p)
def _convert(env, ctx, eqn, x):
    new_dtype = eqn.params["new_dtype"]
    if isinstance(x, lse.PatternValue):
        return x
    if isinstance(x, Comparison) and jnp.issubdtype(new_dtype, jnp.floating):
        # A 0/1 step of the input (derivatives of max and relu convert such masks).
        zero, one = (jnp.full(_out_shape(eqn), v, new_dtype) for v in (0, 1))
        return _select_by_comparison(ctx, eqn, x, (zero, one))
    if not jnp.issubdtype(new_dtype, jnp.floating):
        raise NotImplementedError(
            f"converting an input-dependent value to {new_dtype} at {_source(eqn)} is not "
            "differentiable; AutoBound cannot bound it"
        )
    return enclosures.map_monotone(lambda c: c.astype(new_dtype), x)


@register(P.concatenate_p)
def _concatenate(env, ctx, eqn, *operands):
    return _combine(ctx, eqn, P.concatenate_p, operands, ())


def _stack(env, ctx, eqn, *operands):
    return _combine(ctx, eqn, lax.stack_p, operands, ())


def _split(primitive):
    """``split``/``unstack``: one structural op, several outputs (one enclosure each)."""

    def rule(env, ctx, eqn, x):
        x = materialize(ctx, env, x)

        def parts(c):
            return primitive.bind(c, **eqn.params)

        coefficients = [parts(c) for c in x.coefficients]
        ends = None if x.remainder is None else [parts(e) for e in x.remainder]
        return [
            TaylorEnclosure(
                tuple(c[i] for c in coefficients),
                None if ends is None else Interval(ends[0][i], ends[1][i]),
            )
            for i in range(len(eqn.outvars))
        ]

    return rule


# jnp.stack and jnp.split bind these (jax >= 0.6); older versions lower to concatenate/slice.
if hasattr(lax, "stack_p"):
    RULES[lax.stack_p] = _stack
for _name in ("split_p", "unstack_p"):
    if hasattr(lax, _name):
        RULES[getattr(lax, _name)] = _split(getattr(lax, _name))


@register(P.pad_p)
def _pad(env, ctx, eqn, x, padding_value):
    if not is_constant(padding_value):
        raise NotImplementedError(f"pad with an input-dependent value at {_source(eqn)}")
    config = eqn.params["padding_config"]
    if not x.coefficients:  # degree 0: the remainder is the value range itself
        ends = (P.pad_p.bind(e, padding_value, padding_config=config) for e in x.remainder)
        return TaylorEnclosure((), Interval(*ends))
    coefficients = [P.pad_p.bind(x.coefficients[0], padding_value, padding_config=config)]
    zero = jnp.zeros((), x.dtype)
    coefficients += [P.pad_p.bind(c, zero, padding_config=config) for c in x.coefficients[1:]]
    remainder = None
    if x.remainder is not None:
        remainder = Interval(*(P.pad_p.bind(e, zero, padding_config=config) for e in x.remainder))
    return TaylorEnclosure(tuple(coefficients), remainder)


@register(P.dynamic_update_slice_p)
def _dynamic_update_slice(env, ctx, eqn, operand, update, *indices):
    if any(not is_constant(i) for i in indices):
        raise NotImplementedError(
            f"dynamic_update_slice with input-dependent indices at {_source(eqn)}"
        )
    return _combine(ctx, eqn, P.dynamic_update_slice_p, (operand, update), indices)


def _combine(ctx, eqn, primitive, operands, trailing):
    def fn(*terms):
        return primitive.bind(*terms, *trailing, **eqn.params)

    return enclosures.combine_monotone(fn, operands, ctx)


@register(P.select_n_p)
def _select_n(env, ctx, eqn, predicate, *cases):
    if isinstance(predicate, lse.PatternValue) and predicate.stage == lse.FINITE:
        # jnp.where(isfinite(max), max, 0): finite logits keep the max.
        for case in cases:
            if isinstance(case, lse.PatternValue) and case.stage == lse.MAX:
                return case
    if is_constant(predicate) and any(
        isinstance(c, lse.PatternValue) and c.stage == lse.EXP for c in cases
    ):
        if len(cases) != 2:
            raise NotImplementedError(f"select_n with {len(cases)} cases at {_source(eqn)}")
        return lse.selected(predicate, cases, _source(eqn))  # jnp.sum(exp, where=mask)
    if any(isinstance(c, lse.PatternValue) for c in cases):
        cases = tuple(materialize(ctx, env, c) for c in cases)
    if is_constant(predicate):
        return enclosures.combine_monotone(
            lambda *terms: P.select_n_p.bind(predicate, *terms), cases, ctx
        )
    if isinstance(predicate, Comparison):
        return _select_by_comparison(ctx, eqn, predicate, cases)
    raise NotImplementedError(
        f"select_n with predicate {type(predicate).__name__} at {_source(eqn)}"
    )


def _select_by_comparison(ctx, eqn, comparison: Comparison, cases):
    d = comparison.difference
    r = enclosures.range_over(d, ctx)
    if d.coefficients:
        d0 = d.coefficients[0]
        at_reference = d0 > 0 if comparison.strict_positive else d0 >= 0
        if comparison.nonzero:
            at_reference = d0 != 0
    else:  # degree 0: only elements whose range keeps one sign are kept, decided by it
        at_reference = (r.lo > 0) | (r.hi < 0) if comparison.nonzero else r.lo > 0
    # The choice is the same for every t when the range of d stays strictly on one side of 0.
    constant = (r.lo > 0) | (r.hi < 0)
    if len(cases) != 2:
        raise NotImplementedError(f"select_n with {len(cases)} cases at {_source(eqn)}")
    if comparison.negated:
        cases = cases[::-1]
    if all(is_constant(c) for c in cases):  # a step function of the input
        cases = tuple(enclosures.exact(jnp.broadcast_to(c, _out_shape(eqn))) for c in cases)
    if ctx.degree == 0:
        # A plain range: the result is one of the two cases, so their hull holds it.
        if_false, if_true = (enclosures.range_over(_as_enclosure(c, d), ctx) for c in cases)
        either = intervals.hull(if_true, if_false)
        shape = _out_shape(eqn)
        lo, hi = (
            jnp.broadcast_to(jnp.where(constant, jnp.where(at_reference, t, f), h), shape)
            for t, f, h in zip(if_true, if_false, either, strict=True)
        )
        return TaylorEnclosure((), Interval(lo, hi))
    chosen = enclosures.combine_monotone(
        lambda if_false, if_true: jnp.where(at_reference, if_true, if_false), cases, ctx
    )
    chosen = elementwise.to_remainder_form(chosen, ctx)
    if not d.coefficients:  # no value at the reference point: no distance to the switch
        inf = jnp.asarray(jnp.inf, chosen.dtype)
        unbounded = jnp.where(constant, 0.0, inf)
        remainder = Interval(chosen.remainder.lo - unbounded, chosen.remainder.hi + unbounded)
        return TaylorEnclosure(chosen.coefficients, remainder)
    jump = _switch_allowance(ctx, d, at_reference, cases, chosen)
    zero = jnp.zeros((), chosen.dtype)
    jump = Interval(jnp.where(constant, zero, jump.lo), jnp.where(constant, zero, jump.hi))
    return TaylorEnclosure(chosen.coefficients, intervals.add(chosen.remainder, jump))


def _switch_allowance(ctx, d: TaylorEnclosure, at_reference, cases, chosen) -> Interval:
    """What a select whose predicate can flip adds to the chosen case's degree-``k`` remainder.

    The select is ``chosen + [switched]·(other - chosen)``. With ``a = |d0| > 0`` and
    ``W = sign(d0)·(d(t) - d0)/t`` (its range over ``T``: ``increment_range``), the predicate
    can flip only where ``sign(d0)·d(t) = a + t·W <= 0``: at ``t >= a/(-W_lo)`` on the right
    and ``|t| >= a/W_hi`` on the left. There ``|t| >= δ``, so the jump divided by ``t^k`` lies
    in ``range(other - chosen)·[-1/δ^k, 1/δ^k]`` (``[0, 1/δ^k]`` for even ``k`` or one side
    only): finite whenever the reference point is off the switching point (``d0 != 0``).
    """
    k, shape = ctx.degree, chosen.shape
    eps = jnp.finfo(chosen.dtype).eps
    d0 = jnp.broadcast_to(d.coefficients[0], shape)
    slope = enclosures.increment_range(d, ctx)
    if not isinstance(slope, Interval):
        slope = intervals.point(slope)
    slope = Interval(*(jnp.broadcast_to(e, shape) for e in slope))
    positive = d0 > 0
    w_lo = jnp.where(positive, slope.lo, -slope.hi)
    w_hi = jnp.where(positive, slope.hi, -slope.lo)
    a = jnp.abs(d0)

    def distance(rate):
        # a / rate, rounded down (8 eps); a = 0 (on the switch) or an undefined rate: 0.
        with_rate = a / jnp.where(rate > 0, rate, jnp.ones_like(rate))
        far = jnp.where(rate > 0, with_rate * (1 - 8 * eps), jnp.inf)
        return jnp.where((a > 0) & ~jnp.isnan(rate), far, jnp.zeros_like(a))

    t = ctx.trust_region
    right, left = distance(-w_lo), distance(w_hi)

    def inverse_power(delta, reach):
        # 1/δ^k rounded up where the region reaches δ on this side, else 0 (no switch there).
        reaches = (reach > 0) & (delta <= reach)
        inverse = (1 / delta) ** k * (1 + 8 * (k + 1) * eps)
        return jnp.where(reaches, inverse, jnp.zeros_like(inverse))

    q_right = inverse_power(right, jnp.broadcast_to(t.hi, shape))
    q_left = inverse_power(left, jnp.broadcast_to(-t.lo, shape))
    if k % 2:
        q = Interval(-q_left, q_right)
    else:
        q = Interval(jnp.zeros_like(q_right), jnp.maximum(q_right, q_left))
    if_false, if_true = cases
    difference = _subtract_values(
        ctx, _as_enclosure(if_false, chosen), _as_enclosure(if_true, chosen)
    )
    spread = enclosures.range_over(difference, ctx)
    spread = Interval(*(jnp.broadcast_to(e, shape) for e in spread))
    other_minus_chosen = Interval(
        jnp.where(at_reference, spread.lo, -spread.hi),
        jnp.where(at_reference, spread.hi, -spread.lo),
    )
    jump = intervals.multiply(other_minus_chosen, q)
    return Interval(jump.lo - 4 * eps * jnp.abs(jump.lo), jump.hi + 4 * eps * jnp.abs(jump.hi))


def _comparison_rule(strict: bool, flip: bool, nonzero: bool = False, negated: bool = False):
    def rule(env, ctx, eqn, a, b):
        if eqn.invars[0] is eqn.invars[1]:
            # x > x, x < x and x != x are false (x is finite), x >= x, x <= x, x == x true.
            return jnp.full(_out_shape(eqn), not strict)
        lhs, rhs = (b, a) if flip else (a, b)
        difference = _fit(_subtract_values(ctx, lhs, rhs), eqn)
        return Comparison(difference, strict, nonzero, negated)

    return rule


RULES[P.gt_p] = _comparison_rule(strict=True, flip=False)
RULES[P.ge_p] = _comparison_rule(strict=False, flip=False)
RULES[P.lt_p] = _comparison_rule(strict=True, flip=True)
RULES[P.le_p] = _comparison_rule(strict=False, flip=True)
RULES[P.ne_p] = _comparison_rule(strict=True, flip=False, nonzero=True)
# x == y is not (x != y): exact where x - y cannot reach 0 over the region, unbounded where it can.
RULES[P.eq_p] = _comparison_rule(strict=False, flip=False, nonzero=True, negated=True)


@register(P.is_finite_p)
def _is_finite(env, ctx, eqn, x):
    if isinstance(x, lse.PatternValue) and x.stage == lse.MAX:
        return x.at(lse.FINITE)
    raise NotImplementedError(f"is_finite of an input-dependent value at {_source(eqn)}")


@register(P.stop_gradient_p)
def _stop_gradient(env, ctx, eqn, x):
    if isinstance(x, lse.PatternValue) and x.stage == lse.MAX:
        return x.at(lse.SHIFT, _out_shape(eqn))
    raise NotImplementedError(
        f"stop_gradient of an input-dependent value at {_source(eqn)} outside the log-sum-exp "
        "pattern: AutoBound will not silently treat it as a constant (that would bound a "
        "different function). Remove it, or wrap the computation in a function with a "
        "registered rule (optax_saferate.autobound.register_primitive)."
    )


# --------------------------------------------------------------------------- reductions


@register(P.reduce_max_p)
def _reduce_max(env, ctx, eqn, x):
    return lse.start(x, tuple(eqn.params["axes"]), _out_shape(eqn))


@register(P.reduce_min_p)
def _reduce_min(env, ctx, eqn, x):
    axes = tuple(eqn.params["axes"])
    return enclosures.negate(reduce_extreme(env, ctx, enclosures.negate(x), axes))


def reduce_extreme(env, ctx, x: TaylorEnclosure, axes) -> TaylorEnclosure:
    """``max`` over ``axes``: all candidates at once at degree 2 (see ``maximum.max_of``),
    otherwise a balanced tree of pairwise ``b + relu(a - b)``."""
    if ctx.degree == 2 and axes:
        moved = enclosures.map_monotone(lambda c: jnp.moveaxis(c, axes, tuple(range(len(axes)))), x)
        count = int(np.prod([x.shape[a] for a in axes]))
        flat = enclosures.map_monotone(lambda c: c.reshape((count, *c.shape[len(axes) :])), moved)
        candidates = [enclosures.map_monotone(lambda c, i=i: c[i], flat) for i in range(count)]
        return maximum_rule.max_of(candidates, ctx)
    for axis in sorted(axes, reverse=True):
        while x.shape[axis] > 1:
            n = x.shape[axis]
            half = n // 2
            first = enclosures.map_monotone(
                lambda c, h=half, axis=axis: lax.slice_in_dim(c, 0, h, axis=axis), x
            )
            second = enclosures.map_monotone(
                lambda c, h=half, axis=axis: lax.slice_in_dim(c, h, 2 * h, axis=axis), x
            )
            merged = maximum(env, ctx, first, second)
            if n % 2:
                last = enclosures.map_monotone(
                    lambda c, n=n, axis=axis: lax.slice_in_dim(c, n - 1, n, axis=axis), x
                )
                merged = enclosures.combine_monotone(
                    lambda p, q, axis=axis: jnp.concatenate([p, q], axis), [merged, last], ctx
                )
            x = merged
        x = enclosures.map_monotone(lambda c, axis=axis: jnp.squeeze(c, axis), x)
    return x


def materialize(ctx, env, value):
    """Turn a pattern value that left the pattern into an ordinary enclosure, if it can be."""
    if not isinstance(value, lse.PatternValue):
        return value
    if value.stage == lse.MAX:
        result = reduce_extreme(env, ctx, value.z, value.axes)
        return enclosures.map_monotone(lambda c: lse.lay_out(c, value.layout, value.shape), result)
    raise lse.pattern_error("an unsupported operation", value, "this equation")


_REDUCED_STAGES = (lse.MAX, lse.FINITE, lse.SHIFT, lse.SUM, lse.LOG)


def _pattern_structural(ctx, env, primitive, eqn, x: lse.PatternValue, rest):
    """Broadcasts and size-1 reshapes of the max, the shift and the sum keep the pattern (their
    layout follows); ``reduce_sum`` of the exponentials makes the sum."""
    shape = _out_shape(eqn)
    if primitive in (P.broadcast_in_dim_p, P.reshape_p, P.squeeze_p) and not rest:
        if x.stage in _REDUCED_STAGES:
            layout = lse.moved_layout(str(primitive), eqn.params, x.layout, x.shape, shape)
            if layout is not None:
                return x.at(x.stage, shape, layout)
    if primitive is P.reduce_sum_p and x.stage == lse.EXP:
        value = lse.summed(x, tuple(eqn.params["axes"]), shape)
        if value is not None:
            return value
    if x.stage == lse.MAX:
        value = materialize(ctx, env, x)
        return enclosures.map_monotone(lambda c: primitive.bind(c, *rest, **eqn.params), value)
    raise lse.pattern_error(str(primitive), x, _source(eqn))


def pattern_elementwise(primitive, ctx, env, eqn, x: lse.PatternValue):
    """``exp`` and ``log`` inside the log-sum-exp pattern."""
    if primitive is P.exp_p and x.stage == lse.SHIFTED:
        return x.at(lse.EXP)
    if primitive is P.log_p and x.stage == lse.SUM:
        return x.at(lse.LOG, _out_shape(eqn))
    if x.stage == lse.MAX:
        return None
    raise lse.pattern_error(str(primitive), x, _source(eqn))


@register(P.reduce_window_max_p)
def _max_pool(env, ctx, eqn, x):
    return _pool_extreme(env, ctx, eqn, x, sign=1.0)


@register(P.reduce_window_min_p)
def _min_pool(env, ctx, eqn, x):
    return enclosures.negate(_pool_extreme(env, ctx, eqn, enclosures.negate(x), sign=1.0))


def _pool_extreme(env, ctx, eqn, x: TaylorEnclosure, sign: float):
    """Max-pooling: the max over each window's candidates, one strided slice per offset."""
    params = eqn.params
    dims, strides = params["window_dimensions"], params["window_strides"]
    padding = params["padding"]
    if any(d != 1 for d in params["base_dilation"]):
        raise NotImplementedError(f"max-pool with base dilation at {_source(eqn)}")
    dilation = params["window_dilation"]
    out_shape = _out_shape(eqn)
    zero = jnp.zeros((), x.dtype)
    config = [(lo, hi, 0) for lo, hi in padding]
    padded = enclosures.map_monotone(lambda c: lax.pad(c, zero, config), x)
    valid = lax.pad(jnp.ones(x.shape, bool), False, config)
    windows = []
    for offset in np.ndindex(*dims):
        start = [o * d for o, d in zip(offset, dilation, strict=True)]
        limit = [s + (n - 1) * st + 1 for s, n, st in zip(start, out_shape, strides, strict=True)]

        def take(c, start=start, limit=limit):
            return lax.slice(c, start, limit, strides)

        windows.append((enclosures.map_monotone(take, padded), take(valid)))
    if ctx.degree == 2:
        candidates, masks = zip(*windows, strict=True)
        return maximum_rule.max_of(candidates, ctx, valid=masks)
    best, best_valid = None, None
    for candidate, candidate_valid in windows:
        if best is None:
            best, best_valid = candidate, candidate_valid
            continue
        merged = maximum(env, ctx, candidate, best)
        merged = elementwise.select(
            candidate_valid & best_valid,
            merged,
            elementwise.select(candidate_valid, candidate, best, ctx),
            ctx,
        )
        best, best_valid = merged, candidate_valid | best_valid
    return best


def _source(eqn) -> str:
    info = eqn.source_info
    try:
        from jax._src import source_info_util

        return source_info_util.summarize(info) or "an unknown source line"
    except Exception:  # noqa: BLE001 - the location is a courtesy; never fail because of it
        return "an unknown source line"
