"""A small ReLU CNN with max pooling, otherwise as configs/default.py."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.model.name = "cnn"  # Two conv + max-pool layers and a dense head.
    config.model.activation = "relu"  # ReLU after every conv and hidden dense layer.
    config.model.conv_features = (8, 16)  # 28x28x1 -> 14x14x8 -> 7x7x16.
    config.model.pooling = "max"  # 2x2 max pooling.
    config.model.dense_sizes = (64,)  # One hidden dense layer.
    return config
