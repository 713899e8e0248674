r"""The cos feature map against the exact ℓ1-Laplace kernel it approximates.

For ``W_ij ~ Cauchy(0, γ)``, ``b ~ U[0, 2π)`` and ``φ(z) = √(2/D) cos(z Wᵀ + b)``,
``E[φ(x)·φ(y)] = E[cos(w·(x − y))] = Π_j exp(−γ|x_j − y_j|) = exp(−γ‖x − y‖₁)``
(the characteristic function of the Cauchy distribution), for every width ``D``.
The test draws independent feature maps, averages ``φ(x)·φ(y)`` over them and
compares the mean with the closed form computed in float64 NumPy, within a few
standard errors of the Monte Carlo mean.

References:
  Rahimi, Recht. Random features for large-scale kernel machines. NeurIPS 2007.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnc_jax import data as data_lib
from dnc_jax.rfm import features

DRAWS = 200      # independent feature maps
WIDTH = 784      # the authors' width (= input dimension)


@pytest.fixture(scope="module")
def rows():
  """Eight real MNIST rows (two per class of 0..3), standardised, unit-normalised."""
  ds = data_lib.load_dataset("mnist5k", n=40, n_test=0)
  pick = np.concatenate([np.flatnonzero(ds.y_train == c)[:2] for c in range(4)])
  x = ds.x_train[pick].astype(np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


# (γ, row scale): unit rows give ℓ1 distances of 9-30, so γ = 0.05 spans kernel values
# 0.2-0.6; for γ = 2 the rows are shrunk (as M^{1/2} shrinks them in Deep RFM) to keep
# the kernel away from 0, where the comparison would say little.
@pytest.mark.parametrize("gamma,scale", [(0.05, 1.0), (2.0, 0.02)])
def test_cos_features_match_l1_laplace_kernel(rows, gamma, scale):
  x = rows * scale
  n = x.shape[0]
  exact = np.exp(-gamma * np.abs(x[:, None, :] - x[None, :, :]).sum(-1))   # float64 closed form
  iu = np.triu_indices(n, 1)
  assert 0.1 < exact[iu].min() and exact[iu].max() < 0.9   # a spread of kernel values

  def one(k):
    p = features.init_features(k, "cos", x.shape[1], WIDTH, sigma=gamma)
    f = features.apply_features(p, jnp.asarray(x, jnp.float32), "cos")
    return (f @ f.T)[iu]

  draws = np.asarray(jax.vmap(one)(jax.random.split(jax.random.key(3), DRAWS)), np.float64)
  mean = draws.mean(0)
  se = draws.std(0, ddof=1) / np.sqrt(DRAWS)
  z = (mean - exact[iu]) / se
  assert np.all(np.abs(z) < 4.0), (gamma, z.round(2).tolist())
  # The standard error is small enough for the comparison to mean something.
  assert se.max() < 0.01


def test_cos_frequencies_are_cauchy_with_scale_gamma():
  """Median |W| of Cauchy(0, γ) is γ; the phases are uniform on [0, 2π)."""
  gamma = 0.05
  p = features.init_features(jax.random.key(0), "cos", 784, 4096, sigma=gamma)
  w = np.abs(np.asarray(p.w, np.float64)).ravel()
  assert abs(np.median(w) / gamma - 1.0) < 0.01
  b = np.asarray(p.b, np.float64)
  assert b.min() >= 0.0 and b.max() < 2 * np.pi
  assert abs(b.mean() - np.pi) < 0.1
