"""Build SafeRate's ``value_fn`` for a Flax NNX model.

optax line searches and SafeRate call ``value_fn(params)`` with the *parameters only*, while an
NNX loss is written against the model. :func:`make_value_fn` closes that gap: it splits the
model once and returns a function that merges new parameters back into the same graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flax import nnx
from jax import Array


def make_value_fn(
    model: nnx.Module,
    loss_fn: Callable[..., Array],
    wrt: Any = nnx.Param,
) -> Callable[..., Array]:
    """``value_fn(params, batch=None)`` evaluating ``loss_fn(model_with(params)[, batch])``.

    Build it inside your (jitted) train step, so the non-parameter state it captures (batch
    statistics, RNG counters) is the current one.

    Args:
      model: the NNX model whose parameters the optimizer updates.
      loss_fn: ``loss_fn(model)`` or ``loss_fn(model, batch)`` returning the scalar loss.
      wrt: the filter of the optimized state (the same as ``nnx.Optimizer(..., wrt=...)``).

    Returns:
      ``value_fn(params, batch=None)``; pass ``batch=...`` to ``tx.update`` /
      ``optimizer.update`` and SafeRate forwards it.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from flax import nnx
      >>> import optax_saferate as osr
      >>> model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
      >>> x, y = jnp.ones((8, 3)), jnp.zeros((8, 1))
      >>> def loss_fn(model, batch):
      ...     inputs, targets = batch
      ...     return jnp.mean((model(inputs) - targets) ** 2)
      >>> optimizer = nnx.Optimizer(model, osr.saferate(optax.adam(1.0)), wrt=nnx.Param)
      >>> before = loss_fn(model, (x, y))
      >>> grads = nnx.grad(loss_fn)(model, (x, y))
      >>> value_fn = osr.nnx.make_value_fn(model, loss_fn)
      >>> _ = optimizer.update(model, grads, value_fn=value_fn, batch=(x, y))
      >>> bool(loss_fn(model, (x, y)) < before)
      True
    """
    graphdef, _, rest = nnx.split(model, wrt, ...)

    def value_fn(params, batch=None):
        merged = nnx.merge(graphdef, params, rest)
        return loss_fn(merged) if batch is None else loss_fn(merged, batch)

    return value_fn
