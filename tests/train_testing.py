"""Shared helpers for the training-framework tests: small configs and run comparisons."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np

from configs import default
from train import checkpoints
from train import metrics

REPO_ROOT = Path(__file__).resolve().parents[1]


def small_config(**overrides) -> ml_collections.ConfigDict:
    """The default config shrunk to run in about a second: a tiny MLP, Adam, 256 examples.

    ``overrides`` are dotted field names with ``__`` for dots, e.g. ``model__name="cnn"``.
    """
    config = default.get_config()
    config.num_steps = 6
    config.eval_every_steps = 3
    config.checkpoint_every_steps = 3
    config.progress_bar = False
    config.dataset.train_size = 256
    config.dataset.test_size = 100
    config.dataset.eval_batch_size = 64
    config.model.hidden_sizes = (16,)
    config.model.conv_features = (4,)
    config.model.dense_sizes = (8,)
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-2
    for name, value in overrides.items():
        *sections, field = name.split("__")
        section = config
        for part in sections:
            section = section[part]
        section[field] = value
    return config


def rows_without_time(workdir: str | os.PathLike) -> list[dict]:
    """metrics.jsonl rows with the wall time (which differs between runs) removed."""
    return [
        {key: value for key, value in row.items() if key != "wall_time_s"}
        for row in metrics.read_metrics(workdir)
    ]


def final_state(workdir: str | os.PathLike):
    """The newest checkpoint's state (numpy arrays) of a finished run."""
    checkpointer = checkpoints.Checkpointer(workdir)
    try:
        state, _ = checkpointer.read()
    finally:
        checkpointer.close()
    return state


def assert_trees_equal(actual, expected) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, e)


def cli_overrides(config: ml_collections.ConfigDict) -> list[str]:
    """``--config.<field>=<value>`` flags that turn configs/default.py into ``config``."""
    flags = []
    defaults = _flatten(default.get_config().to_dict())
    for key, value in _flatten(config.to_dict()).items():
        if value != defaults[key]:
            flags.append(f"--config.{key}={value}")
    return flags


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def run_python(
    code: str, *, devices: int = 1, timeout: float = 120, returncode: int = 0
) -> subprocess.CompletedProcess:
    """Runs Python code in a fresh interpreter at the repository root.

    ``devices`` > 1 fakes that many CPU devices, which must happen before JAX starts, hence the
    separate process. The ``tests`` directory is importable. Fails unless the process exits with
    ``returncode``.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    )
    env["JAX_PLATFORMS"] = "cpu"
    paths = [str(REPO_ROOT), str(REPO_ROOT / "tests"), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == returncode, (
        f"exit status {result.returncode}:\n{result.stdout}\n{result.stderr[-4000:]}"
    )
    return result
