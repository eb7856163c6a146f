"""Command line: ``python -m train --config configs/default.py --workdir runs/default``.

Config fields can be overridden, e.g. ``--config.optimizer.name=adam
--config.optimizer.learning_rate=1e-3``. Re-running with the same workdir resumes the run.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from train import checkpoints
from train import train

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics, plots and checkpoints.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (a get_config() module).", lock_config=True
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        # Orbax logs every checkpoint step at INFO; keep the progress bar readable.
        logging.set_verbosity(logging.WARNING)
    try:
        final = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ValueError, checkpoints.CheckpointError) as error:
        # Bad configs, missing data and unusable checkpoints: the message says what to do, and
        # a stack trace would bury it. DatasetError is a ValueError.
        sys.exit(f"error: {error}")
    print(
        "final: "
        + ", ".join(
            f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in final.items()
        )
    )


if __name__ == "__main__":
    app.run(main)
