"""AutoBound: sound, sharp polynomial enclosures of JAX functions over a trust region.

A generalisation of Taylor-mode autodiff (DESIGN §3): ``taylor_bounds(f, k)(x0, (a, b))``
returns the Taylor coefficients of ``f`` at ``x0`` up to degree ``k - 1`` and an interval for the
degree-``k`` coefficient such that the polynomial bounds hold for every ``x`` in ``[a, b]``.
This package imports neither optax nor flax.
"""

from optax_saferate.autobound.elementwise import ElementwiseFunction
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.integrate import IntegralBounds
from optax_saferate.autobound.integrate import integrate
from optax_saferate.autobound.interpreter import taylor_bounds
from optax_saferate.autobound.intervals import Interval
from optax_saferate.autobound.jensen import JensenBounds
from optax_saferate.autobound.jensen import jensen_gap
from optax_saferate.autobound.kink_report import KinkReport
from optax_saferate.autobound.kink_report import kink_report
from optax_saferate.autobound.named_functions import register_elementwise
from optax_saferate.autobound.named_functions import register_primitive
from optax_saferate.autobound.polynomial_bounds import TaylorBounds

__all__ = (
    "ElementwiseFunction",
    "IntegralBounds",
    "Interval",
    "JensenBounds",
    "KinkReport",
    "TaylorBounds",
    "TaylorEnclosure",
    "integrate",
    "jensen_gap",
    "kink_report",
    "register_elementwise",
    "register_primitive",
    "taylor_bounds",
)
