"""Cuts the embedded Fashion-MNIST subset that ships in ``train/data/``.

Run once from the repository root with the package importable (``pip install -e .``, or
``PYTHONPATH=.``); the result is committed and nothing reads the source at run time:

    PYTHONPATH=. python scripts/make_fashion_mnist_subset.py /path/to/fashion-mnist

The source directory holds the four original IDX files (``train-images-idx3-ubyte.gz`` etc.,
MIT license, Copyright 2017 Zalando SE). The subset is class-balanced: ``--train-per-class``
training and ``--test-per-class`` test images of each of the 10 classes, drawn without
replacement with ``--seed`` and stored in a seeded random order, so every prefix is close to
balanced too.
"""

import argparse
from pathlib import Path

import numpy as np

from train import data


def balanced_subset(
    images: np.ndarray, labels: np.ndarray, per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` examples of every class, in a random order."""
    chosen = [
        rng.choice(np.flatnonzero(labels == label), size=per_class, replace=False)
        for label in np.unique(labels)
    ]
    order = rng.permutation(np.concatenate(chosen))
    return images[order], labels[order].astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="directory with the Fashion-MNIST IDX files")
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    default_output = Path(__file__).parents[1] / "train" / "data" / data.EMBEDDED_FILE
    parser.add_argument("--output", type=Path, default=default_output)
    args = parser.parse_args()
    raw = data.load_idx_directory(args.source)
    rng = np.random.default_rng(args.seed)
    train_images, train_labels = balanced_subset(
        raw.train_images, raw.train_labels, args.train_per_class, rng
    )
    test_images, test_labels = balanced_subset(
        raw.test_images, raw.test_labels, args.test_per_class, rng
    )
    np.savez_compressed(
        args.output,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )
    print(
        f"wrote {args.output}: {len(train_labels)} train and {len(test_labels)} test images, "
        f"{args.output.stat().st_size / 2**20:.2f} MiB"
    )


if __name__ == "__main__":
    main()
