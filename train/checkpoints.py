"""Orbax checkpoints of a training run: save, resume, and refuse what cannot be resumed.

A checkpoint holds two items under ``workdir/checkpoints/<step>/``:

* ``state`` (``ocp.args.StandardSave``): parameters, optimizer state, step and RNG key data,
  restored into an abstract target built from a freshly initialised state, so NamedTuple optimizer
  states and shardings come back exactly as they were;
* ``meta`` (``ocp.args.JsonSave``): the data position, the cumulative training wall time, and the
  config the run was started with.

Orbax writes every checkpoint into a temporary directory and renames it when complete, so an
interrupted save never damages the previous checkpoint. A checkpoint that cannot be read, or was
written by a run with a different config, raises :class:`CheckpointError` before anything in the
workdir is touched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
RESUMABLE_FIELDS = frozenset(
    {
        "num_steps",
        "eval_every_steps",
        "log_every_steps",
        "checkpoint_every_steps",
        "max_checkpoints_to_keep",
        "progress_bar",
        "distributed",
        "dataset.data_dir",
        "dataset.eval_batch_size",
    }
)
"""Config fields that may change when a run resumes: they set how long to train and what to
report, not what is trained."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be resumed; the message names it and says what to do."""


class Checkpointer:
    """Saves and restores training state in ``workdir/checkpoints`` with an orbax manager."""

    def __init__(self, workdir: str | os.PathLike, max_to_keep: int = 2):
        self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
        """Starts saving ``state`` (a pytree of arrays) and ``meta`` (JSON) as ``step``."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta))
            ),
        )

    def restore(self, step: int, like: Any, config: Mapping[str, Any]) -> tuple[Any, dict]:
        """Restores checkpoint ``step`` into the structure, dtypes and shardings of ``like``.

        Args:
          step: a step listed by the manager (e.g. :meth:`latest_step`).
          like: a state of the same structure (e.g. the freshly initialised one); only its
            shapes, dtypes and shardings are used.
          config: the current run's config as a dict; must match the checkpoint's except for
            :data:`RESUMABLE_FIELDS`.

        Returns:
          ``(state, meta)``.

        Raises:
          CheckpointError: the checkpoint is unreadable, or belongs to a different run.
        """
        where = self.directory / str(step)
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = dict(meta["meta"])
            saved_config = meta["config"]
        except Exception as error:
            raise self._unreadable(where, error) from error
        differences = config_differences(saved_config, config)
        if differences:
            raise CheckpointError(
                f"The checkpoint {where} was written by a run with a different config "
                f"({'; '.join(differences)}), so this run cannot resume from it. Use a new "
                f"--workdir, or the original config; the checkpoint was left untouched."
            )
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like
        )
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )
        except Exception as error:
            raise self._unreadable(where, error) from error
        return restored["state"], meta

    def read(self, step: int | None = None) -> tuple[Any, dict]:
        """Reads a checkpoint as saved, on any device topology (for analysis and tests).

        Returns:
          ``(state, meta)`` for ``step`` (default: the newest); in ``state`` arrays are numpy
          arrays of the saved dtypes and NamedTuples plain containers.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"No checkpoint in {self.directory}.")
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        # Without x64, float64 arrays would come back as float32.
        with jax.enable_x64(True):
            target = jax.tree.map(
                lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                self._manager.item_metadata(step)["state"],
            )
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
                ),
            )
            return jax.device_get(restored["state"]), dict(restored["meta"])

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def _unreadable(self, where: Path, error: Exception) -> CheckpointError:
        reason = str(error).splitlines()[0] if str(error) else ""
        if len(reason) > 300:
            reason = reason[:300] + "..."
        return CheckpointError(
            f"The checkpoint {where} cannot be restored ({type(error).__name__}: {reason}). It may "
            f"be corrupt or from an incompatible version. It was left untouched: delete that "
            f"step directory to resume from an earlier checkpoint in {self.directory}, or use a "
            f"new --workdir."
        )


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Fields (dotted names) whose values differ, ignoring :data:`RESUMABLE_FIELDS`."""
    saved_flat, current_flat = _flatten(saved), _flatten(current)
    return [
        f"{key}: {saved_flat.get(key)!r} in the checkpoint, {current_flat.get(key)!r} now"
        for key in sorted(saved_flat.keys() | current_flat.keys())
        if key not in RESUMABLE_FIELDS and saved_flat.get(key) != current_flat.get(key)
    ]


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat
