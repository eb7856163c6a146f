"""autobound.kink_report: the non-smooth rules a bound applied (for linear_bound="auto")."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optax_saferate import autobound as ab

X = jnp.linspace(-1.0, 1.0, 20).reshape(4, 5)
W = jnp.full((5, 3), 0.1)
LABELS = jnp.array([0, 1, 2, 1])

SMOOTH = {
    "softplus + cross-entropy": lambda t: optax.softmax_cross_entropy_with_integer_labels(
        jax.nn.softplus(X @ (W + t)), LABELS
    ).mean(),
    "tanh + logsumexp": lambda t: jax.nn.logsumexp(jnp.tanh(X @ (W + t)), axis=1).sum(),
    "log_softmax": lambda t: jax.nn.log_softmax(X @ (W + t)).sum(),
    "gelu": lambda t: jax.nn.gelu(X @ (W + t)).sum(),
    "where on a constant": lambda t: jnp.where(X > 0, t, 2 * t).sum(),
}
KINKED = {
    "relu": (lambda t: jnp.mean(jax.nn.relu(X @ (W + t)) ** 2), "relu"),
    "abs": (lambda t: jnp.abs(t - 0.3), "relu"),
    "clip": (lambda t: jnp.clip(t, -1.0, 1.0), "relu"),
    "max": (lambda t: jnp.max(X @ (W + t)), "max"),
    "where on the input": (lambda t: jnp.where(t > 0.1, t, 2 * t), "where"),
    "max-pool": (
        lambda t: jax.lax.reduce_window(
            (X + t)[None, :, :, None], -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
        ).sum(),
        "max-pool",
    ),
}
ZERO = np.zeros((), np.float32)


def _report(f):
    with ab.kink_report() as report:
        ab.taylor_bounds(f, 2)(ZERO, (ZERO, np.float32(0.1)))
    return report


@pytest.mark.parametrize("name", sorted(SMOOTH))
def test_smooth_losses_report_no_kink(name):
    report = _report(SMOOTH[name])
    assert not report.found and report.sources == []


@pytest.mark.parametrize("name", sorted(KINKED))
def test_kinked_functions_report_their_rule(name):
    f, source = KINKED[name]
    report = _report(f)
    assert report.found and source in report.sources


def test_reports_nest_and_close_and_work_under_jit_and_vmap():
    f = KINKED["relu"][0]
    bound = ab.taylor_bounds(f, 2)
    with ab.kink_report() as outer:
        with ab.kink_report() as inner:
            jax.jit(jax.vmap(lambda e: bound(ZERO, (ZERO, e)).coefficients[2][1]))(
                jnp.asarray([0.1, 0.2], jnp.float32)
            )
        assert inner.sources == ["relu"]
    assert outer.sources == ["relu"]
    after = _report(SMOOTH["gelu"])  # closed reports collect nothing more
    assert outer.sources == ["relu"] and not after.found
