"""The table from JAX primitives to enclosure rules.

A rule receives the :class:`~optax_saferate.autobound.enclosures.Context`, the equation and its
input values, at least one of which is not a constant (a :class:`TaylorEnclosure`, or a value
inside a recognised pattern), and returns the output value (a list for multi-output primitives).
Equations whose inputs are all constants never reach a rule: the interpreter evaluates them.

The rules are grouped by kind of primitive, one module each; importing this package registers
all of them in :data:`RULES`:

* :mod:`~optax_saferate.autobound.rules.core`: the table, :class:`Environment`,
  :class:`Comparison` and the helpers every rule shares;
* :mod:`~optax_saferate.autobound.rules.functions`: smooth elementwise functions, powers,
  ``abs``, ``sign``;
* :mod:`~optax_saferate.autobound.rules.extrema`: ``max``/``min``/``clamp``, their reductions
  and pooling;
* :mod:`~optax_saferate.autobound.rules.arithmetic`: ``add``, ``sub``, ``neg``, ``mul``, ``div``;
* :mod:`~optax_saferate.autobound.rules.bilinear`: ``dot_general`` and convolutions;
* :mod:`~optax_saferate.autobound.rules.structural`: reshapes, slices, sums, concatenation, pads;
* :mod:`~optax_saferate.autobound.rules.selection`: comparisons and ``select_n``;
* :mod:`~optax_saferate.autobound.rules.patterns`: the log-sum-exp pattern's own steps.
"""

from optax_saferate.autobound.rules import arithmetic  # noqa: F401 (registers its rules)
from optax_saferate.autobound.rules import bilinear  # noqa: F401
from optax_saferate.autobound.rules import core  # noqa: F401
from optax_saferate.autobound.rules import extrema  # noqa: F401
from optax_saferate.autobound.rules import functions  # noqa: F401
from optax_saferate.autobound.rules import patterns  # noqa: F401
from optax_saferate.autobound.rules import selection  # noqa: F401
from optax_saferate.autobound.rules import structural  # noqa: F401
from optax_saferate.autobound.rules.arithmetic import _subtract_values as _subtract_values
from optax_saferate.autobound.rules.core import RULES
from optax_saferate.autobound.rules.core import Comparison
from optax_saferate.autobound.rules.core import Environment
from optax_saferate.autobound.rules.core import Rule
from optax_saferate.autobound.rules.core import _source as _source
from optax_saferate.autobound.rules.core import apply_function
from optax_saferate.autobound.rules.core import apply_relu
from optax_saferate.autobound.rules.core import is_constant
from optax_saferate.autobound.rules.core import register
from optax_saferate.autobound.rules.extrema import materialize
from optax_saferate.autobound.rules.extrema import maximum
from optax_saferate.autobound.rules.extrema import minimum
from optax_saferate.autobound.rules.extrema import reduce_extreme
from optax_saferate.autobound.rules.patterns import pattern_elementwise

__all__ = (
    "RULES",
    "Comparison",
    "Environment",
    "Rule",
    "apply_function",
    "apply_relu",
    "is_constant",
    "materialize",
    "maximum",
    "minimum",
    "pattern_elementwise",
    "reduce_extreme",
    "register",
)
