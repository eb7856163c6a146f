"""Comparison 1, the blog's setting: a one-hidden-layer MLP trained full-batch.

    python -m train.compare --config configs/compare_mlp.py --workdir runs/compare_mlp

By default it trains on the embedded 6,000 Fashion-MNIST images. The published run
(docs/results.md) uses a 10,000-image subset of the real Fashion-MNIST IDX files; point
``dataset.name`` at the directory holding them:

    --config.dataset.name=idx:../shared/data/fashion-mnist --config.dataset.train_size=10000
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.num_steps = 200  # Full-batch steps per run.
    config.eval_every_steps = 0  # Evaluate the test set only after the last step.
    config.progress_bar = False  # train.compare prints a line per run instead.
    config.model.hidden_sizes = (128,)  # One hidden layer of 128 ReLU units.
    config.compare.seeds = (0, 1, 2)  # Every run with three initialisations.
    config.compare.num_steps = -1  # Compared runs train for config.num_steps.
    return config
