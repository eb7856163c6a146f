"""The mean-value form of a smooth function of an enclosure with a remainder (deep nets).

``σ(P + ρ·t^k) = σ(P) + σ'(ξ)·ρ·t^k``: the remainder of ``σ(u)`` also lies in ``S_P + σ'(range)·R``,
linear in the input's remainder ``R``, and ``elementwise.enclose`` intersects it with the
composed form (which squares the slope range ``u1 + R·T`` at degree 2). Property tests draw deep
chains ``σ_L(w_L·σ_{L-1}(… σ_1(w_1·x + b_1) …) + b_L)`` (depth 2-5, smooth activations, degrees
1-3, float32 and float64, one- and two-sided trust regions of widths 1e-6..2, reference points
on and beside the activations' inflection points); the example count comes from the hypothesis
profile (``-m slow``; the thorough profile for the long run).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import check_bounds
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from optax_saferate import autobound as ab
from optax_saferate.autobound import elementwise

pytestmark = pytest.mark.usefixtures("autobound_numerics")

ACTIVATIONS = {
    "softplus": jax.nn.softplus,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "swish": jax.nn.swish,
    "exp(-u²)": lambda u: jnp.exp(-u * u),
    "sin": jnp.sin,
}


def _chain(names, weights, biases):
    def f(x):
        u = x
        for name, w, b in zip(names, weights, biases, strict=True):
            u = ACTIVATIONS[name](w * u + b)
        return u

    return f


def _f32(values):
    return [float(np.float32(v)) for v in values]


@pytest.mark.slow  # ~6 s an example (each chain is traced anew); the composition tests of
# test_soundness_property.py cover depth 1-4 chains in the default run
@settings(max_examples=settings.default.max_examples, deadline=None)
@given(
    depth=st.integers(2, 5),
    data=st.data(),
    degree=st.sampled_from([1, 2, 3]),
    dtype=st.sampled_from([np.float64, np.float32]),
    width=st.floats(-6, np.log10(2.0)),
    one_sided=st.booleans(),
    x0=st.one_of(st.floats(-3, 3), st.sampled_from([0.0, 1e-7, -1e-7])),
)
def test_deep_smooth_chains_are_sound(depth, data, degree, dtype, width, one_sided, x0):
    names = data.draw(
        st.lists(st.sampled_from(sorted(ACTIVATIONS)), min_size=depth, max_size=depth)
    )
    weights = _f32(data.draw(st.lists(st.floats(-4, 4), min_size=depth, max_size=depth)))
    biases = _f32(data.draw(st.lists(st.floats(-2, 2), min_size=depth, max_size=depth)))
    x0 = float(np.float32(x0))
    w = 10.0**width
    lo, hi = (x0, x0 + w) if one_sided else (x0 - w / 3, x0 + 2 * w / 3)
    check_bounds(_chain(names, weights, biases), x0, (lo, hi), degree, dtype, samples=32, jit=False)


def test_the_mean_value_form_is_never_looser_and_cuts_deep_widening():
    """Intersection: never wider than the composed form; on a 4-deep softplus chain over a wide
    one-sided region the composed form alone squares the slope range at every layer."""
    f = _chain(["softplus"] * 4, [3.0, -2.5, 3.0, 2.0], [0.1, 0.5, -0.3, 0.2])
    x0, region = 0.2, (0.2, 1.2)
    with jax.enable_x64(True):
        new = ab.taylor_bounds(f, 2)(x0, region).final_interval()
        composed_only = elementwise._intersect_remainders
        try:
            elementwise._intersect_remainders = lambda a, b: a
            old = ab.taylor_bounds(f, 2)(x0, region).final_interval()
        finally:
            elementwise._intersect_remainders = composed_only
        check_bounds(f, x0, region, 2, np.float64, jit=False)
    assert new[0] >= old[0] and new[1] <= old[1]
    assert float(new[1] - new[0]) < 0.5 * float(old[1] - old[0])
