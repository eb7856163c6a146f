"""Every way JAX and optax spell log-sum-exp reaches the log-sum-exp rule (``logsumexp.py``).

Each spelling (stacked operands, weights ``b``, ``where=`` masks, axis tuples, ``keepdims``,
``log_softmax``/``softmax`` and optax's cross-entropies along a non-last axis) is paired with a
plain spelling of the same function: ``jax.nn.logsumexp`` (or ``log_softmax``, ``softmax``,
optax) over the last axis of the entries that count. The tests check that

* both give the same enclosure (the same coefficients, up to the order of floating-point sums),
  eagerly (constants known while tracing) and under ``jax.jit`` (constants traced);
* each spelling's enclosure is sound (hypothesis: ``helpers.check_bounds`` at sampled points,
  float64 and float32, one- and two-sided regions of widths 1e-4..10);
* weights that make the sum a non-log-sum-exp are refused (concrete) or get no bound (traced).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import check_bounds
from helpers import compute_bounds
from helpers import rounded
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from optax_saferate import autobound as ab

pytestmark = pytest.mark.usefixtures("autobound_numerics")

_RNG = np.random.default_rng(11)
# Data exactly representable in float32, so both dtypes bound the same function.
Z0, D, E = (rounded(_RNG.normal(size=(3, 4)), np.float32) for _ in range(3))
Y = rounded(_RNG.dirichlet(np.ones(4), size=3), np.float32)  # label distributions, rows
B = rounded(_RNG.uniform(0.2, 3.0, size=(3, 4)), np.float32)  # positive weights
B_ZEROS = B * np.array([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]], np.float32)
B_EMPTY = B * np.array([[0, 0, 0, 0], [1, 0, 1, 1], [1, 1, 0, 1]], np.float32)
MASK = np.array([[True, False, True, True], [True, True, False, False], [True] * 4])
LABELS = np.array([2, 0, 3])


def _cast(t, *arrays):
    return [jnp.asarray(a, t.dtype) for a in arrays]


def logits(t):
    """``(3, 4)`` logits along a line, with a curved term (an enclosure with a remainder)."""
    z0, d, e = _cast(t, Z0, D, E)
    return z0 + t * d + 0.3 * jnp.sin(t) * e


def logits3(t):
    """``(2, 3, 2)`` logits (an axis-tuple case)."""
    return jnp.reshape(logits(t), (2, 3, 2))


def parts(t):
    """Scalar enclosures and constants to stack."""
    return [t, -2 * t, jnp.sin(t) + 0.5 * t, jnp.asarray(0.5, t.dtype), jnp.exp(0.2 * t)]


def _pairs(t):
    p = parts(t)
    return [jnp.stack(p[:2]), jnp.stack(p[2:4])]


def _per_row(t, weights, fn):
    """``Σ_i fn(z_i[kept], w_i[kept], i)`` over the rows of ``logits``, the kept entries being
    those with a nonzero weight (or a True mask): the plain spelling of a weighted function."""
    z = logits(t)
    total = jnp.zeros((), t.dtype)
    for i, row in enumerate(np.asarray(weights)):
        kept = np.flatnonzero(row)
        if kept.size:
            w = jnp.asarray(row[kept], t.dtype)
            total = total + fn(z[i, kept], w, i, kept)
    return total


def _lse_of_kept(z, w, i, kept):
    return jax.nn.logsumexp(z + jnp.log(w))


# name -> (spelling, plain spelling of the same function)
SPELLINGS = {
    "stack": (
        lambda t: jax.nn.logsumexp(jnp.stack(parts(t)[:3])),
        lambda t: jax.nn.logsumexp(jnp.concatenate([p[None] for p in parts(t)[:3]])),
    ),
    "stack with constants": (
        lambda t: jax.nn.logsumexp(jnp.stack(parts(t))),
        lambda t: jax.nn.logsumexp(jnp.concatenate([jnp.reshape(p, (1,)) for p in parts(t)])),
    ),
    "stack along axis 1": (
        lambda t: jnp.sum(jax.nn.logsumexp(jnp.stack(_pairs(t), 1), 0)),
        lambda t: jnp.sum(jax.nn.logsumexp(jnp.stack(_pairs(t), 0), 1)),
    ),
    "concatenate with constants": (
        lambda t: jax.nn.logsumexp(jnp.concatenate([logits(t)[0], *_cast(t, [0.5, -1.0])])),
        lambda t: jax.nn.logsumexp(
            jnp.concatenate([logits(t)[0], *_cast(t, [0.0, 0.0])])
            + jnp.asarray([0, 0, 0, 0, 0.5, -1.0], t.dtype)
        ),
    ),
    "b": (
        lambda t: jnp.sum(jax.nn.logsumexp(logits(t), axis=1, b=jnp.asarray(B, t.dtype))),
        lambda t: jnp.sum(jax.nn.logsumexp(logits(t) + jnp.log(jnp.asarray(B, t.dtype)), 1)),
    ),
    "b with zeros": (
        lambda t: jnp.sum(jax.nn.logsumexp(logits(t), axis=1, b=jnp.asarray(B_ZEROS, t.dtype))),
        lambda t: _per_row(t, B_ZEROS, _lse_of_kept),
    ),
    "b with an empty row": (
        lambda t: jnp.sum(
            jnp.exp(jax.nn.logsumexp(logits(t), axis=1, b=jnp.asarray(B_EMPTY, t.dtype)))
        ),
        lambda t: _per_row(t, B_EMPTY, lambda *a: jnp.exp(_lse_of_kept(*a))),
    ),
    "b along axis 0, return_sign": (
        lambda t: jnp.sum(
            jax.nn.logsumexp(
                logits(t).T, axis=0, b=jnp.asarray(B_ZEROS, t.dtype).T, return_sign=True
            )[0]
        ),
        lambda t: _per_row(t, B_ZEROS, _lse_of_kept),
    ),
    "where": (
        lambda t: jnp.sum(jax.nn.logsumexp(logits(t), axis=1, where=MASK)),
        lambda t: _per_row(t, MASK, lambda z, w, i, kept: jax.nn.logsumexp(z)),
    ),
    "axis 0": (
        lambda t: jnp.sum(jax.nn.logsumexp(logits(t), axis=0)),
        lambda t: jnp.sum(jax.nn.logsumexp(logits(t).T, axis=-1)),
    ),
    "axis None": (
        lambda t: jax.nn.logsumexp(logits(t)),
        lambda t: jax.nn.logsumexp(jnp.reshape(logits(t), -1)),
    ),
    "axis tuple": (
        lambda t: jnp.sum(jax.nn.logsumexp(logits3(t), axis=(0, 2))),
        lambda t: jnp.sum(
            jax.nn.logsumexp(jnp.reshape(jnp.moveaxis(logits3(t), 1, 0), (3, 4)), axis=-1)
        ),
    ),
    "negative axis tuple, keepdims": (
        lambda t: jnp.sum(jax.nn.logsumexp(logits3(t), axis=(-1, 0), keepdims=True)),
        lambda t: jnp.sum(
            jax.nn.logsumexp(jnp.reshape(jnp.moveaxis(logits3(t), 1, 0), (3, 4)), axis=-1)
        ),
    ),
    "keepdims, return_sign=False": (
        lambda t: jnp.sum(
            jax.nn.logsumexp(logits(t), axis=1, keepdims=True, return_sign=False)[:, 0]
        ),
        lambda t: jnp.sum(jax.nn.logsumexp(logits(t), axis=-1)),
    ),
    "log_softmax along axis 0": (
        lambda t: jnp.sum(jax.nn.log_softmax(logits(t).T, axis=0) * jnp.asarray(Y.T, t.dtype)),
        lambda t: jnp.sum(jax.nn.log_softmax(logits(t)) * jnp.asarray(Y, t.dtype)),
    ),
    "log_softmax with where": (
        lambda t: jnp.sum(
            jnp.where(MASK, jax.nn.log_softmax(logits(t), where=MASK), 0) * jnp.asarray(Y, t.dtype)
        ),
        lambda t: _per_row(
            t,
            MASK,
            lambda z, w, i, kept: jnp.sum(jax.nn.log_softmax(z) * jnp.asarray(Y[i, kept], t.dtype)),
        ),
    ),
    "softmax along axis 0": (
        lambda t: jnp.sum(jax.nn.softmax(logits(t).T, axis=0) * jnp.asarray(Y.T, t.dtype)),
        lambda t: jnp.sum(jax.nn.softmax(logits(t)) * jnp.asarray(Y, t.dtype)),
    ),
    "softmax along a middle axis": (
        lambda t: jnp.sum(jax.nn.softmax(logits3(t), axis=1) ** 2),
        lambda t: jnp.sum(jax.nn.softmax(jnp.moveaxis(logits3(t), 1, -1), axis=-1) ** 2),
    ),
    "softmax with where": (
        lambda t: jnp.sum(
            jnp.where(MASK, jax.nn.softmax(logits(t), where=MASK), 0) * jnp.asarray(Y, t.dtype)
        ),
        lambda t: _per_row(
            t,
            MASK,
            lambda z, w, i, kept: jnp.sum(jax.nn.softmax(z) * jnp.asarray(Y[i, kept], t.dtype)),
        ),
    ),
    "optax cross-entropy along axis 0": (
        lambda t: jnp.sum(
            optax.softmax_cross_entropy(logits(t).T, jnp.asarray(Y.T, t.dtype), axis=0)
        ),
        lambda t: jnp.sum(optax.softmax_cross_entropy(logits(t), jnp.asarray(Y, t.dtype))),
    ),
    "optax cross-entropy over an axis tuple": (
        lambda t: jnp.sum(
            optax.softmax_cross_entropy(
                logits3(t), jnp.asarray(np.reshape(Y, (2, 3, 2)), t.dtype), axis=(0, 2)
            )
        ),
        lambda t: jnp.sum(
            optax.softmax_cross_entropy(
                jnp.reshape(jnp.moveaxis(logits3(t), 1, 0), (3, 4)),
                jnp.asarray(
                    np.reshape(np.moveaxis(np.reshape(Y, (2, 3, 2)), 1, 0), (3, 4)), t.dtype
                ),
            )
        ),
    ),
    "optax cross-entropy with where": (
        lambda t: jnp.sum(
            optax.softmax_cross_entropy(logits(t), jnp.asarray(Y, t.dtype), where=MASK)
        ),
        lambda t: _per_row(
            t,
            MASK,
            lambda z, w, i, kept: (
                -jnp.sum(jax.nn.log_softmax(z) * jnp.asarray(Y[i, kept], t.dtype))
            ),
        ),
    ),
    "optax integer labels along axis 0": (
        lambda t: jnp.sum(
            optax.softmax_cross_entropy_with_integer_labels(logits(t).T, LABELS, axis=0)
        ),
        lambda t: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits(t), LABELS)),
    ),
}

# JAX's spellings of these put -inf inside (where(b != 0, z, -inf), where= masks), through which
# the helpers' rounding-error scale is NaN (0·inf); their soundness is checked against the plain
# spelling's values, after checking that the two agree.
MINUS_INFINITY_INSIDE = {
    "b with zeros",
    "b with an empty row",
    "b along axis 0, return_sign",
    "where",
    "log_softmax with where",
    "softmax with where",
    "optax cross-entropy with where",
}

X0 = np.array([0.0, 0.3, -1.2, 0.0, 1.5, -0.4])
REGION = (X0 - np.array([0.0, 0.0, 0.5, 1e-3, 2.0, 0.0]), X0 + np.array([1.0, 0.0, 0.5, 0, 3.0, 5]))


def _assert_same_bounds(got, expected):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# The default run (each eager bound of a new function compiles its ops: seconds) checks one
# spelling of each mechanism at degree 2 (SafeRate's); -m slow every spelling at degrees 1-3.
DEFAULT_SPELLINGS = [
    "stack with constants",
    "b",
    "b with zeros",
    "where",
    "axis tuple",
    "log_softmax along axis 0",
    "softmax with where",
]


def _spelling_cases():
    for name in SPELLINGS:
        for degree in (2, 1, 3):
            slow = degree != 2 or name not in DEFAULT_SPELLINGS
            marks = [pytest.mark.slow] if slow else []
            yield pytest.param(name, degree, id=f"{name}-{degree}", marks=marks)


@pytest.mark.parametrize("name, degree", list(_spelling_cases()))
def test_spelling_gives_the_bound_of_the_plain_spelling(name, degree):
    # Eagerly: the weights and masks are known while tracing.
    spelling, plain = SPELLINGS[name]
    got = compute_bounds(spelling, degree, X0, REGION, jit=False)
    _assert_same_bounds(got, compute_bounds(plain, degree, X0, REGION, jit=False))
    for c in jax.tree.leaves(got.coefficients):
        assert not np.any(np.isnan(c))


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(["b with zeros", "where"], id="weights"),
        pytest.param(list(SPELLINGS), id="all", marks=pytest.mark.slow),
    ],
)
def test_spellings_give_the_bounds_of_the_plain_spellings_under_jit(names):
    # Under jit the constants the jaxpr computes (b != 0, a where= mask's zeros) are traced, so
    # the weights are checked and dropped with jnp.where instead of while tracing.
    def all_of(index):
        return lambda t: jnp.stack([SPELLINGS[name][index](t) for name in names])

    got = compute_bounds(all_of(0), 2, X0, REGION, jit=True)
    _assert_same_bounds(got, compute_bounds(all_of(1), 2, X0, REGION, jit=True))


@st.composite
def regions(draw, count=32):
    """Reference points in [-2, 2] with one-sided [x0, x0 + w] and two-sided
    [x0 - s·w, x0 + (1 - s)·w] regions, widths w from 1e-4 to 10 (``count`` cases: the helpers
    pad every batch to 64, so more cases per example cost nothing)."""

    def floats(lo, hi):
        return np.array(draw(st.lists(st.floats(lo, hi), min_size=count, max_size=count)))

    x0, width, split = floats(-2, 2), np.exp(floats(np.log(1e-4), np.log(10))), floats(0, 1)
    one_sided = np.arange(count) % 2 == 0
    lo = np.where(one_sided, x0, x0 - split * width)
    hi = np.where(one_sided, x0 + width, x0 + (1 - split) * width)
    return x0, (lo, hi)


def _check_spelling(name, region, dtype, degree):
    """``helpers.check_bounds`` on the spelling (its coefficients are those of the plain
    spelling, tested above and in test_rules.py, so only the bounds are checked here)."""
    spelling, plain = SPELLINGS[name]
    x0, (lo, hi) = region
    reference = None
    if name in MINUS_INFINITY_INSIDE:
        reference = plain
        points = jnp.asarray(np.concatenate([x0, lo, hi, (lo + hi) / 2]))
        np.testing.assert_allclose(
            jax.vmap(spelling)(points), jax.vmap(plain)(points), rtol=1e-12, atol=1e-12
        )
    check_bounds(
        spelling,
        x0,
        (lo, hi),
        degree,
        dtype,
        reference=reference,
        jit=False,
        jit_reference=True,
        samples=24,
        check_taylor=False,
    )


# The hypothesis profile sets the budget (conftest.py): 2 examples of any spelling by default
# (each a spelling, dtype and degree, with 32 regions), 20 under HYPOTHESIS_PROFILE=thorough;
# with -m slow also 2 (20) examples of each spelling.
SPELLINGS_EXAMPLES = max(settings.default.max_examples // 10, 1)
EACH_SPELLING_EXAMPLES = max(settings.default.max_examples // 10, 1)


def test_spellings_are_sound():
    @settings(max_examples=SPELLINGS_EXAMPLES)
    @given(
        name=st.sampled_from(sorted(SPELLINGS)),
        region=regions(),
        dtype=st.sampled_from([np.float64, np.float32]),
        degree=st.integers(1, 3),
    )
    def check(name, region, dtype, degree):
        _check_spelling(name, region, dtype, degree)

    check()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SPELLINGS))
def test_each_spelling_is_sound(name):
    @settings(max_examples=EACH_SPELLING_EXAMPLES)
    @given(
        region=regions(),
        dtype=st.sampled_from([np.float64, np.float32]),
        degree=st.integers(1, 3),
    )
    def check(region, dtype, degree):
        _check_spelling(name, region, dtype, degree)

    check()


# --------------------------------------------------------------------------- weights and masks


def test_weights_that_vanish_drop_out_and_never_make_nan():
    # b = 0 entries have the logit -inf: probability 0, and no effect on the bound.
    z = np.array([0.3, -1.0, 2.0])

    def f(t):
        return jax.nn.logsumexp(jnp.asarray(z) * t, b=jnp.array([0.0, 2.0, 0.0]))

    bounds = ab.taylor_bounds(f, 2)(0.5, (0.0, 1.0))
    np.testing.assert_allclose(bounds.coefficients[0], -0.5 + np.log(2.0), rtol=1e-14)
    np.testing.assert_allclose(bounds.coefficients[1], -1.0, rtol=1e-14)
    np.testing.assert_allclose(bounds.final_interval(), [0.0, 0.0], atol=1e-15)


def test_a_row_of_zero_weights_is_minus_infinity_exactly():
    def f(t):
        z = jnp.stack([t, 2 * t])[None].repeat(2, 0)
        return jax.nn.logsumexp(z, axis=1, b=jnp.array([[0.0, 0.0], [1.0, 1.0]]))

    for bound in (ab.taylor_bounds(f, 2), jax.jit(ab.taylor_bounds(f, 2))):
        c0, c1, (lo, hi) = bound(0.5, (0.0, 1.0)).coefficients
        assert np.isneginf(c0[0]) and c1[0] == 0 and lo[0] == hi[0] == 0
        assert np.all(np.isfinite([c0[1], c1[1], lo[1], hi[1]]))
        np.testing.assert_allclose(c0[1], jax.nn.logsumexp(jnp.array([0.5, 1.0])), rtol=1e-14)


def test_negative_weights_are_refused_when_known():
    def f(t):
        return jax.nn.logsumexp(jnp.array([1.0, 2.0]) * t, b=jnp.array([0.5, -2.0]))

    for bound in (ab.taylor_bounds(f, 2), jax.jit(ab.taylor_bounds(f, 2))):
        with pytest.raises(NotImplementedError, match="negative or NaN weight b") as error:
            bound(0.3, (0.0, 1.0))
        assert "test_logsumexp_spellings.py" in str(error.value)


def test_traced_negative_weights_give_no_bound_in_their_row():
    # b is traced (a jit argument): the row with a negative weight gets NaN coefficients and an
    # unbounded interval, and its sign is unknown (NaN); the other row is bounded as usual.
    z = np.array([[1.0, 2.0, -0.5], [3.0, -1.0, 0.2]])

    def bounds(b, return_sign):
        def f(t):
            out = jax.nn.logsumexp(jnp.asarray(z) * t, axis=1, b=b, return_sign=return_sign)
            return out[1] if return_sign else out

        return ab.taylor_bounds(f, 2)(0.3, (0.0, 1.0))

    b = jnp.array([[0.5, -1.0, 2.0], [1.0, 3.0, 0.0]])
    c0, c1, (lo, hi) = jax.jit(bounds, static_argnums=1)(b, False).coefficients
    assert np.isnan(c0[0]) and np.isnan(c1[0]) and np.isneginf(lo[0]) and np.isposinf(hi[0])
    expected = ab.taylor_bounds(
        lambda t: jax.nn.logsumexp(jnp.asarray(z[1, :2]) * t + np.log([1, 3])), 2
    )
    for got, want in zip(
        (c0[1], c1[1], lo[1], hi[1]),
        jax.tree.leaves(expected(0.3, (0.0, 1.0)).coefficients),
        strict=False,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    sign = jax.jit(bounds, static_argnums=1)(b, True).coefficients[0]
    assert np.isnan(sign[0]) and sign[1] == 1.0


def test_a_shift_added_to_the_wrong_rows_is_refused():
    # log(sum(exp(z - s))) + s cancels only with the very shift of each row; s transposed is not
    # a log-sum-exp (the function is still computed, by JAX, but not as LSE).
    def f(t):
        z = jnp.array([[1.0, 2.0], [3.0, -1.0]]) * t
        s = jax.lax.stop_gradient(jnp.max(z, axis=1))
        return jnp.sum(jnp.log(jnp.sum(jnp.exp(z - s[:, None]), axis=1)) + s[::-1])

    with pytest.raises(NotImplementedError, match="log-sum-exp pattern"):
        ab.taylor_bounds(f, 2)(0.3, (0.0, 1.0))


def test_a_shift_that_varies_along_the_summed_axis_is_refused():
    def f(t):
        z = jnp.array([[1.0, 2.0], [3.0, -1.0]]) * t
        s = jax.lax.stop_gradient(jnp.max(z, axis=0))  # one shift per column, summed over rows
        return jnp.sum(jnp.log(jnp.sum(jnp.exp(z - s[None, :]), axis=1)))

    with pytest.raises(NotImplementedError, match="log-sum-exp pattern"):
        ab.taylor_bounds(f, 2)(0.3, (0.0, 1.0))


def test_the_shift_may_come_first_in_the_final_addition():
    def f(t):
        z = jnp.array([1.0, 2.0, -0.5]) * t
        s = jax.lax.stop_gradient(jnp.max(z))
        return s + jnp.log(jnp.sum(jnp.exp(z - s)))

    plain = ab.taylor_bounds(lambda t: jax.nn.logsumexp(jnp.array([1.0, 2.0, -0.5]) * t), 2)
    _assert_same_bounds(
        ab.taylor_bounds(f, 2)(0.3, (0.0, 1.0)).coefficients, plain(0.3, (0.0, 1.0)).coefficients
    )
