"""Config-driven training of Flax NNX models with SafeRate or any optax baseline.

Run ``python -m train --config configs/default.py --workdir runs/default``, or call
:func:`train.train.train_and_evaluate` from Python.
"""
