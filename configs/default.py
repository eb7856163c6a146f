"""Default: a one-hidden-layer MLP trained full-batch by SafeRate(Adam) on the embedded data.

    python -m train --config configs/default.py --workdir runs/default

Override any field from the command line, e.g. a plain Adam baseline:
``--config.optimizer.name=adam --config.optimizer.learning_rate=1e-3``.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    """The default config; the other files in configs/ start from it."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # Seeds the parameter initialisation and the order of mini-batches.
    config.num_steps = 1000  # Optimizer steps (updates) to train for.
    config.eval_every_steps = 100  # Test-set evaluation period; 0: only after the last step.
    config.log_every_steps = 1  # metrics.jsonl row period (evaluation steps always log).
    config.checkpoint_every_steps = 250  # Checkpoint period; 0: no checkpoints, no resuming.
    config.max_checkpoints_to_keep = 2  # Older checkpoints are deleted.
    config.dtype = "float32"  # Parameter and data dtype: float32 or float64.
    config.progress_bar = True  # Show a progress bar with loss, learning rate and accuracy.
    config.distributed = False  # Call jax.distributed.initialize() first (multi-host runs).

    config.dataset = ml_collections.ConfigDict()
    # embedded (Fashion-MNIST subset in the package), mnist, fashion_mnist, cifar10 (prepared
    # tfds data in data_dir), or idx:<directory> (MNIST-style IDX files).
    config.dataset.name = "embedded"
    config.dataset.data_dir = config_dict.placeholder(str)  # tfds data_dir; None: tfds default.
    config.dataset.batch_size = -1  # Training batch size; -1: the full training set.
    config.dataset.train_size = -1  # Use the first train_size training examples; -1: all.
    config.dataset.test_size = -1  # Use the first test_size test examples; -1: all.
    config.dataset.eval_batch_size = 1000  # Test examples per evaluation chunk; -1: all at once.
    config.dataset.normalization = "unit"  # unit: pixels scaled to [0, 1]; standardize: z-score.

    config.model = ml_collections.ConfigDict()
    config.model.name = "mlp"  # mlp or cnn.
    config.model.activation = "relu"  # relu, tanh, softplus, gelu, silu, sigmoid, elu, leaky_relu.
    config.model.hidden_sizes = (128,)  # MLP hidden layer widths.
    config.model.conv_features = (16, 32)  # CNN: output channels of each conv + pooling layer.
    config.model.kernel_size = 3  # CNN: square convolution kernel size.
    config.model.pooling = "max"  # CNN: max or avg pooling after each convolution.
    config.model.pool_size = 2  # CNN: pooling window and stride.
    config.model.dense_sizes = (64,)  # CNN: hidden widths of the dense head.

    config.optimizer = ml_collections.ConfigDict()
    # saferate, a plain optax name (adam, sgd, momentum, ...), an optax.contrib
    # learning-rate-free method (prodigy, dadapt_adamw, dog, schedule_free_adamw, ...),
    # backtracking or lbfgs; see train/optimizers.py.
    config.optimizer.name = "saferate"
    config.optimizer.base = "adam"  # saferate/backtracking: base direction (at learning rate 1).
    config.optimizer.learning_rate = config_dict.placeholder(float)  # Plain optimizers need one.
    config.optimizer.initial_max_learning_rate = 1.0  # saferate: initial trust region [0, 1].
    config.optimizer.verify_decrease = False  # saferate: re-check the loss, reject increases.
    # saferate: "fit" (one bound a step: the CNN's batched interval convolutions make the
    # library's default "refine", 9 bounds a step, too slow here), "refine", "ladder" (all 17
    # rungs), "nested", "halving".
    config.optimizer.trust_region = "fit"
    config.optimizer.max_backtracking_steps = 30  # backtracking: step shrinks (x0.8) per update.
    config.optimizer.momentum = 0.9  # momentum and nesterov.
    config.optimizer.weight_decay = 1e-4  # adamw.
    config.optimizer.warmup_steps = 0  # schedule_free_*: learning-rate warmup steps.

    # python -m train.compare: SafeRate against tuned baselines and learning-rate-free peers.
    config.compare = ml_collections.ConfigDict()
    config.compare.seeds = (0,)  # Every run is repeated with each of these config.seed values.
    config.compare.bases = ("adam", "sgd", "momentum")  # Baselines tuned over learning_rates.
    config.compare.learning_rates = (  # The tuning grid: half-decades from 1e-4 to 1.
        1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2, 1e-1, 3.16e-1, 1.0
    )  # fmt: skip
    # Learning-rate-free peers at their defaults; backtracking searches along optimizer.base.
    config.compare.peers = ("prodigy", "dadapt_adamw", "dog", "schedule_free_adamw", "backtracking")
    config.compare.saferate_bases = ("adam", "sgd", "momentum")  # SafeRate over each, untuned.
    config.compare.checkpoint_runs = False  # Keep checkpoint_every_steps for each run (resumable).
    config.compare.final_loss_window = 1  # Steps averaged into final loss and time-to-target.
    config.compare.num_steps = 200  # Steps of every compared run; -1: config.num_steps.
    return config
