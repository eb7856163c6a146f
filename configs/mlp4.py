"""A deeper MLP: four hidden layers of 128 units, otherwise as configs/default.py."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.model.hidden_sizes = (128, 128, 128, 128)  # Four hidden layers.
    return config
