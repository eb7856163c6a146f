"""Property tests: AutoBound is sound on random compositions and random small networks.

Each example draws a function (an expression tree of depth 1-4 over the supported elementwise
functions and ``+ - * /``, or an MLP of depth 1-3 with a random activation and loss), a degree
1-3, a dtype, and a batch of reference points with one- and two-sided trust regions of widths
1e-6..2, then runs ``helpers.check_bounds`` on it. Functions are built finite on the whole
trust region (``log(1 + u²)``, ``u / (c + v²)``, …); examples whose values still overflow are
rejected, because a bound of a function that is infinite somewhere in the region is meaningless.
Each test counts the examples that ran and requires at least half of its budget to have run.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import check_bounds
from hypothesis import assume
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

pytestmark = pytest.mark.usefixtures("autobound_numerics")


def _f32(value: float) -> float:
    """A constant exactly representable in float32, so both dtypes bound the same function."""
    return float(np.float32(value))


# Unary functions of a subexpression, all finite for every finite argument.
UNARY = {
    "exp": jnp.exp,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "swish": jax.nn.swish,
    "sin": jnp.sin,
    "cos": jnp.cos,
    "erf": jax.scipy.special.erf,
    "gelu": jax.nn.gelu,
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "abs": jnp.abs,
    "square": jnp.square,
    "cube": lambda u: u**3,
    "log(1 + u²)": lambda u: jnp.log(1 + u * u),
    "log1p(u²)": lambda u: jnp.log1p(u * u),
    "sqrt(1 + u²)": lambda u: jnp.sqrt(1 + u * u),
    "rsqrt(1 + u²)": lambda u: jax.lax.rsqrt(1 + u * u),
    "(1 + u²)**-1.5": lambda u: (1 + u * u) ** -1.5,
    "expm1": jnp.expm1,
    "elu(0.5)": lambda u: jax.nn.elu(u, 0.5),
    "leaky_relu(0.2)": lambda u: jax.nn.leaky_relu(u, 0.2),
    "where(u > 0.3)": lambda u: jnp.where(u > 0.3, jnp.sin(u), jnp.cos(u)),
    "where(u == 0.5)": lambda u: jnp.where(u == 0.5, 2.0 * u, jnp.tanh(u)),
}
BINARY = {
    "+": lambda u, v: u + v,
    "-": lambda u, v: u - v,
    "*": lambda u, v: u * v,
    "/": lambda u, v: u / (_f32(0.5) + v * v),
    "max": jnp.maximum,
    "min": jnp.minimum,
}
constants = st.floats(-2, 2, allow_subnormal=False).map(_f32)


def expressions(depth: int):
    """Trees: ``("x",)``, ``("const", c)``, ``(unary, tree)``, ``(binary, tree, tree)``."""
    leaf = st.one_of(st.just(("x",)), st.just(("x",)), constants.map(lambda c: ("const", c)))
    if depth == 0:
        return leaf
    sub = expressions(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(st.sampled_from(sorted(UNARY)), sub),
        st.tuples(st.sampled_from(sorted(BINARY)), sub, sub),
        st.tuples(st.just("scale"), constants, sub),
    )


def build(tree):
    kind = tree[0]
    if kind == "x":
        return lambda x: x
    if kind == "const":
        return lambda x: jnp.full_like(x, tree[1])
    if kind == "scale":
        inner = build(tree[2])
        return lambda x: tree[1] * inner(x)
    if kind in UNARY:
        inner = build(tree[1])
        return lambda x: UNARY[kind](inner(x))
    left, right = build(tree[1]), build(tree[2])
    return lambda x: BINARY[kind](left(x), right(x))


# Functions with a kink, by base name: "elu(0.5)" and "leaky_relu(0.2)" are kinked like "elu".
KINKED = {"relu", "elu", "leaky_relu", "abs", "max", "min"}


def _uses(tree, names) -> bool:
    base = tree[0].split("(")[0]
    return base in names or any(isinstance(t, tuple) and _uses(t, names) for t in tree[1:])


def _depends_on_x(tree) -> bool:
    return tree[0] == "x" or any(isinstance(t, tuple) and _depends_on_x(t) for t in tree[1:])


@st.composite
def cases(draw, center=2.0):
    """Eight reference points with trust regions: half one-sided, widths 1e-6..2."""
    x0 = np.array(draw(st.lists(st.floats(-center, center), min_size=8, max_size=8)))
    log_width = np.array(draw(st.lists(st.floats(np.log(1e-6), np.log(2)), min_size=8, max_size=8)))
    split = np.array(draw(st.lists(st.floats(0, 1), min_size=8, max_size=8)))
    width = np.exp(log_width)
    one_sided = np.arange(8) % 2 == 0
    lo = np.where(one_sided, x0, x0 - split * width)
    hi = np.where(one_sided, x0 + width, x0 + (1 - split) * width)
    return x0, (lo, hi)


def _finite_everywhere(f, lo, hi, limit=1e6) -> bool:
    xs = np.linspace(lo, hi, 33).T.ravel()
    values = np.asarray(jax.vmap(f)(jnp.asarray(xs)))
    return bool(np.all(np.isfinite(values)) and np.all(np.abs(values) < limit))


# The hypothesis profile sets the budget (conftest.py): 40 and 6 examples by default, 400 and
# 66 with HYPOTHESIS_PROFILE=thorough.
COMPOSITION_EXAMPLES = 2 * settings.default.max_examples


def test_random_compositions_are_sound():
    ran = []

    @settings(max_examples=COMPOSITION_EXAMPLES)
    @given(
        tree=st.integers(1, 4).flatmap(expressions).filter(_depends_on_x),
        degree=st.integers(1, 3),
        dtype=st.sampled_from([np.float64, np.float32]),
        region=cases(),
    )
    # Found by the thorough profile: elu with alpha 0.5 at its kink. The enclosure's slope over
    # [0, 1] is the right derivative 1 (sharp and sound); autodiff says 0.5 (the left one).
    @example(
        tree=("elu(0.5)", ("x",)),
        degree=1,
        dtype=np.float64,
        region=(np.zeros(8), (np.zeros(8), np.ones(8))),
    )
    # Also found by it: max(1.4e-45·x, x) at x0 = -0.5 had the value b0 + relu(a0 - b0) = 0,
    # not max(a0, b0) = -7e-46 (the rounding lost a0): the lower bound sat above f at x0.
    @example(
        tree=("max", ("scale", 1.401298464324817e-45, ("x",)), ("x",)),
        degree=1,
        dtype=np.float64,
        region=(np.full(8, -0.5), (np.full(8, -0.5), np.full(8, 0.5))),
    )
    def check(tree, degree, dtype, region):
        f = build(tree)
        x0, (lo, hi) = region
        assume(_finite_everywhere(f, lo, hi))
        # At a kink (relu(x) at x0 = 0) autodiff returns one of the one-sided derivatives, not
        # the Taylor coefficient; there only the bounds themselves can be checked.
        check_taylor = not _uses(tree, KINKED)
        check_bounds(
            f, x0, (lo, hi), degree, dtype, jit=False, samples=32, check_taylor=check_taylor
        )
        ran.append(tree)

    check()
    assert len(ran) >= COMPOSITION_EXAMPLES // 2, f"only {len(ran)} examples ran"


ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
}
MLP_EXAMPLES = max(settings.default.max_examples // 3, 1)


def _mlp_loss(seed, widths, activation, loss, dtype):
    """``x -> loss(MLP with parameters p + x·d)``; data and parameters rounded to ``dtype``."""
    rng = np.random.default_rng(seed)
    params = [
        (rng.normal(size=(m, n)) / np.sqrt(m), rng.normal(size=n) * 0.1)
        for m, n in zip(widths, widths[1:], strict=False)
    ]
    direction = [(rng.normal(size=w.shape), rng.normal(size=b.shape)) for w, b in params]
    inputs = rng.normal(size=(6, widths[0]))
    labels = rng.integers(0, widths[-1], 6)
    targets = rng.normal(size=(6, widths[-1]))
    data = [
        np.asarray(a, np.float64).astype(dtype)
        for a in (inputs, targets, *[e for layer in params + direction for e in layer])
    ]

    def f(x):
        cast = [jnp.asarray(a, x.dtype) for a in data]
        inputs, targets, rest = cast[0], cast[1], cast[2:]
        n = len(params)
        h = inputs
        for i in range(n):
            w, b = (
                rest[2 * i] + x * rest[2 * n + 2 * i],
                rest[2 * i + 1] + x * rest[2 * n + 2 * i + 1],
            )
            h = h @ w + b[None]
            if i < n - 1:
                h = ACTIVATIONS[activation](h)
        if loss == "cross_entropy":
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(h, labels))
        return jnp.mean((h - targets) ** 2)

    return f


def test_random_mlps_are_sound():
    ran = []

    @settings(max_examples=MLP_EXAMPLES)
    @given(
        seed=st.integers(0, 2**16),
        widths=st.lists(st.sampled_from([3, 4, 8]), min_size=2, max_size=4),
        activation=st.sampled_from(sorted(ACTIVATIONS)),
        loss=st.sampled_from(["cross_entropy", "squared_error"]),
        degree=st.integers(1, 3),
        dtype=st.sampled_from([np.float64, np.float32]),
        region=cases(center=0.5),
    )
    def check(seed, widths, activation, loss, degree, dtype, region):
        f = _mlp_loss(seed, widths, activation, loss, dtype)
        x0, (lo, hi) = region
        assume(_finite_everywhere(f, lo, hi))
        # A new network shape every example: compiling once beats executing op by op.
        check_bounds(f, x0, (lo, hi), degree, dtype, jit=True, samples=32)
        ran.append(seed)

    check()
    assert len(ran) >= MLP_EXAMPLES // 2, f"only {len(ran)} examples ran"
