"""Image classification data: the embedded Fashion-MNIST subset, tfds data sources, IDX files.

Every source is loaded into host memory as numpy arrays (images ``(N, H, W, C)`` normalised to
the configured float dtype, integer labels), so that batching is plain, deterministic indexing.

Dataset names (``config.dataset.name``):

* ``embedded``: a class-balanced subset of Fashion-MNIST (6,000 train / 1,000 test images) shipped
  inside this package (``train/data/``, MIT license), so the default run works offline.
* ``mnist``, ``fashion_mnist``, ``cifar10``: tensorflow-datasets, read with ``tfds.data_source``
  from ``config.dataset.data_dir`` where they were prepared beforehand; never downloaded here.
* ``idx:<directory>``: the four MNIST-style IDX files (optionally gzipped) in ``<directory>``.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np

EMBEDDED = "embedded"
TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
IDX_PREFIX = "idx:"
NORMALIZATIONS = ("unit", "standardize")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EMBEDDED_FILE = "fashion_mnist_subset.npz"
# IDX type code 0x08 is unsigned byte, the only element type MNIST-style image files use.
_IDX_UBYTE = 0x08


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message says what to do about it."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test splits held in host memory.

    Attributes:
      name: the configured dataset name.
      train_images: ``(N, H, W, C)`` floating-point images.
      train_labels: ``(N,)`` int32 class indices.
      test_images: ``(M, H, W, C)`` floating-point images.
      test_labels: ``(M,)`` int32 class indices.
      num_classes: number of classes; labels lie in ``[0, num_classes)``.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The ``(H, W, C)`` shape of one image."""
        return tuple(self.train_images.shape[1:])

    @property
    def num_train(self) -> int:
        return int(self.train_images.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_images.shape[0])


@dataclasses.dataclass(frozen=True)
class RawSplits:
    """Undecoded splits as stored: uint8 ``(N, H, W, C)`` images and integer labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int


def validate_dataset_config(config: ml_collections.ConfigDict) -> None:
    """Checks the ``dataset`` section of a config without loading any data.

    Raises:
      ValueError: naming the offending ``dataset.*`` field.
    """
    name = config.name
    if not isinstance(name, str) or not (
        name == EMBEDDED or name in TFDS_DATASETS or name.startswith(IDX_PREFIX)
    ):
        raise ValueError(
            f"config.dataset.name={name!r} is not a known dataset; allowed: {EMBEDDED!r}, "
            f"{', '.join(repr(n) for n in TFDS_DATASETS)} (prepared tfds datasets) or "
            f"'{IDX_PREFIX}<directory>' (MNIST-style IDX files)."
        )
    if name.startswith(IDX_PREFIX) and not name[len(IDX_PREFIX) :]:
        raise ValueError("config.dataset.name='idx:' needs a directory, e.g. 'idx:/data/mnist'.")
    for field in ("batch_size", "train_size", "test_size", "eval_batch_size"):
        value = config[field]
        if not isinstance(value, int) or (value != -1 and value < 1):
            raise ValueError(
                f"config.dataset.{field}={value!r} must be a positive integer or -1 (all)."
            )
    if config.normalization not in NORMALIZATIONS:
        raise ValueError(
            f"config.dataset.normalization={config.normalization!r} is not known; "
            f"allowed: {', '.join(NORMALIZATIONS)}."
        )


def load_dataset(config: ml_collections.ConfigDict, dtype: np.dtype | str) -> Dataset:
    """Loads, subsets and normalises the dataset described by the ``dataset`` config section.

    Args:
      config: the ``dataset`` section (``name``, ``data_dir``, ``train_size``, ``test_size``,
        ``normalization``).
      dtype: floating-point dtype of the returned images.

    Returns:
      A :class:`Dataset`; ``train_size``/``test_size`` (when not -1) keep the first examples of
      each split.

    Raises:
      DatasetError: the data is missing, unprepared or malformed.
    """
    validate_dataset_config(config)
    raw = load_raw(config.name, config.data_dir)
    train_images, train_labels = _take(
        raw.train_images, raw.train_labels, config.train_size, "train_size"
    )
    test_images, test_labels = _take(
        raw.test_images, raw.test_labels, config.test_size, "test_size"
    )
    train_float = train_images.astype(dtype) / 255
    test_float = test_images.astype(dtype) / 255
    if config.normalization == "standardize":
        mean = train_float.mean(axis=(0, 1, 2), keepdims=True)
        std = train_float.std(axis=(0, 1, 2), keepdims=True)
        std = np.where(std > 0, std, 1).astype(dtype)
        train_float = (train_float - mean) / std
        test_float = (test_float - mean) / std
    return Dataset(
        name=config.name,
        train_images=train_float.astype(dtype),
        train_labels=train_labels.astype(np.int32),
        test_images=test_float.astype(dtype),
        test_labels=test_labels.astype(np.int32),
        num_classes=raw.num_classes,
    )


def load_raw(name: str, data_dir: str | None = None) -> RawSplits:
    """Loads both splits of a named dataset as stored (uint8 images)."""
    if name == EMBEDDED:
        return load_embedded()
    if name.startswith(IDX_PREFIX):
        return load_idx_directory(name[len(IDX_PREFIX) :])
    return load_tfds(name, data_dir)


def load_embedded() -> RawSplits:
    """The Fashion-MNIST subset shipped in ``train/data/`` (numpy only, no network)."""
    resource = importlib.resources.files("train").joinpath("data", EMBEDDED_FILE)
    try:
        with resource.open("rb") as file, np.load(file) as arrays:
            splits = {key: arrays[key] for key in IDX_FILES}
    except FileNotFoundError as error:
        raise DatasetError(
            f"The embedded dataset file train/data/{EMBEDDED_FILE} is missing from this "
            "installation; reinstall the package (it ships as package data)."
        ) from error
    return _raw_splits(splits)


def load_tfds(name: str, data_dir: str | None) -> RawSplits:
    """Reads a prepared tfds dataset through ``tfds.data_source`` (random access, no download).

    Raises:
      DatasetError: the dataset is unknown or not prepared in ``data_dir`` in a random-access
        file format; the message gives the command that prepares it.
    """
    import tensorflow_datasets as tfds

    where = data_dir if data_dir else "~/tensorflow_datasets"
    splits = {}
    for split, prefix in (("train", "train"), ("test", "test")):
        try:
            source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as error:
            # tfds raises NotImplementedError, AssertionError or FileNotFoundError depending on
            # what is missing; all of them mean the same thing to a user of this function.
            if tfds.builder(name, data_dir=data_dir).is_prepared():
                problem = f"is prepared in {where} but cannot be read by random access ({error})"
            else:
                problem = f"is not prepared in {where}"
            raise DatasetError(
                f"tfds dataset {name!r} {problem}. Prepare it once on a machine with network "
                f"access with\n  tfds build {name} --data_dir={where} --file_format=array_record"
                "\nthen copy that directory here and set --config.dataset.data_dir to it (or use "
                "--config.dataset.name=embedded, which needs no preparation)."
            ) from error
        examples = [source[index] for index in range(len(source))]
        images = np.stack([np.asarray(example["image"]) for example in examples])
        labels = np.asarray([example["label"] for example in examples])
        splits[f"{prefix}_images"] = images
        splits[f"{prefix}_labels"] = labels
    num_classes = tfds.builder(name, data_dir=data_dir).info.features["label"].num_classes
    return _raw_splits(splits, num_classes)


def load_idx_directory(directory: str | Path) -> RawSplits:
    """Reads ``train-images-idx3-ubyte`` etc. (each optionally ``.gz``) from a directory."""
    directory = Path(directory).expanduser()
    splits = {}
    for key, stem in IDX_FILES.items():
        candidates = [directory / stem, directory / f"{stem}.gz"]
        path = next((path for path in candidates if path.is_file()), None)
        if path is None:
            raise DatasetError(
                f"IDX file {stem}(.gz) not found in {directory}; an 'idx:<directory>' dataset "
                f"needs all of {', '.join(IDX_FILES.values())} (optionally gzipped)."
            )
        splits[key] = read_idx(path)
    if splits["train_images"].ndim == 3:
        splits["train_images"] = splits["train_images"][..., None]
        splits["test_images"] = splits["test_images"][..., None]
    return _raw_splits(splits)


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file of unsigned bytes (``.gz`` is decompressed).

    Raises:
      DatasetError: the file is not a well-formed unsigned-byte IDX file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            content = file.read()
    except (OSError, EOFError) as error:
        raise DatasetError(f"Cannot read IDX file {path}: {error}") from error
    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] != _IDX_UBYTE:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (bad magic number).")
    num_dims = content[3]
    header_size = 4 + 4 * num_dims
    if num_dims == 0 or len(content) < header_size:
        raise DatasetError(f"{path} has a truncated IDX header.")
    shape = tuple(int(n) for n in np.frombuffer(content, dtype=">u4", count=num_dims, offset=4))
    data = np.frombuffer(content, dtype=np.uint8, offset=header_size)
    if data.size != int(np.prod(shape)):
        raise DatasetError(
            f"{path} holds {data.size} bytes of data but its header promises shape {shape}."
        )
    return data.reshape(shape)


def _raw_splits(splits: dict[str, np.ndarray], num_classes: int | None = None) -> RawSplits:
    for prefix in ("train", "test"):
        images, labels = splits[f"{prefix}_images"], splits[f"{prefix}_labels"]
        if images.ndim != 4 or images.shape[0] != labels.shape[0] or labels.ndim != 1:
            raise DatasetError(
                f"{prefix} split has images of shape {images.shape} and labels of shape "
                f"{labels.shape}; expected (N, H, W, C) images and (N,) labels."
            )
    if num_classes is None:
        num_classes = int(max(splits["train_labels"].max(), splits["test_labels"].max())) + 1
    return RawSplits(num_classes=num_classes, **splits)


def _take(
    images: np.ndarray, labels: np.ndarray, size: int, field: str
) -> tuple[np.ndarray, np.ndarray]:
    if size == -1:
        return images, labels
    if size > images.shape[0]:
        raise DatasetError(
            f"config.dataset.{field}={size} exceeds the {images.shape[0]} examples of the split; "
            "lower it or use -1 for all."
        )
    return images[:size], labels[:size]


@dataclasses.dataclass(frozen=True)
class DataPosition:
    """Where the batch stream stands: ``batch`` batches of epoch ``epoch`` were consumed."""

    epoch: int = 0
    batch: int = 0


class Batcher:
    """Deterministic stream of training batch indices, resumable from a :class:`DataPosition`.

    Each epoch visits a permutation of the examples drawn from ``seed`` and the epoch number (so
    any epoch's order can be recomputed after a restart) in ``num_examples // batch_size``
    batches; the incomplete last batch is dropped so that every batch has the same shape. A full
    batch (``batch_size == num_examples``) keeps the stored order.
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        seed: Sequence[int],
        position: DataPosition = DataPosition(),
    ):
        if not 1 <= batch_size <= num_examples:
            raise ValueError(
                f"config.dataset.batch_size={batch_size} must be between 1 and the number of "
                f"training examples ({num_examples}), or -1 for the full batch."
            )
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.batches_per_epoch = num_examples // batch_size
        self._seed = [int(word) for word in seed]
        self._order_epoch = -1
        self._order = np.arange(num_examples)
        self.position = position

    @property
    def full_batch(self) -> bool:
        return self.batch_size == self.num_examples

    def next_indices(self) -> np.ndarray:
        """Indices of the next batch; advances :attr:`position`."""
        epoch, batch = self.position.epoch, self.position.batch
        if not self.full_batch and self._order_epoch != epoch:
            self._order = np.random.default_rng([*self._seed, epoch]).permutation(self.num_examples)
            self._order_epoch = epoch
        indices = self._order[batch * self.batch_size : (batch + 1) * self.batch_size]
        batch += 1
        if batch == self.batches_per_epoch:
            epoch, batch = epoch + 1, 0
        self.position = DataPosition(epoch, batch)
        return indices
