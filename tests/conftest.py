"""Shared test configuration: strict dtype promotion, PRNG key and x64 fixtures."""
import os

import tempfile

os.environ.setdefault("MPLBACKEND", "Agg")
# Keep the dataset cache of test runs out of the user's home.
os.environ.setdefault("DNC_JAX_CACHE", tempfile.mkdtemp(prefix="dnc_jax_test_cache_"))
os.environ.setdefault("DNC_JAX_COMPILE_CACHE", tempfile.mkdtemp(prefix="dnc_jax_test_xla_"))

import jax
import pytest

# Mixed-dtype arithmetic must be explicit in library code.
jax.config.update("jax_numpy_dtype_promotion", "strict")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_FIXTURE = os.path.join(REPO, "tests", "data", "fashion_mnist")


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture
def x64():
  """Runs the test with 64-bit floats enabled, restoring the setting after."""
  enable = getattr(jax, "enable_x64", None)
  if enable is None:  # older JAX
    from jax.experimental import enable_x64 as enable
  with enable(True):
    yield
