"""Conjugate-gradient kernel solvers against Cholesky and closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnc_jax.rfm import memory, solvers
from dnc_jax.errors import ConfigError, SolveError


def _mixture(n, d=32, k=10, seed=0):
  rng = np.random.default_rng(seed)
  lab = np.sort(rng.integers(0, k, n)).astype(np.int32)
  x = rng.normal(size=(k, d))[lab] + rng.normal(size=(n, d))
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  return x, 2.0 * np.eye(k)[lab] - 1.0, lab


def test_preconditioned_cg_reaches_cholesky_in_fewer_iterations(x64):
  # N = 5,000 is measured in bench/scaling.py; 2,000 keeps the suite fast.
  x, y, lab = _mixture(2000)
  chol = solvers.solve(x, y, labels=lab, ridge=1e-3, solver="cholesky")
  pcg = solvers.solve(x, y, labels=lab, ridge=1e-3, solver="cg", tol=1e-9, rank=300)
  cg = solvers.solve(x, y, labels=lab, ridge=1e-3, solver="cg", tol=1e-9,
                     preconditioner="none")
  for res in (pcg, cg):
    err = float(jnp.linalg.norm(res.alpha - chol.alpha) / jnp.linalg.norm(chol.alpha))
    assert err <= 1e-5, (res.iterations, err)
    assert res.residual <= 1e-8
    log = res.residuals
    assert log.shape == (res.iterations + 1,) and log[0] == 1.0 and log[-1] <= 1e-9
  assert pcg.iterations < cg.iterations / 2, (pcg.iterations, cg.iterations)


def test_auto_picks_cg_with_recomputed_blocks_when_memory_is_short(x64):
  x, y, lab = _mixture(300, d=8, k=3, seed=1)
  budget = 400_000                      # < 3 N² · 8 bytes: no room for Cholesky
  assert solvers.choose_solver(300, itemsize=8, memory_bytes=budget) == "cg"
  opts = solvers.cg_options(300, 300, 8, 8, memory_bytes=budget)
  assert not opts.cache and opts.block_rows < 300   # kernel rows recomputed in blocks
  got = solvers.solve(x, y, labels=lab, solver="auto", memory_bytes=budget, tol=1e-11, rank=30)
  want = solvers.solve(x, y, labels=lab, solver="cholesky")
  assert got.solver == "cg" and want.solver == "cholesky"
  np.testing.assert_allclose(got.alpha, want.alpha, rtol=0, atol=1e-8 * np.abs(want.alpha).max())


def test_cg_error_names_the_residual_the_cap_and_the_fix(x64):
  x, y, lab = _mixture(300, d=8, k=3, seed=1)
  with pytest.raises(SolveError) as err:
    solvers.solve(x, y, labels=lab, solver="cg", preconditioner="none", tol=1e-12, max_iter=3)
  msg = str(err.value)
  assert "did not converge" in msg and "cap of 3 iterations" in msg
  assert "relative residual reached" in msg and "ridge" in msg and "--cg-max-iter" in msg


def test_conjugate_gradient_on_an_explicit_matrix(x64):
  rng = np.random.default_rng(2)
  q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
  a = (q * np.logspace(0, 3, 40)) @ q.T
  b = rng.normal(size=(40, 3))
  want = np.linalg.solve(a, b)
  am = jnp.asarray(a)
  res = jax.jit(lambda bb: solvers.conjugate_gradient(lambda v: am @ v, bb, tol=1e-12,
                                                      max_iter=200))(jnp.asarray(b))
  np.testing.assert_allclose(res.x, want, rtol=1e-9, atol=1e-12)
  assert bool(res.converged) and int(res.iterations) < 200
  # With the exact inverse as preconditioner one step suffices.
  inv = jnp.asarray(np.linalg.inv(a))
  res1 = solvers.conjugate_gradient(lambda v: am @ v, jnp.asarray(b), tol=1e-10, max_iter=5,
                                    precond=lambda r: inv @ r)
  assert int(res1.iterations) == 1


def test_nystrom_preconditioner_is_exact_on_a_low_rank_kernel(x64):
  rng = np.random.default_rng(3)
  f = rng.normal(size=(50, 5))
  kmat = f @ f.T                        # rank 5: five landmarks span it
  ridge = 0.1
  idx = solvers.landmark_indices(50, 10)
  pre = solvers.nystrom_preconditioner(jnp.asarray(kmat[:, idx]), jnp.asarray(kmat[np.ix_(idx, idx)]),
                                       ridge)
  pinv = np.asarray(solvers.apply_nystrom(pre, jnp.eye(50)))
  # With the exact rank, P^{-1}(K + μI) = (λ̂_5 + μ) on range(K) and μ off it.
  ev = np.linalg.eigvals(pinv @ (kmat + ridge * np.eye(50))).real
  lam = np.sort(np.asarray(pre.eigenvalues))[::-1]
  np.testing.assert_allclose(np.sort(ev)[-5:], lam[4] + ridge, rtol=1e-6)
  np.testing.assert_allclose(np.sort(ev)[:45], ridge, rtol=1e-6)


def test_choose_solver_and_options():
  n = 1000
  need = solvers.cholesky_bytes(n, 4)
  assert solvers.choose_solver(n, itemsize=4, memory_bytes=need) == "cholesky"
  assert solvers.choose_solver(n, itemsize=4, memory_bytes=need - 1) == "cg"
  assert memory.budget_bytes(None) > 0
  assert solvers.cg_options(10, 10, 3, 4).tol == 1e-4
  assert solvers.cg_options(10, 10, 3, 8).tol == 1e-8
  with pytest.raises(ConfigError, match="unknown solver"):
    solvers.check_solver("qr")
  with pytest.raises(ConfigError, match="preconditioner"):
    solvers.cg_options(10, 10, 3, 4, preconditioner="jacobi")
  with pytest.raises(ConfigError, match="tolerance"):
    solvers.cg_options(10, 10, 3, 4, tol=2.0)
