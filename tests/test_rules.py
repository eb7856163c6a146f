"""Primitive rules (``autobound.rules``) and the patterns they recognise, end to end.

Each supported primitive is exercised by a small function of the scalar input, then Flax NNX
MLPs and CNNs with the usual losses, bounded along a line ``params + x·direction`` (the SafeRate
case). Every case goes through ``helpers.check_bounds``: bounds hold at sampled points, ``c_0``
and ``c_1`` (and ``c_2`` for degree 3) match autodiff, the interval holds the true coefficient.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import check_bounds
from helpers import compute_bounds
from helpers import random_cases
from helpers import rounded
from jax import lax
from jax.extend.core import primitives as P

from optax_saferate import autobound as ab
from optax_saferate.autobound import walk
from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.intervals import Interval

pytestmark = pytest.mark.usefixtures("autobound_numerics")
JIT = True


def _constants(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "a": rng.normal(size=(6,)),
        "b": rng.normal(size=(6,)),
        "c": rng.normal(size=(6,)),
        "w": rng.normal(size=(6,)),
        "A": rng.normal(size=(4, 6)),
        "B": rng.normal(size=(4, 6)) / 2,
        "M": rng.normal(size=(2, 3, 4)),
        "mask": rng.uniform(size=(6,)) < 0.5,
        "idx": np.array([4, 0, 0, 5, 2]),
    }


K = _constants()


def _v(x, k=K):
    """A vector enclosure with a remainder: sin(a + x·b) (exact would hide remainder bugs)."""
    return jnp.sin(k["a"] + x * k["b"])


# name -> function of a scalar x and the constants; every intermediate depends on x.
PRIMITIVES = {
    "add sub neg mul": lambda x, k: jnp.sum(
        k["w"] * (_v(x, k) - (k["c"] - x) * _v(2 * x, k) + -_v(x, k))
    ),
    "div": lambda x, k: jnp.sum(_v(x, k) / (3 + jnp.cos(x + k["c"]))),
    "div by constant, mean": lambda x, k: (
        jnp.mean(_v(x, k) / 3.0) + jnp.mean(_v(x, k)[None] * k["A"])
    ),
    "integer_pow square": lambda x, k: jnp.sum(
        _v(x, k) ** 3 + jnp.square(_v(x, k)) + _v(x, k) * _v(x, k)
    ),
    "real pow": lambda x, k: jnp.sum((2 + _v(x, k)) ** 1.5 + (2 + _v(x, k)) ** -0.5),
    "pow with an input exponent": lambda x, k: jnp.sum(jnp.power(2 + _v(x, k), 1 + 0.3 * _v(x, k))),
    "pow of a constant base": lambda x, k: jnp.sum(jnp.power(k["a"] ** 2 + 1, _v(x, k))),
    "sqrt rsqrt norm": lambda x, k: (
        jnp.linalg.norm(_v(x, k) + 2) + jnp.sum(lax.rsqrt(2 + _v(x, k)))
    ),
    "abs": lambda x, k: jnp.sum(jnp.abs(_v(x, k)) * k["w"]),
    "sum over axes": lambda x, k: jnp.sum(jnp.sum(_v(x, k)[None] * k["A"], axis=1) ** 2),
    "dot_general both enclosures": lambda x, k: jnp.sum(
        jnp.tanh(k["A"] + x * k["B"]) @ (_v(x, k) + x * k["c"])
    ),
    "dot_general batched (einsum)": lambda x, k: jnp.sum(
        jnp.einsum("bij,bjk->bik", k["M"] * (1 + x), jnp.tanh(x + k["M"].transpose(0, 2, 1)))
    ),
    "matvec with constants": lambda x, k: jnp.sum(jnp.tanh(k["A"] @ _v(x, k)) @ k["A"]),
    "reshape transpose squeeze expand_dims broadcast": lambda x, k: jnp.sum(
        jnp.expand_dims(_v(x, k).reshape(2, 3).T, 0).squeeze(0)
        * jnp.broadcast_to(_v(x, k)[:3, None], (3, 2))
    ),
    "slice rev cumsum": lambda x, k: (
        jnp.sum(_v(x, k)[1:5:2] * 2)
        + jnp.sum(jnp.flip(_v(x, k)) * k["w"])
        + jnp.sum(jnp.cumsum(_v(x, k)) * k["w"])
    ),
    "dynamic_slice dynamic_update_slice": lambda x, k: (
        jnp.sum(lax.dynamic_slice(_v(x, k), (2,), (3,)) * k["w"][:3])
        + jnp.sum(lax.dynamic_update_slice(k["c"], _v(x, k)[:2], (3,)) * k["w"])
    ),
    "concatenate stack split pad": lambda x, k: (
        jnp.sum(jnp.concatenate([_v(x, k), k["c"], _v(2 * x, k)]) ** 2)
        + jnp.sum(jnp.stack([_v(x, k), k["c"]]) * k["w"][None])
        + jnp.sum(jnp.split(_v(x, k), 3)[1])
        + jnp.sum(jnp.pad(_v(x, k), (2, 1), constant_values=1.5) ** 2)
    ),
    "gather take and indexing": lambda x, k: (
        jnp.sum(jnp.take(_v(x, k), k["idx"]) * 2)
        + jnp.sum(_v(x, k)[k["idx"]] ** 2)
        + jnp.sum(_v(x, k)[np.array([True, False, True, True, False, False])])
    ),
    "select with a constant predicate": lambda x, k: jnp.sum(
        jnp.where(k["mask"], _v(x, k), jnp.cos(_v(x, k))) + jnp.where(k["mask"], _v(x, k), 0.5)
    ),
    "clamp": lambda x, k: jnp.sum(
        lax.clamp(jnp.asarray(-0.5, x.dtype), _v(x, k), jnp.asarray(0.7, x.dtype))
    ),
    "max min of a vector": lambda x, k: (
        jnp.max(_v(x, k)) - jnp.min(_v(x, k)) + jnp.max(_v(x, k) ** 2)
    ),
    "logaddexp": lambda x, k: jnp.sum(
        jnp.logaddexp(_v(x, k), jnp.cos(x)) + jnp.logaddexp(_v(x, k), 0.3)
    ),
    "sign": lambda x, k: jnp.sum(jnp.sign(2 + _v(x, k)) * _v(x, k)),
    "exp log tanh chain": lambda x, k: jnp.sum(jnp.log(1 + jnp.exp(jnp.tanh(_v(x, k)) * 3))),
}


# The default run bounds each group as one function (the sum of its members), one degree each;
# the slow run bounds every member on its own at every degree.
GROUPS = {
    "arithmetic": [
        "add sub neg mul",
        "div",
        "div by constant, mean",
        "integer_pow square",
        "real pow",
        "pow with an input exponent",
        "pow of a constant base",
        "sqrt rsqrt norm",
        "abs",
        "sign",
        "logaddexp",
        "exp log tanh chain",
    ],
    "linear algebra": [
        "sum over axes",
        "dot_general both enclosures",
        "dot_general batched (einsum)",
        "matvec with constants",
    ],
    "structural": [
        "reshape transpose squeeze expand_dims broadcast",
        "slice rev cumsum",
        "dynamic_slice dynamic_update_slice",
        "concatenate stack split pad",
        "gather take and indexing",
    ],
    "selection": ["select with a constant predicate", "clamp", "max min of a vector"],
}


def test_groups_cover_every_primitive_case():
    assert sorted(sum(GROUPS.values(), [])) == sorted(PRIMITIVES)


def _rotating_degrees(names, slow_degrees=True):
    """Each name with one degree (1, 2, 3 in turn); the other two marked slow."""
    for i, name in enumerate(names):
        yield pytest.param(name, 1 + i % 3, id=f"{name}-{1 + i % 3}")
        if slow_degrees:
            for degree in sorted({1, 2, 3} - {1 + i % 3}):
                yield pytest.param(name, degree, id=f"{name}-{degree}", marks=pytest.mark.slow)


def _primitives(names, dtype=np.float64):
    """The sum of the named functions of x, constants rounded to ``dtype``, used in x's dtype."""
    rounded_constants = {
        key: rounded(value, dtype) if value.dtype == np.float64 else value
        for key, value in K.items()
    }

    def f(x):
        k = {
            key: jnp.asarray(value, x.dtype) if value.dtype == dtype else value
            for key, value in rounded_constants.items()
        }
        return sum(PRIMITIVES[name](x, k) for name in names)

    return f


def _primitive_cases(seed):
    return random_cases(np.random.default_rng(seed), 64, center=(-1.0, 1.0), widths=(1e-4, 1))


@pytest.mark.parametrize("group, degree", list(_rotating_degrees(GROUPS)))
def test_primitive_group(group, degree):
    x0, region = _primitive_cases(1)
    check_bounds(_primitives(GROUPS[group]), x0, region, degree, jit=JIT)


@pytest.mark.parametrize(
    "group",
    [
        group if group == "linear algebra" else pytest.param(group, marks=pytest.mark.slow)
        for group in GROUPS
    ],
)
def test_primitive_group_float32(group):
    x0, region = _primitive_cases(2)
    check_bounds(_primitives(GROUPS[group], np.float32), x0, region, 2, np.float32, jit=JIT)


@pytest.mark.slow
@pytest.mark.parametrize("degree", [1, 2, 3])
@pytest.mark.parametrize("name", list(PRIMITIVES))
def test_primitive(name, degree):
    x0, region = _primitive_cases(1)
    check_bounds(_primitives([name]), x0, region, degree, jit=JIT)


def test_convert_element_type():
    def up(x):  # float32 in, float64 out
        return jnp.sum(jnp.sin(x + K["a"].astype(np.float32)).astype(jnp.float64))

    bounds = compute_bounds(up, 2, np.float32([0.5]), (np.float32([0.5]), np.float32([1.0])))
    assert bounds.coefficients[0].dtype == jnp.float64
    with pytest.raises(NotImplementedError, match="int32"):
        compute_bounds(lambda x: (10 * x).astype(jnp.int32) * 1.0, 2, [0.5], ([0.5], [1.0]))


# --------------------------------------------------------------------------- where


def test_where_with_an_input_dependent_predicate():
    def f(x):
        return jnp.where(x > 0.5, x**2, 1 - x)

    # The predicate cannot flip on [0, 0.4] or [0.6, 1]: exact, finite, sound.
    x0, lo, hi = np.array([0.2, 0.0, 0.8]), np.array([0.0, 0.0, 0.6]), np.array([0.4, 0.4, 1.0])
    bounds = check_bounds(f, x0, (lo, hi), 2, jit=JIT)
    np.testing.assert_allclose(bounds.final_interval(), [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    # It flips on [0, 1], 0.3 away from either reference point: finite (the jump over t² is at
    # most range(other - chosen)/0.3²) and sound, checked on the switching point and beside it.
    kinks = np.broadcast_to(np.nextafter(0.5, [-np.inf, 0.5, np.inf]), (2, 3))
    x0, region = np.array([0.2, 0.8]), (np.array([0.0, 0.0]), np.ones(2))
    bounds = check_bounds(f, x0, region, 2, jit=JIT, extra_points=kinks)
    lo_2, hi_2 = bounds.final_interval()
    assert np.all(np.isfinite(lo_2)) and np.all(np.isfinite(hi_2))
    np.testing.assert_allclose(bounds.coefficients[0], [0.8, 0.64])

    def g(x):  # elementwise: only the flipping elements are unbounded
        return jnp.where(_v(x) > 0, _v(x), 2 * _v(x))

    x0, region = random_cases(np.random.default_rng(3), 64, center=(-1.0, 1.0), widths=(1e-4, 1))
    check_bounds(lambda x: jnp.sum(g(x)), x0, region, 2, jit=JIT)
    check_bounds(lambda x: jnp.sum(jnp.where(x < 0.1, jnp.sin(x), jnp.cos(x))), x0, region, 2)


def test_where_with_an_equality_predicate():
    def f(x):
        return jnp.where(x == 0.5, 3.0 * x, jnp.exp(x))

    # x - 0.5 keeps one sign on [0, 0.4] and [0.6, 1]: exact (the exp branch), sound.
    x0, lo, hi = np.array([0.2, 0.8]), np.array([0.0, 0.6]), np.array([0.4, 1.0])
    bounds = check_bounds(f, x0, (lo, hi), 2, jit=JIT)
    np.testing.assert_allclose(bounds.coefficients[0], np.exp(x0))
    # It can hit 0.5 on [0, 1], but only 0.3 away: finite and sound at 0.5 itself.
    kinks = np.array([[0.5, np.nextafter(0.5, 0.0), np.nextafter(0.5, 1.0)]])
    bounds = check_bounds(f, [0.2], ([0.0], [1.0]), 2, jit=JIT, extra_points=kinks)
    lo_2, hi_2 = bounds.final_interval()
    assert np.isfinite(lo_2).all() and np.isfinite(hi_2).all()
    # At the reference point itself the predicate holds: the 3x branch is the value there.
    bounds = compute_bounds(f, 2, np.array([0.5]), (np.array([0.5]), np.array([0.5])))
    np.testing.assert_allclose(bounds.coefficients[0], [1.5])


def test_a_flipping_where_has_the_hull_of_its_cases_as_plain_range():
    """``propagate_trust_regions`` runs a degree-0 pass: there a select whose predicate can flip
    is one of its two cases, so the hull of their ranges holds it (sound and finite)."""

    def f(x):
        return jnp.log(2.0 + jnp.where(x > 0.3, jnp.sin(x), jnp.cos(x)))

    x0, region = random_cases(np.random.default_rng(5), 64, center=(-1.0, 1.0), widths=(1e-4, 1))
    check_bounds(f, x0, region, 2, jit=JIT, propagate_trust_regions=True)
    # The degree-0 pass itself: x in [0, 1] straddles 0.3, so the select is hull(sin, cos).
    closed = jax.make_jaxpr(lambda x: jnp.where(x > 0.3, jnp.sin(x), jnp.cos(x)))(0.5)
    ctx = Context(Interval(np.float64(-0.5), np.float64(0.5)), 0)
    out, _ = walk._run(closed, np.float64(0.5), ctx, walk._no_ranges)
    np.testing.assert_allclose(out.remainder, [0.0, 1.0], atol=1e-12)


# --------------------------------------------------------------------------- losses


LABELS = np.random.default_rng(5).integers(0, 5, 8)

# name -> loss(logits, one-hot labels, regression target)
LOSSES = {
    "squared error": lambda z, y, target: jnp.mean((z - target) ** 2),
    "huber": lambda z, y, target: jnp.mean(optax.huber_loss(z, target, delta=0.5)),
    "softmax_cross_entropy": lambda z, y, target: jnp.mean(optax.softmax_cross_entropy(z, y)),
    "softmax_cross_entropy_with_integer_labels": lambda z, y, target: jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(z, LABELS)
    ),
    "log_softmax": lambda z, y, target: -jnp.mean(jnp.sum(jax.nn.log_softmax(z) * y, -1)),
    "logsumexp": lambda z, y, target: jnp.mean(jax.nn.logsumexp(z, axis=-1) - jnp.sum(z * y, -1)),
    "softmax": lambda z, y, target: jnp.sum(jax.nn.softmax(z) * target),
}


def _loss_along_a_line(name, dtype=np.float64, scale=1.0):
    """``x -> loss(z0 + (x + tanh x)·d)``; the data rounded to ``dtype`` (then cast to x's)."""
    rng = np.random.default_rng(4)
    z0, d = (rounded(a, dtype) for a in rng.normal(size=(2, 8, 5)) * scale)
    target = rounded(np.random.default_rng(6).normal(size=(8, 5)), dtype)
    one_hot = np.eye(5)[LABELS]

    def f(x):
        cast = functools.partial(jnp.asarray, dtype=x.dtype)
        z = cast(z0) + (x + jnp.tanh(x)) * cast(d)
        return LOSSES[name](z, cast(one_hot), cast(target))

    return f


# The default run bounds the log-sum-exp losses together and the regression losses together, at
# degree 2; the slow run also the log-sum-exp group at degree 3 (another path) and each loss alone
# at each degree.
LOSS_GROUPS = {
    "regression": ["squared error", "huber"],
    "log-sum-exp": [name for name in LOSSES if name not in ("squared error", "huber")],
}


@pytest.mark.parametrize(
    "names, degree",
    [pytest.param(names, 2, id=f"{group}-2") for group, names in LOSS_GROUPS.items()]
    + [pytest.param(LOSS_GROUPS["log-sum-exp"], 3, id="log-sum-exp-3", marks=pytest.mark.slow)]
    + [
        pytest.param([name], degree, id=f"{name}-{degree}", marks=pytest.mark.slow)
        for name in LOSSES
        for degree in (1, 2, 3)
    ],
)
def test_loss(names, degree):
    x0, region = random_cases(np.random.default_rng(7), 64, center=(-0.5, 0.5), widths=(1e-5, 2))
    check_bounds(_all_losses(names), x0, region, degree, jit=JIT)


def _all_losses(names, dtype=np.float64, scale=1.0):
    parts = [_loss_along_a_line(name, dtype, scale) for name in names]
    return lambda x: sum(part(x) for part in parts)


@pytest.mark.parametrize(
    "names",
    [pytest.param(list(LOSSES), id="all")]
    + [pytest.param([name], id=name, marks=pytest.mark.slow) for name in LOSSES],
)
def test_loss_float32(names):
    x0, region = random_cases(np.random.default_rng(7), 64, center=(-0.5, 0.5), widths=(1e-5, 2))
    check_bounds(_all_losses(names, np.float32), x0, region, 2, np.float32, jit=JIT)


LSE_LOSSES = [name for name in LOSSES if "squared" not in name and "huber" not in name]


@pytest.mark.parametrize("dtype", [pytest.param(np.float64, marks=pytest.mark.slow), np.float32])
@pytest.mark.parametrize(
    "names",
    [pytest.param(LSE_LOSSES, id="all")]
    + [pytest.param([name], id=name, marks=pytest.mark.slow) for name in LSE_LOSSES],
)
def test_loss_never_nan_with_large_logits(names, dtype):
    x0 = np.array([0.0, 0.0, 0.0, 3.0])
    lo, hi = np.array([0.0, -10.0, 0.0, 0.0]), np.array([10.0, 10.0, 100.0, 30.0])
    bounds = check_bounds(_all_losses(names, dtype, 30.0), x0, (lo, hi), 2, dtype, jit=JIT)
    for c in (*bounds.coefficients[:-1], *bounds.final_interval()):
        assert not np.any(np.isnan(c))


def test_cross_entropy_is_recognised_whole():
    # The composite LSE rule: exact c0, c1 and a curvature interval containing 1/2 Var_p(z1)
    # that shrinks to it as the trust region does.
    z0 = np.random.default_rng(4).normal(size=(8, 5))
    one_hot = np.eye(5)[LABELS]

    def f(x):
        return jnp.mean(optax.softmax_cross_entropy(z0 + x * one_hot, one_hot))

    widths = np.array([1e-6, 1e-3, 1e-1])
    bounds = compute_bounds(f, 2, np.zeros(3), (np.zeros(3), widths), jit=JIT)
    lo, hi = (np.asarray(e) for e in bounds.final_interval())
    true = float(jax.hessian(f)(0.0)) / 2
    assert np.all(lo <= true) and np.all(true <= hi)
    assert hi[0] - lo[0] < 1e-5 * abs(true)
    assert np.all(np.diff(hi - lo) > 0)


# --------------------------------------------------------------------------- Flax NNX models


def _along_a_line(model, loss, seed=0, scale=0.3):
    """``x -> loss(model with parameters p + x·d)``, ``d`` random: the SafeRate function."""
    graphdef, params = nnx.split(model)
    rng = np.random.default_rng(seed)
    direction = jax.tree.map(lambda p: (scale * rng.normal(size=p.shape)).astype(p.dtype), params)

    def f(x):
        moved = jax.tree.map(lambda p, d: p + x * d, params, direction)
        return loss(nnx.merge(graphdef, moved))

    return f


def _mlp(activations, dtype, widths=(6, 16, 16, 5), seed=0):
    """Linear layers with ``activations[i]`` after hidden layer ``i``."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:], strict=False)):
        layers.append(nnx.Linear(n_in, n_out, param_dtype=dtype, rngs=nnx.Rngs(seed + i)))
        if i < len(widths) - 2:
            layers.append(activations[i])
    return nnx.Sequential(*layers)


ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "swish": jax.nn.swish,
}
INPUTS = np.random.default_rng(8).normal(size=(8, 6))


def _model_cases(seed):
    """SafeRate-like: x0 = 0 with one-sided regions, plus random x0 and two-sided regions."""
    rng = np.random.default_rng(seed)
    x0, (lo, hi) = random_cases(rng, 32, center=(-0.5, 0.5), widths=(1e-4, 1))
    eta = np.exp(rng.uniform(np.log(1e-4), 0, 32))
    return np.concatenate([np.zeros(32), x0]), (
        np.concatenate([np.zeros(32), lo]),
        np.concatenate([eta, hi]),
    )


# Two activations per network in the default run; each one alone at every degree when slow.
ACTIVATION_PAIRS = [
    ("relu", "tanh"),
    ("gelu", "softplus"),
    ("sigmoid", "elu"),
    ("leaky_relu", "swish"),
]


@pytest.mark.parametrize(
    "pair, degree",
    list(_rotating_degrees(ACTIVATION_PAIRS, slow_degrees=False))
    + [
        pytest.param((name, name), degree, id=f"{name}-{degree}", marks=pytest.mark.slow)
        for name in ACTIVATIONS
        for degree in (1, 2, 3)
    ],
)
def test_mlp_with_cross_entropy(pair, degree):
    model = _mlp([ACTIVATIONS[name] for name in pair], jnp.float64)
    f = _along_a_line(
        model,
        lambda m: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(m(INPUTS), LABELS)),
    )
    x0, region = _model_cases(9)
    check_bounds(f, x0, region, degree, jit=JIT)


@pytest.mark.parametrize("dtype", [np.float64, pytest.param(np.float32, marks=pytest.mark.slow)])
def test_mlp_with_squared_error_and_layer_norm(dtype):
    model = nnx.Sequential(
        nnx.Linear(6, 12, param_dtype=dtype, rngs=nnx.Rngs(0)),
        nnx.LayerNorm(12, param_dtype=dtype, rngs=nnx.Rngs(1)),
        jax.nn.tanh,
        nnx.Linear(12, 5, param_dtype=dtype, rngs=nnx.Rngs(2)),
    )
    data = INPUTS.astype(dtype)
    f = _along_a_line(
        model,
        lambda m: jnp.mean(
            (m(data) - rounded(np.random.default_rng(6).normal(size=(8, 5)), dtype)) ** 2
        ),
    )
    x0, region = _model_cases(10)
    check_bounds(f, x0.astype(dtype), region, 2, dtype, jit=JIT)


class _CNN(nnx.Module):
    def __init__(self, dtype, rngs):
        self.conv1 = nnx.Conv(
            3, 4, (3, 3), strides=(2, 2), padding="SAME", param_dtype=dtype, rngs=rngs
        )
        self.conv2 = nnx.Conv(
            4,
            4,
            (2, 2),
            padding=((1, 0), (0, 1)),
            feature_group_count=2,
            param_dtype=dtype,
            rngs=rngs,
        )
        self.norm = nnx.LayerNorm(4, param_dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(16, 3, param_dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.conv1(x))  # (2, 4, 4, 4)
        x = nnx.max_pool(x, (2, 2), strides=(1, 1), padding="SAME")
        x = jax.nn.softplus(self.norm(self.conv2(x)))
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2))  # (2, 2, 2, 4)
        return self.head(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("dtype", [np.float64, pytest.param(np.float32, marks=pytest.mark.slow)])
def test_cnn_with_conv_pooling_layer_norm_and_cross_entropy(dtype):
    model = _CNN(dtype, nnx.Rngs(0))
    images = np.random.default_rng(11).normal(size=(2, 8, 8, 3)).astype(dtype)
    labels = np.array([0, 2])
    f = _along_a_line(
        model,
        lambda m: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(m(images), labels)),
    )
    x0, region = _model_cases(12)
    check_bounds(f, x0.astype(dtype), region, 2, dtype, jit=JIT)


def test_max_pool_exact_where_one_candidate_dominates():
    # Window candidates far apart: the max is one of them over the whole trust region.
    base = np.array([[0.0, 10.0, -3.0, 20.0, 5.0, 6.0]])[..., None]

    def f(x):
        return jnp.sum(nnx.max_pool(base + jnp.sin(x) * 0.1, (2,), strides=(2,)) ** 2)

    def g(x):
        return jnp.sum((base[:, 1::2] + jnp.sin(x) * 0.1) ** 2)

    got, want = (
        compute_bounds(h, 2, np.array([0.3]), (np.array([0.0]), np.array([1.0]))) for h in (f, g)
    )
    for a, b in zip(got.coefficients, want.coefficients, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14)


@pytest.mark.parametrize(
    ("name", "f", "value"),
    [
        # b + relu(a - b) and a - relu(a - b) round to 0 here: the tiny operand is lost.
        ("max", lambda x: jnp.maximum(1.4e-45 * x, x), -7e-46),
        ("min", lambda x: jnp.minimum(-1.4e-45 * x, x), -0.5),
        ("min, tiny wins", lambda x: jnp.minimum(-x, 1.4e-45 * x), -7e-46),
    ],
)
def test_max_and_min_take_their_exact_value_at_the_reference_point(name, f, value):
    # The kink (x = 0) is inside [-0.5, 0.5], so neither operand is picked whole.
    x0 = np.array([-0.5])
    bounds = check_bounds(f, x0, (x0, x0 + 1.0), 2, jit=False, check_taylor=False)
    assert float(bounds.coefficients[0][0]) == float(f(jnp.float64(-0.5))), name
    np.testing.assert_allclose(float(bounds.coefficients[0][0]), value, rtol=1e-3)


# --------------------------------------------------------------------------- wrappers


def _inner(x):
    return jnp.sum(jnp.tanh(K["A"] @ _v(x)) ** 2) + jax.nn.softplus(x)


@jax.custom_jvp
def _custom_jvp_inner(x):
    return _inner(x)


_custom_jvp_inner.defjvp(lambda p, t: jax.jvp(_inner, p, t))


@jax.custom_vjp
def _custom_vjp_inner(x):
    return _inner(x)


_custom_vjp_inner.defvjp(lambda x: (_inner(x), x), lambda x, g: (g * jax.grad(_inner)(x),))


def _closed_call_inner(x):
    closed = jax.make_jaxpr(_inner)(x)
    return P.closed_call_p.bind(x, **P.closed_call_p.get_bind_params({"call_jaxpr": closed}))[0]


WRAPPERS = {
    "jit": jax.jit(_inner),
    "nested jit": jax.jit(lambda x: jax.jit(_inner)(x)),
    "custom_jvp": _custom_jvp_inner,
    "custom_vjp": _custom_vjp_inner,
    "checkpoint": jax.checkpoint(_inner),
    "closed_call": _closed_call_inner,
}


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_wrappers_are_walked_into(name):
    # Walked into, never passed through: the bound is the very computation that bounds the
    # unwrapped function (the same jaxpr, so the same numbers).
    wrapped = jax.make_jaxpr(ab.taylor_bounds(WRAPPERS[name], 2))(0.3, (0.3, 1.0))
    plain = jax.make_jaxpr(ab.taylor_bounds(_inner, 2))(0.3, (0.3, 1.0))
    assert str(wrapped) == str(plain)


def test_wrapped_function_is_sound():
    # With the equalities above, this makes every wrapped version sound too.
    x0, region = np.array([0.3, -0.2]), (np.array([0.3, -1.0]), np.array([1.0, 0.0]))
    check_bounds(_inner, x0, region, 2, jit=JIT)


# --------------------------------------------------------------------------- errors


def test_stop_gradient_outside_the_pattern_raises():
    def f(x):
        return jnp.sin(x) * lax.stop_gradient(jnp.cos(x))

    with pytest.raises(NotImplementedError, match="stop_gradient"):
        ab.taylor_bounds(f, 2)(0.0, (0.0, 1.0))


@pytest.mark.parametrize(
    "fn, primitive",
    [
        (lambda x: jnp.tan(x), "tan"),
        (lambda x: jnp.cumprod(jnp.stack([x, 2 * x])).sum(), "cumprod"),
    ],
)
def test_unsupported_primitive_raises_with_name_and_how_to_register(fn, primitive):
    from optax_saferate.autobound import rules

    assert not any(str(p) == primitive for p in rules.RULES)
    with pytest.raises(NotImplementedError, match=f"`{primitive}`") as error:
        ab.taylor_bounds(fn, 2)(0.5, (0.5, 1.0))
    assert "register" in str(error.value)
    if primitive == "tan":  # the user's source line (cumprod sits inside jnp.cumprod's jit)
        assert "test_rules.py" in str(error.value)


def test_input_dependent_index_raises():
    def f(x):
        return jnp.sin(x) * jnp.arange(3.0)[(x > 0).astype(jnp.int32)]

    with pytest.raises(NotImplementedError):
        ab.taylor_bounds(f, 2)(0.5, (0.5, 1.0))


# --------------------------------------------------------------------------- registration


@jax.jit
def scaled_swish_for_test(x):
    return 2 * x * jax.nn.sigmoid(x)


def test_register_elementwise_for_a_named_jit_function():
    x0, region = (
        np.array([0.3, -2.0, 1.0]),
        (np.array([0.0, -3.0, 0.5]), np.array([1.0, -1.5, 3.0])),
    )
    walked = compute_bounds(scaled_swish_for_test, 2, x0, region, jit=JIT)
    from optax_saferate.autobound import smooth_functions

    spec = ab.register_elementwise(
        "scaled_swish_for_test",
        lambda x: 2 * x * jax.nn.sigmoid(x),
        lambda order: smooth_functions.SWISH.critical_points(order),
    )
    assert isinstance(spec, ab.ElementwiseFunction)
    registered = check_bounds(scaled_swish_for_test, x0, region, 2, jit=JIT)

    # The registered rule bounds the function whole: sharp, so never wider than the walk.
    def width(b):
        return np.subtract(*b.final_interval()[::-1])

    assert np.all(width(registered) <= width(walked) * (1 + 1e-12))
    assert np.any(width(registered) < 0.9 * width(walked))


@jax.custom_jvp
def tan_for_test(x):
    return jnp.tan(x)


tan_for_test.defjvp(lambda p, t: (jnp.tan(p[0]), t[0] / jnp.cos(p[0]) ** 2))


def test_register_elementwise_for_a_custom_jvp_function():
    # tan has no rule, so only a recognised name can bound it; custom_jvp_call carries the
    # name in the debug info of its body, not in a parameter.
    with pytest.raises(NotImplementedError, match="`tan`"):
        ab.taylor_bounds(tan_for_test, 2)(0.2, (0.2, 0.5))
    # On (-pi/2, pi/2): tan' has its minimum at 0, tan'' and up increase.
    ab.register_elementwise(
        "tan_for_test", jnp.tan, lambda j: (0.0,) if j == 1 else (), domain=(-1.5, 1.5)
    )
    check_bounds(tan_for_test, [0.2, -0.3], ([0.2, -1.0], [0.5, 0.4]), 2, jit=False)


def test_logaddexp_is_bounded_whole():
    # jnp.logaddexp is a custom_jvp (no jit name): recognised, it is b + softplus(a - b), smooth;
    # walked into, its abs/max kinks at a = b made the interval some 10^3 times wider.
    a = np.array([0.1, -0.5, 2.0])

    def f(x):
        return jnp.sum(jnp.logaddexp(jnp.sin(a + x), 0.3))

    bounds = check_bounds(f, [0.2], ([0.2], [0.3]), 2, jit=JIT)
    lo, hi = (float(e[0]) for e in bounds.final_interval())
    assert hi - lo < 0.1


def test_not_equal_and_constant_branches():
    # `u != c` is true where the range of u - c excludes 0; `x != x` is false. It used to be
    # read as `not (u - c > 0)`, so logaddexp's NaN guard chose the NaN branch (a + b).
    def f(x):
        safe = jnp.where(jnp.sin(x) != 0.3, x, 2 * x)
        return safe + jnp.where(x != x, 10.0, 0.0) + jnp.logaddexp(jnp.sin(x), jnp.cos(x))

    check_bounds(f, [0.0, 1.0], ([0.0, 0.9], [0.2, 1.5]), 2, jit=JIT)

    def step(x):  # both branches constant: a step function of x
        return jnp.where(x > 0.5, 1.0, 2.0)

    bounds = compute_bounds(
        step, 2, np.array([0.2, 0.2]), (np.array([0.0, 0.0]), np.array([0.4, 1.0]))
    )
    np.testing.assert_array_equal(bounds.coefficients[0], [2.0, 2.0])
    lo, hi = bounds.final_interval()
    assert lo[0] == hi[0] == 0.0
    # The step to 1 happens 0.3 away: the jump -1 over t² is at least -1/0.3², at most 0.
    np.testing.assert_allclose(lo[1], -1 / 0.09, rtol=1e-6)
    assert hi[1] == 0.0
    kinks = np.array([[0.5, np.nextafter(0.5, 0.0), np.nextafter(0.5, 1.0)]])
    check_bounds(step, [0.2], ([0.0], [1.0]), 2, jit=JIT, extra_points=kinks, check_taylor=False)
