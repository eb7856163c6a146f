"""Tests of the SafeRate optax transformation (DESIGN §4, issue 3)."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import optax_saferate as osr
from optax_saferate.saferate import NESTED_RUNGS
from optax_saferate.saferate import _rung_gains as rung_gains


def _run(tx, loss, params, steps, jit=True, **update_kwargs):
    state = tx.init(params)

    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(
            grads, state, params, value_fn=loss, value=value, **update_kwargs
        )
        return optax.apply_updates(params, updates), state, value

    if jit:
        step = jax.jit(step)
    values = []
    for _ in range(steps):
        params, state, value = step(params, state)
        values.append(float(value))
    values.append(float(loss(params)))
    return params, state, np.array(values)


# --------------------------------------------------------------------------- optax contract


def test_requires_value_fn_with_a_helpful_error():
    tx = osr.saferate(optax.adam(1.0))
    params = jnp.ones(3)
    state = tx.init(params)
    with pytest.raises(TypeError, match="value_fn"):
        tx.update(jnp.ones(3), state, params)


def test_accepts_and_ignores_unknown_extra_args():
    loss = lambda p: jnp.sum(p**2)  # noqa: E731
    tx = osr.saferate(optax.sgd(1.0))
    params = jnp.ones(3)
    state = tx.init(params)
    unknown = object()  # not an array: it reaches update as a Python object, jit or not

    @jax.jit
    def update(params, state):
        grads = jax.grad(loss)(params)
        return tx.update(grads, state, params, value_fn=loss, some_unknown_arg=unknown, grad=None)

    updates, _ = update(params, state)
    assert float(loss(params + updates)) < float(loss(params))


def test_passes_extra_args_that_value_fn_accepts():
    def loss(params, batch):
        x, y = batch
        return jnp.mean((x @ params - y) ** 2)

    x = jax.random.normal(jax.random.PRNGKey(0), (20, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5])
    tx = osr.saferate(optax.adam(1.0))
    params = jnp.zeros(3)
    state = tx.init(params)

    @jax.jit
    def step(params, state, batch):
        grads = jax.grad(loss)(params, batch)
        updates, state = tx.update(grads, state, params, value_fn=loss, batch=batch, ignored=1)
        return optax.apply_updates(params, updates), state

    for _ in range(100):
        params, state = step(params, state, (x, y))
    assert float(loss(params, (x, y))) < 1e-2


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32, jnp.float64])
def test_keeps_param_dtypes_and_fixed_state_dtypes(dtype):
    with jax.enable_x64(True):
        loss = lambda p: jnp.sum((p["w"].astype(jnp.float32) - 1.0) ** 2)  # noqa: E731
        params = {"w": jnp.zeros(4, dtype)}
        tx = osr.saferate(optax.adam(1.0))
        state = tx.init(params)
        before = jax.tree.map(lambda x: x.dtype, state)
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params, value_fn=loss)
        assert updates["w"].dtype == dtype
        assert jax.tree.map(lambda x: x.dtype, state) == before
        assert float(loss(optax.apply_updates(params, updates))) < float(loss(params))


def test_compiles_once():
    traces = []

    def loss(p):
        traces.append(None)
        return jnp.sum(jnp.tanh(p) ** 2)

    tx = osr.saferate(optax.adam(1.0))
    params = jnp.linspace(-1.0, 1.0, 5)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params, value_fn=loss)
        return optax.apply_updates(params, updates), state

    params, state = step(params, state)
    count = len(traces)
    for _ in range(3):
        params, state = step(params, state)
    assert len(traces) == count


def test_inject_hyperparams():
    tx = optax.inject_hyperparams(osr.scale_by_saferate)(initial_max_learning_rate=0.25)
    tx = optax.chain(optax.scale_by_adam(), tx)
    loss = lambda p: jnp.sum((p - 2.0) ** 2)  # noqa: E731
    _, state, values = _run(tx, loss, jnp.zeros(3), 30)
    assert values[-1] < 1e-2 * values[0]
    assert np.all(np.diff(values) <= 1e-6)


def test_works_under_scan_and_apply_if_finite():
    loss = lambda p: jnp.sum(jnp.logaddexp(0.0, -p))  # noqa: E731
    tx = optax.apply_if_finite(osr.saferate(optax.adam(1.0)), max_consecutive_errors=3)
    params = jnp.zeros(4)
    state = tx.init(params)

    def body(carry, _):
        params, state = carry
        updates, state = tx.update(jax.grad(loss)(params), state, params, value_fn=loss)
        return (optax.apply_updates(params, updates), state), loss(params)

    (params, state), values = jax.lax.scan(body, (params, state), length=20)
    assert np.all(np.diff(np.asarray(values)) <= 1e-6)
    assert float(loss(params)) < float(values[0])


def test_multisteps_runs_every_micro_step():
    loss = lambda p: jnp.sum((p - 1.0) ** 2)  # noqa: E731
    tx = optax.MultiSteps(osr.saferate(optax.adam(1.0)), every_k_schedule=2)
    _, _, values = _run(tx, loss, jnp.zeros(2), 20)
    assert values[-1] < values[0]


# --------------------------------------------------------------------------- convergence


def test_converges_on_a_parabola():
    loss = lambda p: jnp.sum(jnp.array([1.0, 10.0]) * (p - 3.0) ** 2)  # noqa: E731
    _, _, values = _run(osr.saferate(optax.adam(1.0)), loss, jnp.zeros(2), 100)
    assert values[-1] < 1e-4
    assert np.all(np.diff(values) <= 1e-6 * values[0])


def test_converges_on_rosenbrock():
    def loss(p):
        return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2

    with jax.enable_x64():
        _, _, values = _run(
            osr.saferate(optax.adam(1.0)), loss, jnp.array([-1.0, 1.0], jnp.float64), 500
        )
    assert values[-1] < 1e-2 * values[0]
    assert np.all(np.diff(values) <= 1e-12)


def test_converges_on_a_matrix_problem():
    key = jax.random.PRNGKey(3)
    target = jax.random.normal(key, (6, 2)) @ jax.random.normal(jax.random.PRNGKey(4), (2, 5))
    params = {
        "a": 0.1 * jax.random.normal(jax.random.PRNGKey(5), (6, 2)),
        "b": 0.1 * jax.random.normal(jax.random.PRNGKey(6), (2, 5)),
    }
    loss = lambda p: jnp.mean((p["a"] @ p["b"] - target) ** 2)  # noqa: E731
    _, _, values = _run(osr.saferate(optax.adam(1.0)), loss, params, 300)
    assert values[-1] < 1e-2 * values[0]
    assert np.all(np.diff(values) <= 1e-5 * values[0])


# --------------------------------------------------------------------------- step rule


def test_uphill_directions_are_learned_once():
    """``scale_by_adam()`` output points uphill: the first update flips the sign, no shrink."""
    loss = lambda p: jnp.sum((p - 3.0) ** 2)  # noqa: E731
    tx = optax.chain(optax.scale_by_adam(), osr.scale_by_saferate())
    _, state, values = _run(tx, loss, jnp.zeros(2), 20)
    inner = state[1]
    assert float(inner.direction_sign) == -1.0
    assert values[-1] < 1e-3


def test_non_descent_direction_takes_no_step_and_keeps_the_trust_region():
    loss = lambda p: jnp.sum(p**2)  # noqa: E731
    tx = osr.scale_by_saferate(initial_max_learning_rate=0.5)
    params = jnp.ones(3)
    state = tx.init(params)
    downhill = -jax.grad(loss)(params)
    _, state = tx.update(downhill, state, params, value_fn=loss)  # decides the sign: +1
    max_lr = float(state.max_learning_rate)
    updates, state = tx.update(-downhill, state, params, value_fn=loss)  # uphill now
    assert float(jnp.abs(updates).max()) == 0.0
    assert float(state.learning_rate) == 0.0
    assert float(state.max_learning_rate) == max_lr
    assert int(state.refused_steps) == 1


def test_non_finite_bound_takes_no_step_and_halves():
    # log barrier: NaN for p <= 0, and an enormous first trust region.
    loss = lambda p: -jnp.sum(jnp.log(p)) + jnp.sum(p)  # noqa: E731
    tx = osr.saferate(optax.sgd(1.0), initial_max_learning_rate=1e6, trust_region="halving")
    params, state, values = _run(tx, loss, jnp.array([0.1, 5.0, 0.01]), 100)
    assert np.all(np.isfinite(np.asarray(params)))
    assert np.all(np.isfinite(values))
    assert np.all(np.diff(values) <= 1e-6 * np.abs(values[0]))
    inner = state[1]
    assert int(inner.halvings) > 0
    assert values[-1] < values[0]


def test_trust_region_doubles_when_step_uses_half_of_it():
    loss = lambda p: jnp.sum((p - 100.0) ** 2)  # noqa: E731
    tx = osr.scale_by_saferate(initial_max_learning_rate=1.0, trust_region="halving")
    params = jnp.zeros(1)
    state = tx.init(params)
    direction = jnp.ones(1)  # downhill; the optimum is 100 away
    _, state = tx.update(direction, state, params, value_fn=loss)
    assert float(state.learning_rate) == 1.0
    assert float(state.max_learning_rate) == 2.0


def test_a_step_below_the_regions_rounding_unit_is_refused():
    # h(η) = (η - 1e-8)²: the bound's minimiser 1e-8 is below eps·η_max = 1.2e-7 (float32).
    loss = lambda p: jnp.sum((p - 1e-8) ** 2)  # noqa: E731
    tx = osr.scale_by_saferate(initial_max_learning_rate=1.0, trust_region="halving")
    params = jnp.zeros(1, jnp.float32)
    state = tx.init(params)
    updates, state = tx.update(jnp.ones(1), state, params, value_fn=loss)
    assert float(jnp.abs(updates).max()) == 0.0
    assert int(state.refused_steps) == 1
    assert float(state.max_learning_rate) == 0.5
    # Once the region is small enough, the same step is taken.
    for _ in range(30):
        updates, state = tx.update(jnp.ones(1), state, params, value_fn=loss)
    assert float(updates[0]) > 0


def test_fit_doubles_the_region_when_the_step_reaches_its_end():
    loss = lambda p: jnp.sum((p - 100.0) ** 2)  # noqa: E731
    tx = osr.scale_by_saferate(initial_max_learning_rate=1.0, trust_region="fit")
    params = jnp.zeros(1)
    state = tx.init(params)
    updates, state = tx.update(jnp.ones(1), state, params, value_fn=loss)
    assert float(updates[0]) == 1.0
    assert float(state.max_learning_rate) == 2.0
    for _ in range(5):
        params = params + updates
        updates, state = tx.update(jnp.ones(1), state, params, value_fn=loss)
    assert float(state.max_learning_rate) == 64.0  # 2, 4, ..., 64: the vertex is 37 away now
    assert float(jnp.sum(params + updates)) == pytest.approx(63.0)


def test_fit_moves_the_region_towards_a_step_inside_it():
    # h(η) = (η - 0.1)²: the exact quadratic, so the step is the vertex 0.1 whatever the region;
    # the next region is sqrt(0.1·1), half-way to the step in log scale; at most a quarter.
    loss = lambda p: jnp.sum((p - 0.1) ** 2)  # noqa: E731
    tx = osr.scale_by_saferate(initial_max_learning_rate=1.0, trust_region="fit")
    params = jnp.zeros(1)
    state = tx.init(params)
    updates, state = tx.update(jnp.ones(1), state, params, value_fn=loss)
    assert float(updates[0]) == pytest.approx(0.1)
    assert float(state.max_learning_rate) == pytest.approx(np.sqrt(0.1))
    assert int(state.halvings) == 1
    far = osr.scale_by_saferate(initial_max_learning_rate=1e4, trust_region="fit")
    loss = lambda p: jnp.sum((p - 1.0) ** 2)  # noqa: E731
    _, far_state = far.update(jnp.ones(1), far.init(params), params, value_fn=loss)
    assert float(far_state.max_learning_rate) == pytest.approx(2500.0)  # sqrt(1e4/16 · 1e4)


def test_fit_quarters_the_region_when_the_bound_is_not_finite():
    loss = lambda p: -jnp.sum(jnp.log(p)) + jnp.sum(p)  # noqa: E731
    tx = osr.scale_by_saferate(initial_max_learning_rate=1e6, trust_region="fit")
    params = jnp.array([0.1, 5.0, 0.01])
    state = tx.init(params)
    updates, state = tx.update(-jax.grad(loss)(params), state, params, value_fn=loss)
    assert float(jnp.abs(updates).max()) == 0.0
    assert float(state.max_learning_rate) == 2.5e5
    tx = osr.saferate(optax.sgd(1.0), initial_max_learning_rate=1e6, trust_region="fit")
    params, state, values = _run(tx, loss, params, 30)
    assert np.all(np.isfinite(values))
    assert np.all(np.diff(values) <= 1e-6 * np.abs(values[0]))
    assert values[-1] < values[0]


def test_ladder_takes_the_rung_with_the_largest_guaranteed_decrease():
    # h(η) = (η - 100)² along u = 1: the exact quadratic, so c2 = 1 on every rung and the best
    # rung is the largest, 16·η_max, which the next update's ladder is centred on. The default
    # ladder's rungs are √2 apart from 1/16 to 16.
    loss = lambda p: jnp.sum((p - 100.0) ** 2)  # noqa: E731
    tx = osr.scale_by_saferate(initial_max_learning_rate=1.0, trust_region="ladder")
    params = jnp.zeros(1)
    state = tx.init(params)
    updates, state = tx.update(jnp.ones(1), state, params, value_fn=loss)
    assert float(updates[0]) == 16.0
    assert float(state.learning_rate) == 16.0
    assert float(state.max_learning_rate) == 16.0
    params = params + updates
    updates, state = tx.update(jnp.ones(1), state, params, value_fn=loss)
    assert float(updates[0]) == pytest.approx(84.0)  # the vertex, inside the rungs 64√2 .. 256
    # those rungs tie, and the smallest region that holds the vertex is the one kept
    assert float(state.max_learning_rate) == pytest.approx(64.0 * 2**0.5)
    params = params + updates
    updates, state = tx.update(jnp.ones(1), state, params, value_fn=loss)
    assert abs(float(updates[0])) < 1e-3  # at the optimum: no descent along u, region kept
    kept = float(state.max_learning_rate)
    assert any(kept == pytest.approx(r) for r in (64.0 * 2**0.5, 64.0 * 2**0.5 / 16))


def test_ladder_with_far_rungs_keeps_the_only_rung_holding_the_vertex():
    # the same quadratic with the sparse ladder (1/4, 1, 4, 16): only the rung 256 holds the
    # vertex 84 on the second step.
    loss = lambda p: jnp.sum((p - 100.0) ** 2)  # noqa: E731
    tx = osr.scale_by_saferate(
        initial_max_learning_rate=1.0, trust_region="ladder", ladder=(0.25, 1.0, 4.0, 16.0)
    )
    params = jnp.zeros(1)
    state = tx.init(params)
    updates, state = tx.update(jnp.ones(1), state, params, value_fn=loss)
    assert float(updates[0]) == 16.0
    params = params + updates
    updates, state = tx.update(jnp.ones(1), state, params, value_fn=loss)
    assert float(updates[0]) == pytest.approx(84.0)
    assert float(state.max_learning_rate) == 256.0


def test_ladder_prefers_a_lower_rung_when_its_bound_is_tighter():
    # exp grows fast: over [0, 4] its bound is far looser than over [0, 1/4], so the lower rung's
    # step gives the larger guaranteed decrease, and the region moves down to it.
    loss = lambda p: jnp.sum(jnp.exp(p) - 3.0 * p)  # noqa: E731
    # The quadratic bound alone (with linear_bound the degree-1 bound can win a rung by an ulp).
    tx = osr.scale_by_saferate(
        initial_max_learning_rate=1.0,
        trust_region="ladder",
        ladder=(0.25, 1.0, 4.0),
        linear_bound=False,
    )
    params = jnp.zeros(1, jnp.float64) if jax.config.jax_enable_x64 else jnp.zeros(1)
    state = tx.init(params)
    direction = jnp.ones_like(params)
    _, state = tx.update(direction, state, params, value_fn=loss)
    slope, c2 = float(state.slope), float(state.curvature_hi)
    chosen = float(state.max_learning_rate)
    assert chosen in (0.25, 1.0, 4.0)
    best = -(slope * state.learning_rate + c2 * state.learning_rate**2)
    assert float(state.predicted_decrease) == pytest.approx(float(best))
    for region in (0.25, 1.0, 4.0):  # no single region of the same ladder does better
        single = osr.scale_by_saferate(
            initial_max_learning_rate=region, trust_region="halving", linear_bound=False
        )
        _, other = single.update(direction, single.init(params), params, value_fn=loss)
        assert float(other.predicted_decrease) <= float(state.predicted_decrease) * (1 + 1e-6)


@pytest.mark.parametrize(
    "loss",
    [
        # exact: the rungs tie once they hold the vertex
        lambda p: jnp.sum(jnp.arange(1.0, 5.0) * (p - 100.0) ** 2),
        # the bound loosens fast with the region
        lambda p: jnp.sum(jnp.exp(p * jnp.arange(1.0, 5.0)) - 3.0 * p),
        lambda p: jnp.sum(jax.nn.softplus(p * jnp.arange(1.0, 5.0)) - p),
    ],
)
def test_refine_finds_the_dense_ladders_rung(loss):
    # The guaranteed decrease is unimodal along the ladder on these losses (c2_hi grows with T),
    # so the coarse-to-fine search (9 of the 17 rungs) takes the dense ladder's steps.
    def trajectory(trust_region):
        tx = osr.saferate(optax.sgd(1.0), initial_max_learning_rate=0.1, trust_region=trust_region)
        params, state, steps = jnp.zeros(4), None, []
        state = tx.init(params)
        for _ in range(6):
            updates, state = tx.update(jax.grad(loss)(params), state, params, value_fn=loss)
            params = optax.apply_updates(params, updates)
            inner = state[1]
            steps.append((float(inner.learning_rate), float(inner.max_learning_rate)))
        return np.array(steps)

    dense, refined = trajectory("ladder"), trajectory("refine")
    assert np.all(dense[:, 0] > 0), dense
    np.testing.assert_allclose(refined, dense, rtol=1e-5)


def test_ladder_moves_below_its_lowest_rung_when_no_rung_is_finite():
    loss = lambda p: -jnp.sum(jnp.log(p)) + jnp.sum(p)  # noqa: E731
    tx = osr.saferate(optax.sgd(1.0), initial_max_learning_rate=1e6, trust_region="ladder")
    params, state, values = _run(tx, loss, jnp.array([0.1, 5.0, 0.01]), 30)
    assert np.all(np.isfinite(values))
    assert np.all(np.diff(values) <= 1e-6 * np.abs(values[0]))
    inner = state[1]
    assert int(inner.halvings) > 0
    assert values[-1] < values[0]


def test_nested_takes_the_largest_region_to_its_end_and_doubles():
    # h(η) = (η - 100)² along u = 1: c2 = 1 in every region, so the best is the largest one's end.
    loss = lambda p: jnp.sum((p - 100.0) ** 2)  # noqa: E731
    tx = osr.scale_by_saferate(initial_max_learning_rate=1.0, trust_region="nested")
    params = jnp.zeros(1)
    updates, state = tx.update(jnp.ones(1), tx.init(params), params, value_fn=loss)
    assert float(updates[0]) == 1.0
    assert float(state.max_learning_rate) == 2.0


def test_nested_steps_never_increase_the_loss_and_follow_the_winning_region():
    # A smooth net (tanh, then log-sum-exp): the degree-3 part is computed once over η_max.
    rng = np.random.default_rng(0)
    x, w = jnp.asarray(rng.normal(size=(64, 6))), jnp.asarray(rng.normal(size=(6, 8)))
    labels = jnp.asarray(rng.integers(0, 3, size=64))

    def loss(p):
        logits = jnp.tanh(x @ (w + p["w"])) @ p["v"]
        return jnp.mean(
            jax.nn.logsumexp(logits, axis=1)
            - jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
        )

    params = {"w": jnp.zeros((6, 8)), "v": jnp.asarray(0.1 * rng.normal(size=(8, 3)))}
    tx = osr.saferate(optax.adam(1.0), trust_region="nested")
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, new_state = tx.update(grads, state, params, value_fn=loss)
        return optax.apply_updates(params, updates), new_state, value

    values, taken = [], 0
    for _ in range(25):
        before = float(state[1].max_learning_rate)
        params, state, value = step(params, state)
        inner = state[1]
        values.append(float(value))
        eta, after = float(inner.learning_rate), float(inner.max_learning_rate)
        if eta > 0:
            taken += 1
            slope, c2 = float(inner.slope), float(inner.curvature_hi)
            assert float(inner.predicted_decrease) == pytest.approx(-(slope * eta + c2 * eta**2))
            regions = before * np.asarray(NESTED_RUNGS)
            assert after == pytest.approx(2 * before) or np.any(
                np.isclose(after, regions * 2**0.25, rtol=1e-5)
            )
    values.append(float(loss(params)))
    assert taken >= 20
    assert np.all(np.diff(values) <= 8 * np.finfo(np.float32).eps * np.abs(values[:-1]))
    assert values[-1] < 0.9 * values[0]


def test_bad_options_and_non_scalar_losses_raise_clear_errors():
    with pytest.raises(ValueError, match="trust_region"):
        osr.scale_by_saferate(trust_region="doubling")
    for ladder in ((1.0,), (0.5, 1.0), (1.0, 4.0), (0.0, 4.0), (0.5, np.inf), 4.0):
        with pytest.raises(ValueError, match="ladder"):
            osr.scale_by_saferate(ladder=ladder)
    params = {"w": jnp.ones(3)}
    tx = osr.scale_by_saferate()
    state = tx.init(params)
    with pytest.raises(TypeError, match=r"shape \(3,\) and dtype float32"):
        tx.update(params, state, params, value_fn=lambda p: p["w"] ** 2)
    with pytest.raises(TypeError, match="dtype int32"):
        tx.update(params, state, params, value_fn=lambda p: jnp.sum(p["w"]).astype(jnp.int32))


def test_linear_bound_option_is_validated():
    for wrong in (1, "always", None):
        with pytest.raises(ValueError, match='linear_bound must be "auto", True or False'):
            osr.scale_by_saferate(linear_bound=wrong)


def test_rung_gains_take_whichever_bound_guarantees_more():
    """Per rung: the quadratic bound's vertex step, or the region's end when the degree-1 bound
    ``h(0) + m_hi·T`` guarantees more; a positive ``m_hi`` never counts."""
    rungs = jnp.asarray([0.1, 1.0, 10.0])
    h0, slope, c2 = jnp.asarray(1.0), jnp.asarray(-1.0), jnp.asarray([100.0, 100.0, 100.0])
    secant = jnp.asarray([-0.9, -0.5, 2.0])
    etas, usable, gains = rung_gains(h0, slope, c2, rungs, secant)
    # Quadratic: vertex 1/200 in every rung, decrease 1/400. Linear: 0.09, 0.5, none.
    np.testing.assert_allclose(etas, [0.1, 1.0, 0.005], rtol=1e-6)
    np.testing.assert_allclose(gains, [0.09, 0.5, 0.0025], rtol=1e-6)
    assert bool(jnp.all(usable))
    without = rung_gains(h0, slope, c2, rungs)
    np.testing.assert_allclose(without[2], [0.0025] * 3, rtol=1e-6)


def test_linear_bound_takes_far_larger_safe_steps_on_a_relu_net():
    """Kinks near the reference point cost a degree-2 bound ``V²/(4|u0|)`` each; the degree-1
    bound pays only the slope range of the units that can cross. Same relu MLP, same steps:
    the loss never goes up either way and ends far lower with the linear bound."""
    loss, params = _mlp_problem(1, 2, 32, "relu", "ce", jnp.float32, n=256, d=16)
    finals = {}
    for linear in (True, False):
        tx = osr.saferate(optax.adam(1.0), linear_bound=linear)
        _, state, values = _run(tx, loss, params, 30)
        assert np.all(np.diff(values) <= 8 * np.finfo(np.float32).eps * np.abs(values[:-1]))
        finals[linear] = values[-1]
    assert finals[True] < 0.85 * finals[False], finals  # measured: 0.545 against 0.764


def _update_program(linear_bound, loss, params) -> str:
    tx = osr.saferate(optax.adam(1.0), linear_bound=linear_bound)

    def update(params, state):
        return tx.update(jax.grad(loss)(params), state, params, value_fn=loss)

    return str(jax.make_jaxpr(update)(params, tx.init(params)))


@pytest.mark.parametrize("activation, same_as", [("relu", True), ("softplus", False)])
def test_auto_linear_bound_is_on_exactly_where_the_bound_meets_a_kink(activation, same_as):
    """ "auto" traces the very program of ``True`` on a relu net (both bounds) and of ``False``
    on a softplus net whose cross-entropy goes through the sharp log-sum-exp rule (the
    quadratic bound alone, a smaller program): identical programs, identical steps."""
    loss, params = _mlp_problem(3, 1, 8, activation, "ce", jnp.float32)
    programs = {lb: _update_program(lb, loss, params) for lb in (True, False, "auto")}
    assert programs["auto"] == programs[same_as]
    assert programs[True] != programs[False]
    assert len(programs[False]) < len(programs[True])


def test_dead_rows_on_the_relu_kink_do_not_stall_training():
    """Regression (hypothesis found it): two samples whose hidden units are all dead put the
    second layer's preactivation exactly on the kink. A first step of 1e-11 moved them beside
    it, where the sharp kink term 1/(4|u0|) is ~1e11, and training stalled for good."""
    loss, params = _mlp_problem(17197, 2, 8, "relu", "ce", jnp.float32)
    _, state, values = _run(osr.saferate(optax.adam(1.0)), loss, params, 50)
    assert np.all(np.diff(values) <= 8 * np.finfo(np.float32).eps * np.abs(values[:-1]))
    assert values[-1] < 0.8 * values[0]


def test_minimize_quadratic_bound_cases():
    f = osr.minimize_quadratic_bound
    assert float(f(-2.0, 1.0, 10.0)) == 1.0  # interior vertex
    assert float(f(-2.0, 1.0, 0.5)) == 0.5  # clipped vertex
    assert float(f(-1.0, -1.0, 3.0)) == 3.0  # concave: the far end
    assert float(f(1.0, -0.1, 3.0)) == 0.0  # ascent over the whole range: stay


# --------------------------------------------------------------------------- monotonicity


ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "softplus": jax.nn.softplus}


def _mlp_data(seed, depth, width, dtype, n=64, d=6, classes=3):
    """Random initial parameters and a full batch ``(inputs, labels)`` of an MLP problem."""
    key = jax.random.PRNGKey(seed)
    keys = jax.random.split(key, depth + 3)
    x = jax.random.normal(keys[0], (n, d), dtype)
    labels = jax.random.randint(keys[1], (n,), 0, classes)
    sizes = [d] + [width] * depth + [classes]
    params = [
        {"w": (jax.random.normal(k, (a, b)) / np.sqrt(a)).astype(dtype), "b": jnp.zeros(b, dtype)}
        for k, a, b in zip(keys[2:], sizes, sizes[1:], strict=False)
    ]
    return params, (x, labels)


def _mlp_loss(activation, loss_kind):
    """``loss(params, batch)`` of the MLP problems; the depth and width come from ``params``."""
    act = ACTIVATIONS[activation]

    def loss(params, batch):
        h, labels = batch
        for i, layer in enumerate(params):
            h = h @ layer["w"] + layer["b"]
            if i < len(params) - 1:
                h = act(h)
        if loss_kind == "ce":
            return optax.softmax_cross_entropy_with_integer_labels(h, labels).mean()
        classes = params[-1]["b"].shape[0]
        return jnp.mean((h - jax.nn.one_hot(labels, classes, dtype=h.dtype)) ** 2)

    return loss


def _mlp_problem(seed, depth, width, activation, loss_kind, dtype, n=64, d=6, classes=3):
    params, batch = _mlp_data(seed, depth, width, dtype, n, d, classes)
    loss = _mlp_loss(activation, loss_kind)
    return (lambda params: loss(params, batch)), params


def _cnn_data(seed, dtype):
    key = jax.random.PRNGKey(seed)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    x = jax.random.normal(k1, (16, 8, 8, 1), dtype)
    labels = jax.random.randint(k2, (16,), 0, 3)
    params = {
        "conv": (0.5 * jax.random.normal(k3, (3, 3, 1, 4))).astype(dtype),
        "dense": (0.2 * jax.random.normal(k4, (64, 3))).astype(dtype),
    }
    return params, (x, labels)


def _cnn_loss(activation):
    act = ACTIVATIONS[activation]

    def loss(params, batch):
        x, labels = batch
        h = jax.lax.conv_general_dilated(
            x, params["conv"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = act(h)
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        logits = h.reshape(h.shape[0], -1) @ params["dense"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return loss


@functools.cache
def _training_step(problem, activation, loss_kind, verify_decrease):
    """One jitted SafeRate(Adam) step of a problem family, the batch an argument: the seeds (and,
    through jit's cache, the shapes and dtypes) of a family share its compilations, which are
    nearly all the cost of a monotonicity example (50 steps of these problems take well under
    a second)."""
    loss = _mlp_loss(activation, loss_kind) if problem == "mlp" else _cnn_loss(activation)
    tx = osr.saferate(optax.adam(1.0), verify_decrease=verify_decrease)

    @jax.jit
    def step(params, state, batch):
        value, grads = jax.value_and_grad(loss)(params, batch)
        updates, state = tx.update(grads, state, params, value_fn=loss, value=value, batch=batch)
        return optax.apply_updates(params, updates), state, value

    return tx, step, jax.jit(loss)


def _full_batch_losses(family, params, batch, steps=50):
    """The full-batch loss before each of ``steps`` SafeRate steps and after the last."""
    tx, step, loss = _training_step(*family)
    state = tx.init(params)
    values = []
    for _ in range(steps):
        params, state, value = step(params, state, batch)
        values.append(float(value))
    values.append(float(loss(params, batch)))
    return np.array(values)


# The hypothesis profile sets the budget (conftest.py): 4 problem families by default (40 under
# HYPOTHESIS_PROFILE=thorough), each trained from SEEDS_PER_FAMILY random problems.
MONOTONICITY_EXAMPLES = max(settings.default.max_examples // 5, 1)
SEEDS_PER_FAMILY = 3
seed_lists = st.lists(
    st.integers(0, 2**16), min_size=SEEDS_PER_FAMILY, max_size=SEEDS_PER_FAMILY, unique=True
)


@settings(max_examples=MONOTONICITY_EXAMPLES)
@given(
    seeds=seed_lists,
    depth=st.integers(1, 2),
    width=st.sampled_from([4, 8]),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    loss_kind=st.sampled_from(["ce", "mse"]),
    double=st.booleans(),
)
def test_full_batch_loss_never_increases_exactly_with_verification(
    seeds, depth, width, activation, loss_kind, double
):
    dtype = jnp.float64 if double else jnp.float32
    with jax.enable_x64(double):
        for seed in seeds:
            params, batch = _mlp_data(seed, depth, width, dtype)
            values = _full_batch_losses(("mlp", activation, loss_kind, True), params, batch)
            assert np.all(np.diff(values) <= 0.0), (seed, values)


@settings(max_examples=MONOTONICITY_EXAMPLES)
@given(
    seeds=seed_lists,
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    cnn=st.booleans(),
    double=st.booleans(),
)
def test_full_batch_loss_never_increases_beyond_rounding(seeds, activation, cnn, double):
    dtype = jnp.float64 if double else jnp.float32
    with jax.enable_x64(double):
        for seed in seeds:
            if cnn:
                params, batch = _cnn_data(seed, dtype)
                family = ("cnn", activation, None, False)
            else:
                params, batch = _mlp_data(seed, 2, 8, dtype)
                family = ("mlp", activation, "ce", False)
            values = _full_batch_losses(family, params, batch)
            rounding = 8 * np.finfo(np.dtype(dtype)).eps * np.abs(values[:-1])
            assert np.all(np.diff(values) <= rounding), (seed, values)
            assert values[-1] < values[0], (seed, values)


# --------------------------------------------------------------------------- flax nnx


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(5, 16, rngs=rngs)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


def test_nnx_optimizer_end_to_end():
    model = _Net(nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (40, 5))
    labels = jax.random.randint(jax.random.PRNGKey(2), (40,), 0, 3)
    batch = (x, labels)

    def loss_fn(model, batch):
        inputs, targets = batch
        return optax.softmax_cross_entropy_with_integer_labels(model(inputs), targets).mean()

    optimizer = nnx.Optimizer(model, osr.saferate(optax.adam(1.0)), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, batch):
        loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
        value_fn = osr.nnx.make_value_fn(model, loss_fn)
        optimizer.update(model, grads, value_fn=value_fn, batch=batch)
        return loss

    losses = [float(train_step(model, optimizer, batch)) for _ in range(40)]
    assert losses[-1] < 0.7 * losses[0]
    assert np.all(np.diff(losses) <= 1e-6)
    assert float(optax.tree.get(optimizer.opt_state, "learning_rate")) > 0


def test_state_fields_are_readable_with_optax_tree_get():
    tx = osr.saferate(optax.adam(1.0), initial_max_learning_rate=0.5)
    state = tx.init({"w": jnp.ones(2)})
    assert float(optax.tree.get(state, "max_learning_rate")) == 0.5
    assert float(optax.tree.get(state, "learning_rate")) == 0.0


# --------------------------------------------------------------------------- sharding


def test_sharded_params_on_four_devices():
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np, optax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        import optax_saferate as osr
        mesh = Mesh(np.array(jax.devices()), ("model",))
        x = jax.random.normal(jax.random.PRNGKey(0), (32, 8))
        y = jnp.sin(x).sum(axis=1, keepdims=True)
        def loss(p):
            return jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)
        params = {"w1": 0.3 * jax.random.normal(jax.random.PRNGKey(1), (8, 16)),
                  "w2": 0.3 * jax.random.normal(jax.random.PRNGKey(2), (16, 1))}
        tx = osr.saferate(optax.adam(1.0))
        def run(params):
            state = tx.init(params)
            @jax.jit
            def step(params, state):
                g = jax.grad(loss)(params)
                u, state = tx.update(g, state, params, value_fn=loss)
                return optax.apply_updates(params, u), state
            for _ in range(10):
                params, state = step(params, state)
            return params
        plain = run(params)
        sharded = jax.device_put(params, {"w1": NamedSharding(mesh, P(None, "model")),
                                          "w2": NamedSharding(mesh, P("model", None))})
        out = run(sharded)
        assert len(out["w1"].sharding.device_set) == 4
        np.testing.assert_allclose(out["w1"], plain["w1"], rtol=1e-4, atol=1e-5)
        print("ok")
        """
    )
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_docstring_examples_run():
    import doctest

    for name in ("optax_saferate.saferate", "optax_saferate.nnx"):
        result = doctest.testmod(sys.modules[name], optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, name
