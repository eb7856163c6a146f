"""Datasets: the embedded subset, IDX files, mocked tfds, normalisation and batching."""

import gzip

import numpy as np
import pytest
import tensorflow_datasets as tfds
from train_testing import small_config

from train import data


def _dataset_config(**overrides):
    settings = {"train_size": -1, "test_size": -1, **overrides}
    return small_config(**{f"dataset__{key}": value for key, value in settings.items()}).dataset


def test_embedded_subset_is_balanced_fashion_mnist():
    raw = data.load_embedded()
    assert raw.train_images.shape == (6000, 28, 28, 1)
    assert raw.test_images.shape == (1000, 28, 28, 1)
    assert raw.train_images.dtype == np.uint8
    assert raw.num_classes == 10
    np.testing.assert_array_equal(np.bincount(raw.train_labels), [600] * 10)
    np.testing.assert_array_equal(np.bincount(raw.test_labels), [100] * 10)


def test_embedded_subset_ships_with_its_license():
    import importlib.resources

    license_text = importlib.resources.files("train").joinpath("data", "LICENSE").read_text()
    assert "Copyright (c) 2017 Zalando SE" in license_text
    assert "MIT" in license_text


def test_load_normalises_and_subsets():
    dataset = data.load_dataset(_dataset_config(train_size=300, test_size=50), np.float32)
    assert dataset.train_images.shape == (300, 28, 28, 1)
    assert dataset.test_images.shape == (50, 28, 28, 1)
    assert dataset.train_images.dtype == np.float32
    assert dataset.train_labels.dtype == np.int32
    assert dataset.train_images.min() >= 0 and dataset.train_images.max() <= 1
    assert dataset.input_shape == (28, 28, 1)


def test_standardize_gives_zero_mean_unit_variance_on_train():
    config = _dataset_config(train_size=500, normalization="standardize")
    dataset = data.load_dataset(config, np.float64)
    assert dataset.train_images.dtype == np.float64
    assert abs(dataset.train_images.mean()) < 1e-10
    assert dataset.train_images.std() == pytest.approx(1.0)


def test_subset_larger_than_split_is_an_error():
    with pytest.raises(data.DatasetError, match=r"dataset\.train_size=7000 exceeds the 6000"):
        data.load_dataset(_dataset_config(train_size=7000), np.float32)


def _write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    content = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        content = gzip.compress(content)
    path.write_bytes(content)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_directory(tmp_path, compress):
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (12, 5, 4)),
        "train_labels": rng.integers(0, 3, 12),
        "test_images": rng.integers(0, 256, (6, 5, 4)),
        "test_labels": np.array([0, 1, 2, 3, 0, 1]),
    }
    for key, array in arrays.items():
        _write_idx(tmp_path / data.IDX_FILES[key], array, compress)
    dataset = data.load_dataset(_dataset_config(name=f"idx:{tmp_path}"), np.float32)
    assert dataset.input_shape == (5, 4, 1)
    assert dataset.num_classes == 4
    np.testing.assert_allclose(dataset.train_images[..., 0], arrays["train_images"] / 255)
    np.testing.assert_array_equal(dataset.test_labels, arrays["test_labels"])


def test_idx_errors_name_the_file(tmp_path):
    with pytest.raises(data.DatasetError, match="train-images-idx3-ubyte"):
        data.load_idx_directory(tmp_path)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x02abcdefgh")
    with pytest.raises(data.DatasetError, match="magic"):
        data.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(data.DatasetError, match="shape"):
        data.read_idx(short)


@pytest.mark.parametrize(
    ("name", "shape"),
    [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))],
)
def test_tfds_data_source_under_mock(name, shape):
    with tfds.testing.mock_data(num_examples=20):
        dataset = data.load_dataset(_dataset_config(name=name), np.float32)
    assert dataset.input_shape == shape
    assert dataset.num_train == 20 and dataset.num_test == 20
    assert dataset.num_classes == 10
    assert dataset.train_labels.max() < 10


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(data.DatasetError, match=f"tfds build mnist --data_dir={tmp_path}"):
        data.load_tfds("mnist", str(tmp_path))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "svhn"}, "dataset.name"),
        ({"name": "idx:"}, "idx:"),
        ({"batch_size": -2}, "dataset.batch_size"),
        ({"test_size": 0}, "dataset.test_size"),
        ({"normalization": "minmax"}, "dataset.normalization"),
    ],
)
def test_invalid_dataset_config(overrides, field):
    with pytest.raises(ValueError, match=field):
        data.validate_dataset_config(_dataset_config(**overrides))


def test_batcher_visits_each_example_once_per_epoch():
    batcher = data.Batcher(10, 3, seed=[1, 2])
    epoch0 = [batcher.next_indices() for _ in range(3)]
    assert batcher.position == data.DataPosition(epoch=1, batch=0)
    visited = np.concatenate(epoch0)
    assert len(set(visited.tolist())) == 9
    epoch1 = np.concatenate([batcher.next_indices() for _ in range(3)])
    assert not np.array_equal(visited, epoch1), "each epoch is reshuffled"


def test_batcher_resumes_from_its_position():
    reference = data.Batcher(10, 4, seed=[7, 7])
    stream = [reference.next_indices() for _ in range(7)]
    resumed = data.Batcher(10, 4, seed=[7, 7], position=data.DataPosition(epoch=1, batch=1))
    for expected in stream[3:]:
        np.testing.assert_array_equal(resumed.next_indices(), expected)
    other_seed = data.Batcher(10, 4, seed=[7, 8])
    assert not np.array_equal(other_seed.next_indices(), stream[0])


def test_full_batch_keeps_order():
    batcher = data.Batcher(5, 5, seed=[0, 0])
    for epoch in range(3):
        np.testing.assert_array_equal(batcher.next_indices(), np.arange(5))
        assert batcher.position == data.DataPosition(epoch=epoch + 1, batch=0)
    assert batcher.full_batch


def test_batch_larger_than_data_is_an_error():
    with pytest.raises(ValueError, match="batch_size"):
        data.Batcher(5, 6, seed=[0, 0])
