"""Config -> optax transformation: SafeRate, baselines, learning-rate-free peers, line searches.

Every optimizer is returned as an ``optax.GradientTransformationExtraArgs`` so that one training
step serves them all::

    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(
        grads, opt_state, params, value=loss, grad=grads, value_fn=lambda p: loss_fn(p, batch)
    )

SafeRate and the line searches use ``value``/``grad``/``value_fn``; the others ignore them.

Names (``config.optimizer.name``):

* ``saferate``: SafeRate over ``config.optimizer.base`` (any plain name below, built with
  learning rate 1); no learning rate to tune.
* plain baselines with ``config.optimizer.learning_rate``: see :data:`PLAIN_OPTIMIZERS`.
* learning-rate-free peers from ``optax.contrib``: see :data:`LEARNING_RATE_FREE`;
  ``learning_rate``, when set, overrides their default (a multiplier for most of them).
* line searches: ``backtracking`` (``optax.scale_by_backtracking_linesearch`` over
  ``config.optimizer.base`` at learning rate 1) and ``lbfgs`` (``optax.lbfgs`` with its zoom
  line search).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from optax_saferate.saferate import TRUST_REGION_RULES

_Factory = Callable[[float, ml_collections.ConfigDict], optax.GradientTransformation]

PLAIN_OPTIMIZERS: dict[str, _Factory] = {
    "sgd": lambda lr, c: optax.sgd(lr),
    "momentum": lambda lr, c: optax.sgd(lr, momentum=c.momentum),
    "nesterov": lambda lr, c: optax.sgd(lr, momentum=c.momentum, nesterov=True),
    "adam": lambda lr, c: optax.adam(lr),
    "adamw": lambda lr, c: optax.adamw(lr, weight_decay=c.weight_decay),
    "nadam": lambda lr, c: optax.nadam(lr),
    "amsgrad": lambda lr, c: optax.amsgrad(lr),
    "adamax": lambda lr, c: optax.adamax(lr),
    "adabelief": lambda lr, c: optax.adabelief(lr),
    "adagrad": lambda lr, c: optax.adagrad(lr),
    "rmsprop": lambda lr, c: optax.rmsprop(lr),
    "radam": lambda lr, c: optax.radam(lr),
    "yogi": lambda lr, c: optax.yogi(lr),
    "lion": lambda lr, c: optax.lion(lr),
    "lamb": lambda lr, c: optax.lamb(lr),
}
"""Optimizers that take ``config.optimizer.learning_rate`` (momentum ones use ``momentum``)."""

LEARNING_RATE_FREE: dict[str, tuple[_Factory, float]] = {
    "prodigy": (lambda lr, c: optax.contrib.prodigy(lr), 1.0),
    "dadapt_adamw": (lambda lr, c: optax.contrib.dadapt_adamw(lr), 1.0),
    "dog": (lambda lr, c: optax.contrib.dog(lr), 1.0),
    "dowg": (lambda lr, c: optax.contrib.dowg(lr), 1.0),
    "cocob": (lambda lr, c: optax.contrib.cocob(lr), 1.0),
    "schedule_free_adamw": (
        lambda lr, c: optax.contrib.schedule_free_adamw(lr, warmup_steps=c.warmup_steps or None),
        0.0025,
    ),
    "schedule_free_sgd": (
        lambda lr, c: optax.contrib.schedule_free_sgd(lr, warmup_steps=c.warmup_steps or None),
        1.0,
    ),
}
"""``optax.contrib`` methods with their default ``learning_rate`` (used when it is unset)."""

WITH_BASE = ("saferate", "backtracking")
LINE_SEARCHES = ("backtracking", "lbfgs")
OPTIMIZERS = ("saferate", *PLAIN_OPTIMIZERS, *LEARNING_RATE_FREE, "backtracking", "lbfgs")


def validate_optimizer_config(config: ml_collections.ConfigDict) -> None:
    """Checks the ``optimizer`` config section.

    Raises:
      ValueError: naming the offending ``optimizer.*`` field and the allowed values.
    """
    name = config.name
    if name not in OPTIMIZERS:
        raise ValueError(
            f"config.optimizer.name={name!r} is not a known optimizer; allowed: "
            f"{', '.join(OPTIMIZERS)}."
        )
    if name in WITH_BASE and config.base not in PLAIN_OPTIMIZERS:
        raise ValueError(
            f"config.optimizer.base={config.base!r} is not a known base optimizer for {name!r}; "
            f"allowed: {', '.join(PLAIN_OPTIMIZERS)}."
        )
    learning_rate = config.learning_rate
    if name in PLAIN_OPTIMIZERS and learning_rate is None:
        raise ValueError(
            f"config.optimizer.learning_rate is unset but {name!r} needs one "
            f"(e.g. --config.optimizer.learning_rate=1e-3)."
        )
    if learning_rate is not None and not learning_rate > 0:
        raise ValueError(f"config.optimizer.learning_rate={learning_rate!r} must be positive.")
    if name == "saferate" and config.get("trust_region", "refine") not in TRUST_REGION_RULES:
        raise ValueError(
            f"config.optimizer.trust_region={config.trust_region!r} must be one of "
            f"{TRUST_REGION_RULES}."
        )
    if name == "saferate" and not config.initial_max_learning_rate > 0:
        raise ValueError(
            "config.optimizer.initial_max_learning_rate="
            f"{config.initial_max_learning_rate!r} must be positive."
        )
    if name == "backtracking" and not (
        isinstance(config.max_backtracking_steps, int) and config.max_backtracking_steps > 0
    ):
        raise ValueError(
            f"config.optimizer.max_backtracking_steps={config.max_backtracking_steps!r} must be "
            "a positive integer."
        )


def build_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs:
    """Builds the optax transformation the ``optimizer`` config section describes.

    Args:
      config: the ``optimizer`` section (``name``, ``base``, ``learning_rate``, ...).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; call its ``update`` with ``value``,
      ``grad`` and ``value_fn`` (those that do not need them ignore them).

    Raises:
      ValueError: the config names an unknown optimizer or holds an invalid value.
    """
    validate_optimizer_config(config)
    name = config.name
    if name == "saferate":
        import optax_saferate

        return optax_saferate.saferate(
            PLAIN_OPTIMIZERS[config.base](1.0, config),
            initial_max_learning_rate=config.initial_max_learning_rate,
            verify_decrease=config.verify_decrease,
            trust_region=config.get("trust_region", "refine"),
        )
    if name == "backtracking":
        return optax.chain(
            PLAIN_OPTIMIZERS[config.base](1.0, config),
            optax.scale_by_backtracking_linesearch(
                max_backtracking_steps=config.max_backtracking_steps
            ),
        )
    if name == "lbfgs":
        return optax.lbfgs(learning_rate=config.learning_rate)
    if name in PLAIN_OPTIMIZERS:
        return optax.with_extra_args_support(PLAIN_OPTIMIZERS[name](config.learning_rate, config))
    factory, default_learning_rate = LEARNING_RATE_FREE[name]
    learning_rate = config.learning_rate or default_learning_rate
    return optax.with_extra_args_support(factory(learning_rate, config))


def init_opt_state(tx: optax.GradientTransformation, params: optax.Params) -> optax.OptState:
    """``tx.init(params)`` with weakly typed leaves made strong.

    Some optax states (e.g. the line searches' ``info``) start weakly typed and come out of the
    first update strongly typed; fixing the types at init keeps a jitted step to one compilation.
    """
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=leaf.dtype), tx.init(params))


def current_learning_rate(
    config: ml_collections.ConfigDict, opt_state: optax.OptState
) -> jax.Array | float | None:
    """The learning rate the last update used, for logging; None where it has no meaning.

    Plain optimizers report their fixed ``learning_rate``; SafeRate and the line searches the
    step size in their state; prodigy and dadapt_adamw ``learning_rate`` times their estimate;
    dog its distance-over-gradients step. Usable inside ``jax.jit``.
    """
    name = config.name
    if name in PLAIN_OPTIMIZERS:
        return config.learning_rate
    if name in LEARNING_RATE_FREE:
        multiplier = config.learning_rate or LEARNING_RATE_FREE[name][1]
        if name in ("prodigy", "dadapt_adamw"):
            return multiplier * _tree_get(opt_state, "estim_lr")
        if name == "dog":
            max_dist = _tree_get(opt_state, "max_dist")
            sum_sq_norm_grads = _tree_get(opt_state, "sum_sq_norm_grads")
            # optax.contrib.dog's default eps.
            return multiplier * max_dist / jnp.sqrt(sum_sq_norm_grads + 1e-8)
        if name.startswith("schedule_free"):
            return multiplier
    return _tree_get(opt_state, "learning_rate")


def evaluation_params(opt_state: optax.OptState, params: optax.Params) -> optax.Params:
    """The parameters to evaluate: schedule-free methods evaluate their averaged iterate."""
    if isinstance(opt_state, optax.contrib.ScheduleFreeState):
        return optax.contrib.schedule_free_eval_params(opt_state, params)
    return params


def _tree_get(tree: optax.OptState, key: str) -> jax.Array | None:
    try:
        return optax.tree.get(tree, key)
    except KeyError:
        # Several states hold the key (e.g. SafeRate over a line search): no single value.
        return None
