"""optax_saferate: learning-rate-free optax steps from automatically derived upper bounds.

``saferate(optax.adam(1.0))`` picks each step's size by minimising an AutoBound quadratic upper
bound of the loss along the base optimizer's direction.
"""

from optax_saferate import autobound
from optax_saferate import mm
from optax_saferate import nnx
from optax_saferate.mm import MMResult
from optax_saferate.mm import MMState
from optax_saferate.mm import scale_by_mm
from optax_saferate.saferate import SafeRateState
from optax_saferate.saferate import minimize_quadratic_bound
from optax_saferate.saferate import saferate
from optax_saferate.saferate import scale_by_saferate

__all__ = (
    "MMResult",
    "MMState",
    "SafeRateState",
    "autobound",
    "minimize_quadratic_bound",
    "mm",
    "nnx",
    "saferate",
    "scale_by_mm",
    "scale_by_saferate",
)
__version__ = "0.1.0"
