"""Mini-batches of 128 examples, reshuffled every epoch; otherwise as configs/default.py."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.dataset.batch_size = 128  # 46 batches per epoch over the 6,000 examples.
    config.num_steps = 1000  # About 22 epochs.
    config.eval_every_steps = 100  # Evaluate every ~2 epochs.
    config.checkpoint_every_steps = 200  # Checkpoint every ~4 epochs.
    return config
