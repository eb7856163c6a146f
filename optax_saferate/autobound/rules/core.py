"""What every rule shares: the table from primitives to rules (:data:`RULES`,
:func:`register`), the :class:`Environment` the interpreter hands to each rule, the
:class:`Comparison` value an input-dependent predicate becomes, and small helpers (shapes,
applying an elementwise enclosure, the source line that error messages name)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp

from optax_saferate.autobound import elementwise
from optax_saferate.autobound import enclosures
from optax_saferate.autobound import kink_report
from optax_saferate.autobound import kinks
from optax_saferate.autobound import logsumexp as lse
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
    kink_report.note("relu")
    return kinks.enclose_relu(x, ctx, env.next_range(ctx, x))


def _source(eqn) -> str:
    info = eqn.source_info
    try:
        from jax._src import source_info_util

        return source_info_util.summarize(info) or "an unknown source line"
    except Exception:  # noqa: BLE001 - the location is a courtesy; never fail because of it
        return "an unknown source line"
