"""End-to-end tests of train_and_evaluate on shrunk configs (embedded and mocked tfds data)."""

import importlib
import json
import math

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from train_testing import REPO_ROOT
from train_testing import final_state
from train_testing import rows_without_time
from train_testing import run_python
from train_testing import small_config

from train import data
from train import metrics
from train.train import train_and_evaluate
from train.train import validate_config

ROW_KEYS = {"step", "train_loss", "train_accuracy", "learning_rate", "wall_time_s"}
EVAL_KEYS = {"test_loss", "test_accuracy"}


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


def _check_outputs(workdir, final, num_steps):
    rows = metrics.read_metrics(workdir)
    assert [row["step"] for row in rows] == list(range(1, num_steps + 1))
    for row in rows:
        assert ROW_KEYS <= row.keys()
    assert EVAL_KEYS <= rows[-1].keys()
    assert final == rows[-1]
    wall_times = [row["wall_time_s"] for row in rows]
    assert all(b > a for a, b in zip(wall_times, wall_times[1:], strict=False))
    assert (workdir / "loss.png").stat().st_size > 0
    assert json.loads((workdir / "config.json").read_text())["num_steps"] == num_steps
    assert 0 <= final["test_accuracy"] <= 1 and math.isfinite(final["test_loss"])


def test_mlp_on_embedded_data_learns(tmp_path):
    config = small_config(num_steps=8, eval_every_steps=4)
    final = train_and_evaluate(config, tmp_path)
    _check_outputs(tmp_path, final, 8)
    rows = metrics.read_metrics(tmp_path)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.3
    assert final["learning_rate"] == pytest.approx(1e-2)
    assert final["test_accuracy"] > 0.4
    assert [row["step"] for row in rows if "test_loss" in row] == [4, 8]


def test_cnn_minibatch_on_mock_tfds(tmp_path):
    config = small_config(
        model__name="cnn",
        dataset__name="mnist",
        dataset__batch_size=32,
        dataset__train_size=-1,
        dataset__test_size=-1,
        optimizer__name="momentum",
        optimizer__learning_rate=0.05,
        num_steps=4,
        eval_every_steps=2,
    )
    with tfds.testing.mock_data(num_examples=96):
        final = train_and_evaluate(config, tmp_path)
    _check_outputs(tmp_path, final, 4)


def test_float64_training_with_line_search(tmp_path):
    config = small_config(dtype="float64", optimizer__name="backtracking", num_steps=3)
    final = train_and_evaluate(config, tmp_path)
    _check_outputs(tmp_path, final, 3)
    losses = [row["train_loss"] for row in metrics.read_metrics(tmp_path)]
    assert losses == sorted(losses, reverse=True), "a backtracking line search never ascends"
    assert 0 < final["learning_rate"] <= 1
    kernel = final_state(tmp_path)["params"]["layers"]["0"]["kernel"]
    assert kernel.dtype == np.float64


def test_saferate_full_batch_never_increases_the_loss(tmp_path):
    config = small_config(
        optimizer__name="saferate", optimizer__verify_decrease=True, num_steps=6, eval_every_steps=3
    )
    final = train_and_evaluate(config, tmp_path)
    _check_outputs(tmp_path, final, 6)
    rows = metrics.read_metrics(tmp_path)
    losses = [row["train_loss"] for row in rows]
    # Each row's loss is the full-batch loss before that step; float32 rounding may differ between
    # the step's and SafeRate's evaluation of the same loss by an ulp or so.
    assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:], strict=False)), losses
    assert all(row["learning_rate"] >= 0 for row in rows)


def test_preloaded_dataset_is_used(tmp_path):
    config = small_config(num_steps=2, checkpoint_every_steps=0)
    dataset = data.load_dataset(config.dataset, np.float32)
    with_dataset = train_and_evaluate(config, tmp_path / "given", dataset=dataset)
    loaded = train_and_evaluate(config, tmp_path / "loaded")
    assert rows_without_time(tmp_path / "given") == rows_without_time(tmp_path / "loaded")
    assert not (tmp_path / "given" / "checkpoints").exists()
    assert with_dataset["test_loss"] == loaded["test_loss"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"optimizer__name": "adamm"}, "optimizer.name"),
        ({"optimizer__name": "saferate", "optimizer__base": "sgdd"}, "optimizer.base"),
        ({"optimizer__learning_rate": None}, "optimizer.learning_rate"),
        ({"num_steps": -5}, "num_steps"),
        ({"eval_every_steps": -1}, "eval_every_steps"),
        ({"dtype": "float16"}, "dtype"),
        ({"dataset__name": "imagenet"}, "dataset.name"),
        ({"dataset__batch_size": 0}, "dataset.batch_size"),
        ({"model__activation": "swishh"}, "model.activation"),
        ({"model__name": "cnn", "model__conv_features": (4, 4, 4, 4, 4)}, "model.conv_features"),
        ({"dataset__batch_size": 512}, "dataset.batch_size"),
    ],
)
def test_invalid_config_fails_before_training(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        train_and_evaluate(small_config(**overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "config_file", sorted(p.stem for p in (REPO_ROOT / "configs").glob("*.py") if p.stem[0] != "_")
)
def test_every_config_file_is_valid(config_file):
    module = importlib.import_module(f"configs.{config_file}")
    validate_config(module.get_config())


def test_missing_tfds_dataset_says_how_to_prepare(tmp_path):
    config = small_config(dataset__name="cifar10", dataset__data_dir=str(tmp_path / "tfds"))
    with pytest.raises(data.DatasetError, match="tfds build cifar10"):
        train_and_evaluate(config, tmp_path / "run")


_MULTI_DEVICE_RUNS = """
import json
import jax
from train_testing import small_config
from train.train import train_and_evaluate
from train.train import validate_config
assert jax.device_count() == 4, jax.devices()
for batch_size in (-1, 64):
    config = small_config(dataset__batch_size=batch_size, num_steps=4, eval_every_steps=2)
    train_and_evaluate(config, {workdir!r} + str(batch_size))
try:
    train_and_evaluate(small_config(dataset__train_size=250), {workdir!r} + "-odd")
except ValueError as error:
    print(json.dumps(str(error)))
"""


def test_four_devices_match_one_device(tmp_path):
    # Full batch and mini-batches of 64, sharded over 4 fake CPU devices in a subprocess.
    output = run_python(_MULTI_DEVICE_RUNS.format(workdir=str(tmp_path / "sharded")), devices=4)
    assert "split evenly over 4 devices" in json.loads(output.stdout.strip().splitlines()[-1])
    for batch_size in (-1, 64):
        sharded_dir = tmp_path / f"sharded{batch_size}"
        single_dir = tmp_path / f"single{batch_size}"
        config = small_config(dataset__batch_size=batch_size, num_steps=4, eval_every_steps=2)
        train_and_evaluate(config, single_dir)
        sharded_rows, single_rows = rows_without_time(sharded_dir), rows_without_time(single_dir)
        assert [row.keys() for row in sharded_rows] == [row.keys() for row in single_rows]
        for sharded, single in zip(sharded_rows, single_rows, strict=True):
            for key, value in single.items():
                assert sharded[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
            final_state(sharded_dir)["params"],
            final_state(single_dir)["params"],
        )


def test_atomic_write_leaves_a_readable_file(tmp_path):
    import os
    import stat

    from train import metrics

    target = tmp_path / "report.md"
    metrics.atomic_write(target, lambda f: f.write("hello"))
    assert target.read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
