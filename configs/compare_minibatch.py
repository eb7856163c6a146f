"""Comparison 4: the one-hidden-layer MLP on mini-batches of 128, reshuffled every epoch.

    python -m train.compare --config configs/compare_minibatch.py --workdir runs/compare_minibatch

SafeRate's guarantee here covers each step's own batch only: a step does not increase the loss
of the batch it was computed on; nothing bounds the loss on the whole training set. With the
published 10,000 real images (``--config.dataset.name=idx:<directory with the IDX files>
--config.dataset.train_size=10000``) an epoch is 78 batches and 234 steps are three epochs; on
the embedded 6,000 images they are five.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.num_steps = 234  # Three epochs of 10,000 images.
    config.eval_every_steps = 0  # Evaluate the test set only after the last step.
    config.progress_bar = False  # train.compare prints a line per run instead.
    config.dataset.batch_size = 128  # Mini-batches; the incomplete last batch is dropped.
    config.model.hidden_sizes = (128,)  # One hidden layer of 128 ReLU units.
    config.compare.seeds = (0, 1, 2)  # Every run with three initialisations.
    config.compare.num_steps = -1  # Compared runs train for config.num_steps.
    # Batch losses are noisy: final loss and time to target use the mean over an epoch.
    config.compare.final_loss_window = 78
    return config
