"""Comparison 2: a four-hidden-layer MLP trained full-batch in float32 on 5,000 images.

    python -m train.compare --config configs/compare_mlp4.py --workdir runs/compare_mlp4

Real Fashion-MNIST instead of the embedded subset:
``--config.dataset.name=idx:<directory with the IDX files>``.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.num_steps = 200  # Full-batch steps per run.
    config.eval_every_steps = 0  # Evaluate the test set only after the last step.
    config.progress_bar = False  # train.compare prints a line per run instead.
    config.dtype = "float32"  # Parameters, data and SafeRate's bounds in single precision.
    config.dataset.train_size = 5000  # The full batch: the first 5,000 training images.
    config.model.hidden_sizes = (128, 128, 128, 128)  # Four hidden layers.
    config.compare.seeds = (0, 1, 2)  # Every run with three initialisations.
    config.compare.num_steps = -1  # Compared runs train for config.num_steps.
    return config
