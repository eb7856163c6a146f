"""optax_saferate: learning-rate-free optax steps from automatically derived upper bounds."""

from optax_saferate import autobound

__all__ = ("autobound",)
__version__ = "0.1.0"
