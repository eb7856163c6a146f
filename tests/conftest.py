"""Shared pytest configuration.

The AutoBound tests compare float32 and float64 bounds, so they need ``jax_enable_x64``; and, as
the conventions require, they run with ``jax_numpy_rank_promotion='raise'`` so that an implicit
rank promotion in the engine is an error. Both settings are scoped to the modules that ask for
them (``pytestmark = pytest.mark.usefixtures("autobound_numerics")``), because switching x64 on
for the whole session would change the default dtypes of the training tests.

Hypothesis profiles: ``default`` keeps the default run fast (the AutoBound property tests
compile or trace a new function for every example) and derandomised, so that CI sees the same
examples on every run; ``thorough`` draws ten times as many examples at random, to hunt for new
counterexamples (pin each one it finds with an explicit regression test). Choose one with
``HYPOTHESIS_PROFILE=thorough pytest ...``.
"""

import os

# The suite compiles hundreds of small, distinct programs and runs each for milliseconds, so
# XLA's CPU backend optimisations cost far more than they save (a SafeRate training step: 8.3 s
# to compile at the default level, 4.3 s at 0; the full run about 25% faster). Set before jax
# creates its backend; a caller's own XLA_FLAGS come after it and win.
os.environ["XLA_FLAGS"] = (
    "--xla_backend_optimization_level=0 " + os.environ.get("XLA_FLAGS", "")
).strip()

import jax  # noqa: E402
import pytest
from hypothesis import HealthCheck
from hypothesis import settings

settings.register_profile(
    "default",
    deadline=None,
    derandomize=True,
    max_examples=20,
    print_blob=True,
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large),
)
settings.register_profile(
    "thorough", settings.get_profile("default"), max_examples=200, derandomize=False
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="module")
def autobound_numerics():
    """float64 available (float32 tests pass explicit dtypes) and no implicit rank promotion."""
    with jax.enable_x64(True), jax.numpy_rank_promotion("raise"):
        yield
