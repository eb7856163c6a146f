"""A small ReLU CNN with max pooling, trained on mini-batches of 128; otherwise as default.py.

Mini-batches because a full-batch CNN step over the 6,000 embedded images takes seconds on a
CPU (max-pooling's backward pass dominates); with mini-batches SafeRate guarantees that each
step does not increase the loss of the batch it was computed on.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.num_steps = 300  # About 6.5 epochs of 46 batches.
    config.eval_every_steps = 50  # Evaluate about every epoch.
    config.checkpoint_every_steps = 100  # Checkpoint about every 2 epochs.
    config.dataset.batch_size = 128  # Mini-batches, reshuffled every epoch.
    config.model.name = "cnn"  # Two conv + max-pool layers and a dense head.
    config.model.activation = "relu"  # ReLU after every conv and hidden dense layer.
    config.model.conv_features = (8, 16)  # 28x28x1 -> 14x14x8 -> 7x7x16.
    config.model.pooling = "max"  # 2x2 max pooling.
    config.model.dense_sizes = (64,)  # One hidden dense layer.
    return config
