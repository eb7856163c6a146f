"""Optimizer builder: every name runs in one jitted step signature; errors name the field."""

import jax
import jax.numpy as jnp
import optax
import pytest
from train_testing import small_config

from train import optimizers


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


def _optimizer_config(name, **overrides):
    settings = {"optimizer__name": name}
    if name not in optimizers.PLAIN_OPTIMIZERS:
        settings["optimizer__learning_rate"] = None
    settings.update({f"optimizer__{key}": value for key, value in overrides.items()})
    return small_config(**settings).optimizer


def _logistic_problem():
    inputs = jax.random.normal(jax.random.key(0), (64, 5))
    labels = (inputs @ jnp.arange(1.0, 6.0) > 0).astype(jnp.int32)

    def loss_fn(params):
        logits = inputs @ params["w"] + params["b"][None, :]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    params = {"w": jnp.zeros((5, 2)), "b": jnp.zeros(2)}
    return loss_fn, params


def _train(config, num_steps=30):
    loss_fn, params = _logistic_problem()
    tx = optimizers.build_optimizer(config)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(
            grads, opt_state, params, value=loss, grad=grads, value_fn=loss_fn
        )
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizers.init_opt_state(tx, params)
    losses = []
    for _ in range(num_steps):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert step._cache_size() == 1, "the step must compile once"
    return losses, params, opt_state


NON_SAFERATE = [name for name in optimizers.OPTIMIZERS if name != "saferate"]


@pytest.mark.parametrize("name", NON_SAFERATE)
def test_every_optimizer_trains_with_the_shared_step(name):
    config = _optimizer_config(name)
    losses, _, opt_state = _train(config)
    assert losses[-1] < losses[0], name
    learning_rate = optimizers.current_learning_rate(config, opt_state)
    if name in optimizers.PLAIN_OPTIMIZERS:
        assert learning_rate == config.learning_rate
    elif name in ("cocob", "dowg"):
        assert learning_rate is None
    else:
        assert float(learning_rate) > 0, name


@pytest.mark.parametrize("base", ["adam", "sgd", "momentum", "adagrad", "rmsprop"])
def test_saferate_over_any_base(base):
    config = _optimizer_config("saferate", base=base)
    losses, _, opt_state = _train(config)
    assert losses[-1] < losses[0]
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:], strict=False)), losses
    assert float(optimizers.current_learning_rate(config, opt_state)) >= 0


def test_backtracking_learning_rate_is_logged_from_its_state():
    config = _optimizer_config("backtracking", base="sgd")
    losses, _, opt_state = _train(config, num_steps=5)
    assert losses == sorted(losses, reverse=True)
    assert float(optimizers.current_learning_rate(config, opt_state)) == pytest.approx(
        float(optax.tree.get(opt_state, "learning_rate"))
    )


def test_schedule_free_is_evaluated_at_its_average():
    config = _optimizer_config("schedule_free_adamw", learning_rate=0.05)
    _, params, opt_state = _train(config, num_steps=5)
    evaluated = optimizers.evaluation_params(opt_state, params)
    assert not jnp.allclose(evaluated["w"], params["w"])
    adam_config = _optimizer_config("adam")
    _, adam_params, adam_state = _train(adam_config, num_steps=2)
    assert optimizers.evaluation_params(adam_state, adam_params) is adam_params


def test_learning_rate_free_default_and_override():
    assert (
        optimizers.current_learning_rate(_optimizer_config("schedule_free_adamw"), None) == 0.0025
    )
    config = _optimizer_config("schedule_free_adamw", learning_rate=0.1)
    assert optimizers.current_learning_rate(config, None) == 0.1


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("adamx", {}, r"optimizer\.name='adamx' is not a known optimizer; allowed: saferate, sgd"),
        ("saferate", {"base": "prodigy"}, r"optimizer\.base='prodigy'.*allowed: sgd"),
        ("adam", {"learning_rate": None}, r"optimizer\.learning_rate is unset"),
        ("sgd", {"learning_rate": -0.1}, r"optimizer\.learning_rate=-0\.1 must be positive"),
        ("saferate", {"initial_max_learning_rate": 0.0}, r"initial_max_learning_rate"),
        ("backtracking", {"max_backtracking_steps": 0}, r"max_backtracking_steps"),
    ],
)
def test_invalid_optimizer_config(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        optimizers.build_optimizer(_optimizer_config(name, **overrides))
