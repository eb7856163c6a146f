"""ml_collections configs for ``python -m train --config configs/<name>.py``."""
