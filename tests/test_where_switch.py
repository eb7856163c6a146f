"""A ``where`` whose predicate depends on the input: finite bounds off the switching point.

Where the predicate can flip inside the trust region, the select is the case chosen at the
reference point plus a jump that happens only at a distance ``δ > 0`` from it (bounded below
from the predicate's enclosure), so the jump divided by ``t^k`` is at most
``range(other - chosen) / δ^k``: finite whenever the reference point is not on the switching
point itself (``rules._switch_allowance``). Checked on continuous and discontinuous selects,
every comparison, reference points exactly on, one float beside and near the switch, one- and
two-sided regions of many sizes, float32 and float64.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import check_bounds
from helpers import compute_bounds
from helpers import rounded
from hypothesis import given
from hypothesis import strategies as st

from optax_saferate import autobound as ab

pytestmark = pytest.mark.usefixtures("autobound_numerics")

# Exactly representable in float32, so that float32 and the float64 reference agree on which
# side of the switch every point lies.
SWITCH = 0.375

# name -> (f, the predicate's difference d(x), which is 0 at the switching point)
SELECTS = {
    "continuous kink": (lambda x: jnp.where(x > SWITCH, 0.5 * x, 0.25 * x), lambda x: x - SWITCH),
    "jump": (lambda x: jnp.where(x >= SWITCH, jnp.exp(x), jnp.sin(x)), lambda x: x - SWITCH),
    "step": (
        lambda x: jnp.where(x < SWITCH, jnp.asarray(2.0, x.dtype), jnp.asarray(-1.0, x.dtype)),
        lambda x: SWITCH - x,
    ),
    "equality": (lambda x: jnp.where(x == SWITCH, 3.0 * x, x**2), lambda x: x - SWITCH),
    "inequality": (lambda x: jnp.where(x != SWITCH, jnp.cos(x), 5.0), lambda x: x - SWITCH),
}


def _cases(rng: np.random.Generator, count: int, dtype):
    """Reference points on, one float beside, near and far from the switch; regions one-sided
    either way and two-sided, widths 1e-6 to 2."""
    mode = np.arange(count) % 4
    beside = np.nextafter(
        np.asarray(SWITCH, dtype), np.where(rng.uniform(size=count) < 0.5, -np.inf, np.inf)
    )
    near = SWITCH + rng.choice([-1, 1], count) * 10.0 ** rng.uniform(-6, -1, count)
    far = rng.uniform(-1.0, 2.0, count)
    x0 = rounded(np.select([mode == 0, mode == 1, mode == 2], [SWITCH, beside, near], far), dtype)
    width = np.exp(rng.uniform(np.log(1e-6), np.log(2.0), count))
    side = rng.integers(0, 3, count)  # right of x0, left of it, around it
    split = rng.uniform(size=count)
    lo = np.select([side == 0, side == 1], [x0, x0 - width], x0 - split * width)
    hi = np.select([side == 0, side == 1], [x0 + width, x0], x0 + (1 - split) * width)
    lo, hi = rounded(lo, dtype), rounded(hi, dtype)
    lo, hi = np.minimum(lo, x0), np.maximum(hi, x0)
    kink = np.asarray(SWITCH, dtype)
    kinks = np.stack([kink, np.nextafter(kink, -np.inf), np.nextafter(kink, np.inf)])
    return x0, (lo, hi), np.broadcast_to(kinks.astype(np.float64), (count, 3))


def _check(name, dtype, degree, seed, count=32):
    f, difference = SELECTS[name]
    x0, region, kinks = _cases(np.random.default_rng(seed), count, dtype)
    bounds = check_bounds(f, x0, region, degree, dtype, extra_points=kinks, seed=seed)
    lo_k, hi_k = (np.asarray(e) for e in bounds.final_interval())
    off_switch = np.asarray(difference(x0.astype(dtype))) != 0
    assert np.all(np.isfinite(lo_k[off_switch]) & np.isfinite(hi_k[off_switch])), (
        f"{name}: unbounded although the reference point is off the switch"
    )


def test_the_issues_example_is_finite_and_sharp():
    """``where(x > 0, x/2, x/4)`` at 0.3 over [0, 1]: the switch is 0.3 away, the jump there is
    ``-x/4`` (at most 1/4 over the region), so ``c2 ∈ [-(1/4)/0.3², 0]``; it was ``(-inf, inf)``."""
    bounds = ab.taylor_bounds(lambda x: jnp.where(x > 0, 0.5 * x, 0.25 * x), 2)(0.3, (0.0, 1.0))
    np.testing.assert_allclose(bounds.coefficients[:2], [0.15, 0.5], rtol=1e-6)
    np.testing.assert_allclose(bounds.final_interval(), [-0.25 / 0.09, 0.0], rtol=1e-5, atol=0)
    # Where the region stops short of the switch the select is exact, as before.
    exact = ab.taylor_bounds(lambda x: jnp.where(x > 0, 0.5 * x, 0.25 * x), 2)(0.3, (0.1, 1.0))
    np.testing.assert_array_equal(exact.final_interval(), [0.0, 0.0])


def test_on_the_switch_it_is_unbounded_on_the_jumps_side_only():
    """At the switching point itself the jump can happen arbitrarily close: no finite degree-k
    coefficient holds on the side the jump can go, and the enclosure says so instead of
    guessing; a jump of one sign keeps the other end (``x - (-x) >= 0`` on [0, 1])."""
    bounds = ab.taylor_bounds(lambda x: jnp.where(x > 0.5, x, -x), 2)(0.5, (0.0, 1.0))
    lo, hi = bounds.final_interval()
    assert float(lo) == 0.0 and np.isposinf(hi)
    bounds = ab.taylor_bounds(lambda x: jnp.where(x > 0.5, 1 - x, x), 2)(0.5, (0.0, 1.0))
    lo, hi = bounds.final_interval()
    assert np.isneginf(lo) and np.isposinf(hi)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_selects_are_sound_on_and_beside_the_switch(dtype):
    for seed, name in enumerate(SELECTS):
        _check(name, dtype, 2, seed)


def test_a_nonlinear_predicate_is_finite_off_its_switch():
    """The distance to the switch comes from the predicate's own enclosure (here ``sin``)."""

    def f(x):
        return jnp.where(jnp.sin(3 * x) > 0.2, x**2, 1 - x)

    rng = np.random.default_rng(7)
    x0 = rng.uniform(-2, 2, 48)
    width = np.exp(rng.uniform(np.log(1e-4), np.log(1.0), 48))
    region = (x0 - width * (np.arange(48) % 2), x0 + width)
    bounds = check_bounds(f, x0, region, 2)
    assert np.all(np.isfinite(np.asarray(bounds.final_interval())))
    # The degree-0 pass (propagate_trust_regions) takes the hull of the cases, as before.
    check_bounds(f, x0, region, 2, propagate_trust_regions=True)


@pytest.mark.slow
@given(
    name=st.sampled_from(sorted(SELECTS)),
    dtype=st.sampled_from([np.float64, np.float32]),
    degree=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_selects_are_sound_property(name, dtype, degree, seed):
    _check(name, dtype, degree, seed)


def test_batched_cases_share_one_compilation_and_agree_with_single_calls():
    """Under vmap the allowance is per case: each case equals its own unbatched bound."""
    f = SELECTS["jump"][0]
    x0 = np.array([0.1, 0.375, 0.6, 0.374])
    region = (x0 - np.array([0.0, 0.2, 0.5, 0.0]), x0 + np.array([0.5, 0.2, 0.0, 0.01]))
    batched = compute_bounds(f, 2, x0, region)
    for i in range(len(x0)):
        single = ab.taylor_bounds(f, 2)(x0[i], (region[0][i], region[1][i]))
        np.testing.assert_allclose(
            np.asarray(batched.final_interval())[:, i], single.final_interval(), rtol=1e-12
        )
