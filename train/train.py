"""``train_and_evaluate(config, workdir)``: the training loop, evaluation and sharding.

The model is split once into a static ``graphdef`` and a plain dict of parameters; one
``jax.jit``-compiled step (compiled ahead of the loop, so exactly once) computes the loss, its
gradient and the optimizer update, passing ``value``, ``grad`` and ``value_fn`` to the optimizer
so that SafeRate and line searches work like any other optax optimizer.

Data parallelism: a ``Mesh`` over all devices with one axis, ``data``; batches are sharded along
it and parameters and optimizer state replicated, so the same code runs on one CPU, several GPUs
or several hosts (``config.distributed`` calls ``jax.distributed.initialize()`` first).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from train import checkpoints
from train import data
from train import metrics
from train import models
from train import optimizers

DTYPES = ("float32", "float64")
CONFIG_FILE = "config.json"


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks a whole config before anything is loaded or trained.

    Raises:
      ValueError: naming the offending field and what it may be.
    """
    if not isinstance(config.seed, int):
        raise ValueError(f"config.seed={config.seed!r} must be an integer.")
    if not isinstance(config.num_steps, int) or config.num_steps < 1:
        raise ValueError(f"config.num_steps={config.num_steps!r} must be a positive integer.")
    for field in ("eval_every_steps", "log_every_steps", "checkpoint_every_steps"):
        value = config[field]
        if not isinstance(value, int) or value < 0:
            raise ValueError(
                f"config.{field}={value!r} must be a non-negative integer "
                "(0: only at the last step; for checkpoint_every_steps: never)."
            )
    if not isinstance(config.max_checkpoints_to_keep, int) or config.max_checkpoints_to_keep < 1:
        raise ValueError(
            f"config.max_checkpoints_to_keep={config.max_checkpoints_to_keep!r} must be a "
            "positive integer."
        )
    if config.dtype not in DTYPES:
        raise ValueError(f"config.dtype={config.dtype!r} is not supported; allowed: {DTYPES}.")
    data.validate_dataset_config(config.dataset)
    models.validate_model_config(config.model)
    optimizers.validate_optimizer_config(config.optimizer)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    dataset: data.Dataset | None = None,
) -> dict[str, Any]:
    """Trains the configured model, evaluating, logging and checkpointing into ``workdir``.

    Re-running with the same config and workdir resumes from the newest checkpoint and ends
    with exactly the metrics and parameters of an uninterrupted run.

    Args:
      config: a config like ``configs/default.py``'s ``get_config()``.
      workdir: output directory: ``metrics.jsonl``, ``config.json``, ``loss.png`` and
        ``checkpoints/``. Created if missing.
      dataset: an already loaded dataset to use instead of loading ``config.dataset`` (e.g.
        to train many optimizers on the same data); cast to ``config.dtype`` if needed.

    Returns:
      The last ``metrics.jsonl`` row: ``step``, ``train_loss``, ``train_accuracy``,
      ``learning_rate``, ``wall_time_s``, ``test_loss``, ``test_accuracy``.

    Raises:
      ValueError: the config is invalid or does not fit the data or the devices.
      data.DatasetError: the dataset cannot be loaded.
      checkpoints.CheckpointError: the workdir holds a checkpoint this run cannot resume.
    """
    validate_config(config)
    if config.distributed and not jax.distributed.is_initialized():
        jax.distributed.initialize()
    x64 = jax.enable_x64(True) if config.dtype == "float64" else contextlib.nullcontext()
    with x64:
        return _train_and_evaluate(config, Path(workdir), dataset)


def make_loss_fn(
    graphdef: nnx.GraphDef,
) -> Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """``loss_fn(params, images, labels) -> (mean softmax cross-entropy, logits)``."""

    def loss_fn(params, images, labels):
        logits = nnx.merge(graphdef, params)(images)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, logits

    return loss_fn


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformationExtraArgs,
    optimizer_config: ml_collections.ConfigDict,
) -> Callable:
    """``train_step(params, opt_state, images, labels) -> (params, opt_state, metrics)``.

    ``metrics`` holds ``train_loss`` and ``train_accuracy`` of the batch at the incoming
    parameters and the ``learning_rate`` the update used (None where it has no meaning).
    """
    loss_and_logits = make_loss_fn(graphdef)

    def train_step(params, opt_state, images, labels):
        (loss, logits), grads = jax.value_and_grad(loss_and_logits, has_aux=True)(
            params, images, labels
        )
        updates, opt_state = tx.update(
            grads,
            opt_state,
            params,
            value=loss,
            grad=grads,
            value_fn=lambda candidate: loss_and_logits(candidate, images, labels)[0],
        )
        params = optax.apply_updates(params, updates)
        step_metrics = {
            "train_loss": loss,
            "train_accuracy": jnp.mean(jnp.argmax(logits, axis=-1) == labels),
            "learning_rate": optimizers.current_learning_rate(optimizer_config, opt_state),
        }
        return params, opt_state, step_metrics

    return train_step


def make_eval_step(graphdef: nnx.GraphDef) -> Callable:
    """``eval_step(params, opt_state, images, labels, weights) -> (loss sum, correct sum)``."""

    def eval_step(params, opt_state, images, labels, weights):
        params = optimizers.evaluation_params(opt_state, params)
        logits = nnx.merge(graphdef, params)(images)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = jnp.argmax(logits, axis=-1) == labels
        return jnp.sum(losses * weights), jnp.sum(correct * weights)

    return eval_step


@dataclasses.dataclass(frozen=True)
class _Shardings:
    mesh: Mesh
    replicated: NamedSharding
    batch: NamedSharding

    @classmethod
    def over_all_devices(cls) -> _Shardings:
        mesh = Mesh(np.asarray(jax.devices()), ("data",))
        return cls(mesh, NamedSharding(mesh, P()), NamedSharding(mesh, P("data")))

    def shard_batch(self, array: np.ndarray) -> jax.Array:
        """A global array from host data every process holds, split along the first axis."""
        return jax.make_array_from_callback(array.shape, self.batch, lambda index: array[index])

    def replicate(self, tree: Any) -> Any:
        return jax.device_put(tree, self.replicated)


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: Path, dataset: data.Dataset | None
) -> dict[str, Any]:
    dtype = jnp.dtype(config.dtype)
    if dataset is None:
        dataset = data.load_dataset(config.dataset, dtype)
    elif dataset.train_images.dtype != dtype or dataset.test_images.dtype != dtype:
        dataset = dataclasses.replace(
            dataset,
            train_images=dataset.train_images.astype(dtype),
            test_images=dataset.test_images.astype(dtype),
        )
    models.validate_model_config(config.model, dataset.input_shape)
    shardings = _Shardings.over_all_devices()
    batch_size = _batch_size(config, dataset, shardings.mesh.size)

    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    model = models.build_model(
        config.model,
        dataset.input_shape,
        dataset.num_classes,
        dtype=dtype,
        rngs=nnx.Rngs(params=init_key),
    )
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params)
    tx = optimizers.build_optimizer(config.optimizer)
    state = shardings.replicate(
        {
            "params": params,
            "opt_state": optimizers.init_opt_state(tx, params),
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(data_key),
        }
    )

    config_dict = json.loads(config.to_json_best_effort())
    checkpointer, state, position, wall_time = _resume(config, config_dict, workdir, state)
    start_step = int(_local(state["step"]))

    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        metrics.atomic_write(
            workdir / CONFIG_FILE, lambda file: json.dump(config_dict, file, indent=2)
        )
    writer = metrics.MetricsWriter(workdir, start_step, enabled=is_main)
    batcher = data.Batcher(
        dataset.num_train, batch_size, seed=_local(state["rng"]), position=position
    )
    evaluate = _make_evaluator(graphdef, dataset, config.dataset.eval_batch_size, shardings)

    step_fn = jax.jit(
        make_train_step(graphdef, tx, config.optimizer),
        in_shardings=(shardings.replicated,) * 2 + (shardings.batch,) * 2,
        out_shardings=shardings.replicated,
    )
    if batcher.full_batch:
        full_images = shardings.shard_batch(dataset.train_images)
        full_labels = shardings.shard_batch(dataset.train_labels)

    def next_batch() -> tuple[jax.Array, jax.Array]:
        indices = batcher.next_indices()
        if batcher.full_batch:
            return full_images, full_labels
        return (
            shardings.shard_batch(dataset.train_images[indices]),
            shardings.shard_batch(dataset.train_labels[indices]),
        )

    params, opt_state = state["params"], state["opt_state"]
    progress = metrics.ProgressBar(config.num_steps, start_step, config.progress_bar and is_main)
    final_row = None
    try:
        if start_step < config.num_steps:
            images, labels = next_batch()
            train_step = step_fn.lower(params, opt_state, images, labels).compile()
        for step in range(start_step + 1, config.num_steps + 1):
            if step > start_step + 1:
                images, labels = next_batch()
            started = time.perf_counter()
            params, opt_state, step_metrics = train_step(params, opt_state, images, labels)
            step_metrics = _local(step_metrics)
            wall_time += time.perf_counter() - started
            row = {
                "step": step,
                "train_loss": step_metrics["train_loss"],
                "train_accuracy": step_metrics["train_accuracy"],
                "learning_rate": step_metrics["learning_rate"],
                "wall_time_s": wall_time,
            }
            last = step == config.num_steps
            if last or _every(step, config.eval_every_steps):
                row.update(evaluate(params, opt_state))
            if last or "test_loss" in row or _every(step, config.log_every_steps):
                writer.write(row)
            progress.update(row)
            if checkpointer and (last or _every(step, config.checkpoint_every_steps)):
                saved = {
                    "params": params,
                    "opt_state": opt_state,
                    "step": shardings.replicate(jnp.asarray(step, jnp.int32)),
                    "rng": state["rng"],
                }
                meta = {
                    "data_position": dataclasses.asdict(batcher.position),
                    "wall_time_s": wall_time,
                    "config": config_dict,
                }
                checkpointer.save(step, saved, meta)
            final_row = writer.rows[-1]
        if final_row is None:
            final_row = _row_of_finished_run(writer.rows, config.num_steps, wall_time)
            final_row.update(evaluate(params, opt_state))
        if is_main:
            metrics.plot_metrics(writer.rows, workdir / metrics.PLOT_FILE, _title(config))
    finally:
        progress.close()
        writer.close()
        if checkpointer:
            checkpointer.close()
    return dict(final_row)


def _resume(
    config: ml_collections.ConfigDict, config_dict: dict, workdir: Path, state: dict
) -> tuple[checkpoints.Checkpointer | None, dict, data.DataPosition, float]:
    """Restores the newest checkpoint in ``workdir`` if there is one.

    Returns:
      ``(checkpointer, state, data position, wall time)``: the checkpointer is None when
      checkpoints are disabled; without a checkpoint, ``state`` is returned unchanged.
    """
    if config.checkpoint_every_steps == 0:
        return None, state, data.DataPosition(), 0.0
    checkpointer = checkpoints.Checkpointer(workdir, config.max_checkpoints_to_keep)
    try:
        latest = checkpointer.latest_step()
        if latest is None:
            return checkpointer, state, data.DataPosition(), 0.0
        if latest > config.num_steps:
            raise checkpoints.CheckpointError(
                f"{checkpointer.directory} holds a checkpoint at step {latest}, past "
                f"config.num_steps={config.num_steps}; raise num_steps or use a new --workdir."
            )
        state, meta = checkpointer.restore(latest, state, config_dict)
    except BaseException:
        checkpointer.close()
        raise
    position = data.DataPosition(**meta["data_position"])
    return checkpointer, state, position, float(meta["wall_time_s"])


def _batch_size(config: ml_collections.ConfigDict, dataset: data.Dataset, num_devices: int) -> int:
    batch_size = config.dataset.batch_size
    if batch_size == -1:
        batch_size = dataset.num_train
        if batch_size % num_devices:
            raise ValueError(
                f"The full batch of {batch_size} training examples cannot be split evenly over "
                f"{num_devices} devices; set config.dataset.train_size to a multiple of "
                f"{num_devices}."
            )
    elif batch_size > dataset.num_train:
        raise ValueError(
            f"config.dataset.batch_size={batch_size} exceeds the {dataset.num_train} training "
            "examples; use a smaller batch or -1 for the full batch."
        )
    elif batch_size % num_devices:
        raise ValueError(
            f"config.dataset.batch_size={batch_size} cannot be split evenly over {num_devices} "
            f"devices; use a multiple of {num_devices}."
        )
    return batch_size


def _make_evaluator(
    graphdef: nnx.GraphDef, dataset: data.Dataset, eval_batch_size: int, shardings: _Shardings
) -> Callable[[Any, Any], dict[str, float]]:
    """Test-set evaluation in fixed-size chunks; padding examples get weight 0."""
    num_test, num_devices = dataset.num_test, shardings.mesh.size
    chunk = num_test if eval_batch_size == -1 else min(eval_batch_size, num_test)
    chunk = math.ceil(chunk / num_devices) * num_devices
    padded = math.ceil(num_test / chunk) * chunk
    padding = padded - num_test
    images = np.concatenate(
        [dataset.test_images, np.zeros((padding, *dataset.input_shape), dataset.test_images.dtype)]
    )
    labels = np.concatenate([dataset.test_labels, np.zeros(padding, np.int32)])
    weights = (np.arange(padded) < num_test).astype(dataset.test_images.dtype)
    chunks = [
        tuple(
            shardings.shard_batch(array[start : start + chunk])
            for array in (images, labels, weights)
        )
        for start in range(0, padded, chunk)
    ]
    eval_step = jax.jit(
        make_eval_step(graphdef),
        in_shardings=(shardings.replicated,) * 2 + (shardings.batch,) * 3,
        out_shardings=shardings.replicated,
    )

    def evaluate(params: Any, opt_state: Any) -> dict[str, float]:
        sums = [eval_step(params, opt_state, *arrays) for arrays in chunks]
        loss_sum, correct_sum = _local(jax.tree.map(lambda *xs: sum(xs), *sums))
        return {
            "test_loss": float(loss_sum) / num_test,
            "test_accuracy": float(correct_sum) / num_test,
        }

    return evaluate


def _row_of_finished_run(
    rows: list[dict[str, Any]], num_steps: int, wall_time: float
) -> dict[str, Any]:
    """The final row of a run that had already reached ``num_steps`` before this call."""
    if rows and rows[-1]["step"] == num_steps:
        return dict(rows[-1])
    return {"step": num_steps, "wall_time_s": wall_time}


def _local(tree: Any) -> Any:
    """Host copies of replicated arrays (readable on every process, unlike ``device_get``)."""
    return jax.tree.map(lambda array: np.asarray(array.addressable_data(0)), tree)


def _every(step: int, period: int) -> bool:
    return period > 0 and step % period == 0


def _title(config: ml_collections.ConfigDict) -> str:
    optimizer = config.optimizer.name
    if optimizer in optimizers.WITH_BASE:
        optimizer = f"{optimizer}({config.optimizer.base})"
    elif config.optimizer.learning_rate is not None:
        optimizer = f"{optimizer}(lr={config.optimizer.learning_rate:g})"
    return f"{config.model.name} on {config.dataset.name}, {optimizer}"
