"""Comparison 3: a small ReLU CNN with max pooling, trained full-batch on 1,000 images.

    python -m train.compare --config configs/compare_cnn.py --workdir runs/compare_cnn

Small because a full-batch CNN step (and SafeRate's bound pass through max pooling even more)
is slow on a CPU. Real Fashion-MNIST instead of the embedded subset:
``--config.dataset.name=idx:<directory with the IDX files>``.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.num_steps = 100  # Full-batch steps per run.
    config.eval_every_steps = 0  # Evaluate the test set only after the last step.
    config.progress_bar = False  # train.compare prints a line per run instead.
    config.dataset.train_size = 1000  # The full batch: the first 1,000 training images.
    config.model.name = "cnn"  # Conv + max-pool layers and a dense head.
    config.model.activation = "relu"  # ReLU after every conv and hidden dense layer.
    config.model.conv_features = (4, 8)  # 28x28x1 -> 14x14x4 -> 7x7x8.
    config.model.pooling = "max"  # 2x2 max pooling after each convolution.
    config.model.dense_sizes = (32,)  # One hidden dense layer.
    config.compare.seeds = (0, 1, 2)  # Every run with three initialisations.
    config.compare.num_steps = -1  # Compared runs train for config.num_steps.
    return config
