r"""Layer-wise AGOP, Neural Feature Ansatz and NC1-decomposition probes (Section 6).

For head layer ``l`` with input rows :math:`H = \phi(X)` ``[n, d_l]`` and weight
:math:`W_l = U S V^\top` ``[m, d_l]`` (``r = min(m, d_l)`` singular values):

* **AGOP** of the tail :math:`g_l` (layer ``l`` up to the output) w.r.t. its input:
  :math:`G_l = \frac1n\sum_i J_{g_l}(h_i)^\top J_{g_l}(h_i)` ``[d_l, d_l]``.
  :func:`probe_all` gets every layer's from one ``vmap(jacrev)`` of the head
  w.r.t. its pre-activations (:func:`preactivation_grams`), as
  :math:`G_l = W_l^\top (\frac1n\sum_i B_{l,i}^\top B_{l,i}) W_l`;
  :func:`tail_agop` is the direct per-layer definition.
* **NFA**: Pearson correlation of the entries (each matrix minus its mean entry)
  of the neural feature matrix :math:`W_l^\top W_l` with :math:`G_l^{1/2}`
  (``sqrt_agop``, the paper's figures) and with :math:`G_l` (``agop``); the cosine
  :math:`\langle W^\top W, G^{1/2}\rangle / (\|W^\top W\|\,\|G^{1/2}\|)` (ρ of
  Ansatz 3.1, ``cosine_sqrt_agop``).
* **NC1 decomposition** (paper convention :math:`\mathrm{tr}\Sigma_W/\mathrm{tr}\Sigma_B`) of

  - ``input``: :math:`H`;
  - ``right_singular``: :math:`H V S^\top` ``[n, r]`` (rows :math:`S V^\top h_i`);
    since :math:`U` has orthonormal columns, traces are unchanged by it, so this
    equals the NC1 of :math:`H W^\top` (the trace identity of Section 6);
  - ``full_layer``: :math:`\mathrm{ReLU}(H W^\top)` (= next layer's input);
  - ``agop_projection``: :math:`H V_a S_a`, with :math:`G^{1/2} = V_a S_a V_a^\top`
    (eigendecomposition, :math:`S_a = \Lambda^{1/2}`); equals the NC1 of
    :math:`H G^{1/2}`, the projection Deep RFM applies.
* ``tr_w_over_t``, ``tr_b_over_t`` and ``nc2`` (Frobenius distance to the simplex
  ETF Gram) of the layer output :math:`\mathrm{ReLU}(H W^\top)`.

How much of a layer's NC1 reduction comes from :math:`S V^\top` versus the ReLU
(with :math:`U`) is measured on a log scale (:func:`nc1_shares`):
:math:`\log(\mathrm{nc1_{in}}/\mathrm{nc1_{right}})` versus
:math:`\log(\mathrm{nc1_{right}}/\mathrm{nc1_{full}})`; the two add up to the
layer's total :math:`\log(\mathrm{nc1_{in}}/\mathrm{nc1_{full}})`.

References:
  Beaglehole et al., NeurIPS 2024, Section 6, Figs. 2 and 7–12.
  Radhakrishnan et al. Mechanism for feature learning in neural networks and
  backpropagation-free machine learning models. Science, 2024 (NFA).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp

from dnc_jax.rfm.agop import agop_sum, default_batch_size
from dnc_jax import metrics as metrics_lib
from dnc_jax.nets import models as nets
from dnc_jax.errors import ConfigError

HIGHEST = jax.lax.Precision.HIGHEST
NC1_PARTS = ("input", "right_singular", "full_layer", "agop_projection")
NFA_KINDS = ("sqrt_agop", "agop", "cosine_sqrt_agop")

CONVENTIONS = {
    **metrics_lib.CONVENTIONS,
    "agop": "G_l = (1/n) sum_i J_i^T J_i, J_i = d(head tail from layer l to output)/d(input of layer l) at h_i",
    "nfa.sqrt_agop": "Pearson correlation of the entries (each minus its mean) of W_l^T W_l and G_l^{1/2}",
    "nfa.agop": "Pearson correlation of the entries of W_l^T W_l and G_l",
    "nfa.cosine_sqrt_agop": "<W_l^T W_l, G_l^{1/2}>_F / (||W_l^T W_l||_F ||G_l^{1/2}||_F)",
    "nc1.input": "nc1 of the layer input phi(X)",
    "nc1.right_singular": "nc1 of phi(X) V S^T (W_l = U S V^T); equals nc1 of phi(X) W_l^T",
    "nc1.full_layer": "nc1 of ReLU(phi(X) W_l^T)",
    "nc1.agop_projection": "nc1 of phi(X) V_a S_a, G_l^{1/2} = V_a S_a V_a^T (= nc1 of phi(X) G_l^{1/2})",
    "layer outputs": "tr_w_over_t, tr_b_over_t, nc2 are of ReLU(phi(X) W_l^T)",
    "nc1 shares": "log(nc1_input/nc1_right_singular) and log(nc1_right_singular/nc1_full_layer), "
                  "as fractions of log(nc1_input/nc1_full_layer)",
}


def default_probe_batch_size(n: int, k: int, widths: Sequence[int], *, itemsize: int = 4) -> int:
  """Points per Jacobian block: the ``[b, K, m_l]`` cotangents of all layers (×3 for
  temporaries) in 512 MiB, and at least 64 rows so that the products stay large.

  At most 256 points on a CPU, where smaller blocks made the probe faster (their
  ``[256 K, m]`` operands stay in cache; docs/performance.md), 2,048 on an accelerator.
  """
  per_row = 3 * k * sum(widths) + 2 * max(widths)
  max_rows = 256 if jax.default_backend() == "cpu" else 2048
  return max(min(n, 64), default_batch_size(n, per_row, itemsize=itemsize, max_rows=max_rows))


@functools.partial(jax.jit, static_argnames=("layer", "batch_size"))
def tail_agop(hp: dict, h: jax.Array, *, layer: int, batch_size: int) -> jax.Array:
  r"""AGOP of the head tail from ``layer`` (0-based; ``L`` = readout) w.r.t. its input.

  Args:
    hp: head parameters (:func:`dnc_jax.nets.models.head_params`).
    h: ``[n, d_l]`` inputs of that layer.
    layer: 0-based layer index.
    batch_size: rows per Jacobian block.

  Returns:
    ``[d_l, d_l]`` :math:`\frac1n\sum_i J_i^\top J_i`.
  """
  fn = lambda hi, _: nets.head_tail(hp, layer, hi)
  return agop_sum(fn, h, batch_size=batch_size) / h.shape[0]


def _metrics(x, labels, num_classes, global_mean):
  return metrics_lib.collapse_from_stats(
      x, labels, metrics_lib.class_stats(x, labels, num_classes, global_mean))


def _head_kernels(hp: dict) -> list[jax.Array]:
  """``[kernel_1, ..., kernel_L]``, each ``[d_l, m_l]`` (``z_l = h_l @ kernel_l``)."""
  return [hp[f"hidden_{l}"]["kernel"] for l in range(nets.head_depth(hp))]


def sym_gram(a: jax.Array) -> jax.Array:
  r""":math:`A^\top A` ``[m, m]`` of ``a`` ``[N, m]`` from three of its four column blocks.

  The lower-left block is the transpose of the upper-right one, so a quarter of
  the products is saved (XLA has no symmetric rank-k update on every backend).
  """
  m = a.shape[1]
  if m < 64:
    return jnp.matmul(a.T, a, precision=HIGHEST)
  h = m // 2
  a1, a2 = a[:, :h], a[:, h:]
  g11 = jnp.matmul(a1.T, a1, precision=HIGHEST)
  g12 = jnp.matmul(a1.T, a2, precision=HIGHEST)
  g22 = jnp.matmul(a2.T, a2, precision=HIGHEST)
  return jnp.block([[g11, g12], [g12.T, g22]])


def preactivations(hp: dict, h1: jax.Array) -> list[jax.Array]:
  """``[z_1, ..., z_L]``: the hidden pre-activations ``[n, m_l]`` of the head on ``h1``."""
  zs, h = [], h1
  for kern in _head_kernels(hp):
    zs.append(jnp.matmul(h, kern, precision=HIGHEST))
    h = jax.nn.relu(zs[-1])
  return zs


def preactivation_grams(hp: dict, h1: jax.Array, *, batch_size: int,
                        zs: Sequence[jax.Array] | None = None) -> list[jax.Array]:
  r"""``Σ_i B_{l,i}ᵀ B_{l,i}`` for every hidden layer, from one reverse pass per block.

  :math:`B_{l,i} = \partial f(h_i) / \partial z_l` ``[K, m_l]`` is the Jacobian of
  the head output w.r.t. the pre-activation :math:`z_l = W_l h_l` of hidden layer
  ``l``. All of them come from one ``vmap(jacrev)`` over blocks of points of the
  head linearised at each point (its ReLU masks fixed) w.r.t. additive
  perturbations of every pre-activation: ``K`` backward passes per point through
  the head once, not once per layer, and no forward pass (the function is linear
  in the perturbations, so the masks are all its VJP needs). The AGOP of the tail
  from layer ``l`` w.r.t. its input is then :math:`W_l^\top (\frac1n\sum_i
  B_{l,i}^\top B_{l,i}) W_l`, since :math:`J_{l,i} = B_{l,i} W_l`. For the last
  hidden layer :math:`B_{L,i} = W_{out} D_{L,i}`, so its sum is
  :math:`(W_{out}^\top W_{out}) \odot (\sum_i d_i d_i^\top)` (``K`` times cheaper).

  Args:
    hp: head parameters.
    h1: ``[n, d_1]`` head inputs.
    batch_size: points per block (static; bounds memory to ``~ 3 b K Σ m_l`` floats).
    zs: the pre-activations :func:`preactivations` of ``h1`` if the caller has
      them (only their signs are read); ``None`` computes them.

  Returns:
    ``L`` arrays ``[m_l, m_l]`` (sums over the ``n`` points, not means).
  """
  kernels = _head_kernels(hp)
  readout = hp["readout"]["kernel"]                    # [m_L, K]
  n = h1.shape[0]
  b = max(1, min(int(batch_size), n))
  nb = -(-n // b)
  pad = nb * b - n
  zs = preactivations(hp, h1) if zs is None else zs
  # Padded points get all-zero masks, so their Jacobian rows vanish from layer 1 on.
  masks = [jnp.pad((z > 0).astype(h1.dtype), ((0, pad), (0, 0))) for z in zs]

  def linear_head(eps, ms):
    # The head linearised at one point: δz_l = eps_l + (d_{l-1} ⊙ δz_{l-1}) W_lᵀ.
    dz = eps[0]
    for e, kern, d in zip(eps[1:], kernels[1:], ms[:-1]):
      dz = e + jnp.matmul(d * dz, kern, precision=HIGHEST)
    return jnp.matmul(ms[-1] * dz, readout, precision=HIGHEST)

  eps0 = [jnp.zeros((k.shape[1],), h1.dtype) for k in kernels]
  jac = jax.vmap(jax.jacrev(linear_head), in_axes=(None, 0))

  def body(acc, ms):
    bs = jac(eps0, ms)                                   # L x [b, K, m_l]
    # Rows of padded points are zero: their masks are zero from layer 1 on.
    return [a + sym_gram(bl.reshape(-1, bl.shape[-1])) for a, bl in zip(acc, bs[:-1])], None

  init = [jnp.zeros((k.shape[1], k.shape[1]), h1.dtype) for k in kernels[:-1]]
  grams, _ = jax.lax.scan(body, init, [m.reshape(nb, b, -1) for m in masks])
  last = masks[-1]
  grams.append(jnp.matmul(readout, readout.T, precision=HIGHEST) * sym_gram(last))
  return grams


def _factor_stats(f: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
  r"""Pearson correlation of the entries and cosine of :math:`X = FF^\top`, :math:`Y = HH^\top`.

  ``f`` ``[d, r]``, ``h`` ``[d, s]``; only ``[r, s]``-sized products, never ``[d, d]``:
  :math:`\langle X, Y\rangle = \|F^\top H\|_F^2`, :math:`\mathbf 1^\top X \mathbf 1 =
  \|F^\top \mathbf 1\|^2`, :math:`\|X\|_F^2 = \|F^\top F\|_F^2`.
  """
  d2 = f.shape[0] ** 2
  mm = lambda a, b: jnp.matmul(a, b, precision=HIGHEST)  # noqa: E731
  xy = jnp.sum(jnp.square(mm(f.T, h)))
  xx = jnp.sum(jnp.square(mm(f.T, f)))
  yy = jnp.sum(jnp.square(mm(h.T, h)))
  sx = jnp.sum(jnp.square(jnp.sum(f, axis=0)))
  sy = jnp.sum(jnp.square(jnp.sum(h, axis=0)))
  pearson = (xy - sx * sy / d2) / jnp.sqrt((xx - sx * sx / d2) * (yy - sy * sy / d2))
  return pearson, xy / jnp.sqrt(xx * yy)


def _low_rank_factors(kern: jax.Array, gram: jax.Array):
  r"""Factors ``[d, m]`` of :math:`G = W^\top G' W` and of :math:`G^{1/2}` (for ``d > m``).

  With :math:`G' = C C^\top` (``eigh``), :math:`G = BB^\top`, :math:`B = W^\top C`; with
  :math:`B^\top B = V S V^\top`, :math:`G^{1/2} = B (B^\top B)^{+1/2} B^\top = PP^\top`,
  :math:`P = B V S^{-1/4}` (columns with :math:`S = 0` dropped). Two ``[m, m]``
  eigendecompositions instead of one ``[d, d]``; the column of ``P`` for
  eigenvalue ``s`` has norm :math:`s^{1/4}`, so round-off stays at ``eps ‖B‖``.

  Returns:
    ``b`` ``[d, m]``, ``p`` ``[d, m]`` and the eigenvalues ``s`` ``[m]`` of ``BᵀB``.
  """
  lam, q = jnp.linalg.eigh(0.5 * (gram + gram.T))
  b = jnp.matmul(kern, q * jnp.sqrt(jnp.maximum(lam, 0.0)), precision=HIGHEST)
  s, v = jnp.linalg.eigh(jnp.matmul(b.T, b, precision=HIGHEST))
  cut = jnp.max(s) * s.shape[0] * jnp.finfo(s.dtype).eps
  inv4 = jnp.where(s > cut, jnp.where(s > cut, s, 1.0) ** -0.25, 0.0)
  p = jnp.matmul(b, v, precision=HIGHEST) * inv4
  return b, p, s


def _layer_nfa(kern: jax.Array, gram: jax.Array) -> dict:
  """NFA correlations of one layer from ``kern`` ``[d, m]`` and ``gram`` (``G'``, ``[m, m]``)."""
  d, m = kern.shape
  if d > m:   # WᵀW, G and G^{1/2} have rank ≤ m: work with [d, m] factors.
    b, p, _ = _low_rank_factors(kern, gram)
    sq_pearson, sq_cos = _factor_stats(kern, p)
    g_pearson, _ = _factor_stats(kern, b)
    return {"sqrt_agop": sq_pearson, "agop": g_pearson, "cosine_sqrt_agop": sq_cos}
  g = jnp.matmul(jnp.matmul(kern, gram, precision=HIGHEST), kern.T, precision=HIGHEST)
  g = 0.5 * (g + g.T)
  nfm = jnp.matmul(kern, kern.T, precision=HIGHEST)              # WᵀW, [d, d]
  evals, evecs = jnp.linalg.eigh(g)
  sqrt_g = jnp.matmul(evecs * jnp.sqrt(jnp.maximum(evals, 0.0)), evecs.T, precision=HIGHEST)
  return {"sqrt_agop": metrics_lib.nfa_correlation(nfm, sqrt_g),
          "agop": metrics_lib.nfa_correlation(nfm, g),
          "cosine_sqrt_agop": metrics_lib.cosine_similarity(nfm, sqrt_g)}


# Compiled once per shape (layer_spectra is called for every saved run it re-probes).
_preactivation_grams = jax.jit(preactivation_grams, static_argnames=("batch_size",))


def _layer_record(kern, gram, h, z, labels, num_classes, global_mean):
  """Probes of one layer from its input ``h [n, d]``, pre-activation ``z [n, m]`` and
  ``gram`` :math:`\\frac1n\\sum_i B_iᵀB_i` ``[m, m]``."""
  out = jax.nn.relu(z)
  m_in = _metrics(h, labels, num_classes, global_mean)
  # NC1 of h V Sᵀ equals NC1 of z = h Wᵀ = h V Sᵀ Uᵀ: U has orthonormal columns,
  # so the traces of both scatter matrices are the same (no SVD needed).
  st_z = metrics_lib.class_stats(z, labels, num_classes, global_mean)
  m_right = metrics_lib.collapse_from_stats(z, labels, st_z)
  m_out = _metrics(out, labels, num_classes, global_mean)
  # NC1 of h G^{1/2}: tr(G^{1/2} S G^{1/2}) = tr(S G) = tr(W S Wᵀ G') for any scatter S
  # of h, i.e. the scatters of z weighted by G' ([m, m] products, no [n, d] projection).
  wz = st_z.within
  cz = st_z.means - st_z.global_mean
  tr_w = jnp.sum(jnp.matmul(wz, gram, precision=HIGHEST) * wz) / z.shape[0]
  tr_b = jnp.sum(jnp.matmul(cz, gram, precision=HIGHEST) * cz) / cz.shape[0]
  return {
      "nfa": _layer_nfa(kern, gram),
      "nc1": {"input": m_in["nc1"], "right_singular": m_right["nc1"],
              "full_layer": m_out["nc1"], "agop_projection": tr_w / tr_b},
      "tr_w_over_t": m_out["tr_w_over_t"], "tr_b_over_t": m_out["tr_b_over_t"],
      "nc2": m_out["nc2"],
  }


@functools.partial(jax.jit, static_argnames=("layers", "num_classes", "batch_size", "global_mean"))
def probe_all(hp: dict, h1: jax.Array, labels: jax.Array, *, layers: tuple[int, ...],
              num_classes: int, batch_size: int, global_mean: str = "sample") -> list[dict]:
  """All probes of the chosen head layers in one compiled function (see the module docstring).

  Args:
    hp: head parameters.
    h1: ``[n, d_1]`` head inputs.
    labels: ``[n]`` integer labels.
    layers: 1-based layers to probe (static).
    num_classes: ``K``.
    batch_size: points per Jacobian block.
    global_mean: ``"sample"`` or ``"class_means"``.

  Returns:
    one dict of scalars per layer in ``layers`` (``nfa``, ``nc1``, ``tr_w_over_t``,
    ``tr_b_over_t``, ``nc2``).
  """
  kernels = _head_kernels(hp)
  zs = preactivations(hp, h1)      # one forward pass serves the masks and the probes
  grams = preactivation_grams(hp, h1, batch_size=batch_size, zs=zs)
  n = h1.shape[0]
  records = []
  h = h1
  for l, (kern, z) in enumerate(zip(kernels, zs), start=1):
    if l in layers:
      records.append(_layer_record(kern, grams[l - 1] / n, h, z, labels, num_classes,
                                   global_mean))
    h = jax.nn.relu(z)
  return records


def probe_flops(n: int, dims: Sequence[int], num_classes: int) -> float:
  r"""FLOPs (2 per multiply-add) of the matrix products of one :func:`probe_all` of all layers.

  ``dims = [d_1, m_1, ..., m_L]``. Forward passes (masks and probe inputs):
  ``2 n Σ d_l m_l``; ``K`` reverse passes: ``n K Σ_{l≥2} m_{l-1} m_l``; Grams of
  layers ``1..L-1`` from three of four blocks: ``¾ n K m_l²``, of layer ``L``:
  ``¾ n m_L²``; per layer ``W_lᵀ G' W_l``, ``W_lᵀ W_l``, the square root
  (``eigh`` counted as ``9 d³``, the product ``2 d³``) and the projected traces
  ``n m_l²``.
  """
  k = int(num_classes)
  d_in, ms = list(dims[:-1]), list(dims[1:])
  fwd = n * sum(a * b for a, b in zip(d_in, ms))
  rev = n * k * sum(a * b for a, b in zip(ms[:-1], ms[1:]))
  gram = 0.75 * n * (k * sum(m * m for m in ms[:-1]) + ms[-1] ** 2)
  def nfa(d, m):
    if d > m:   # two [m, m] eigh, four [d, m] x [m, m] products, three factor Grams
      return 9 * m ** 3 + 7 * d * m * m
    return 2 * d * m * m + 2 * d * d * m + 11 * d ** 3 / 2   # W G' Wᵀ, WᵀW, eigh, G^1/2
  per_layer = sum(nfa(d, m) + n * m * m for d, m in zip(d_in, ms))
  return 2.0 * (fwd + rev + gram + per_layer)


def probe_head(hp: dict, h1: jax.Array, labels, *, num_classes: int,
               layers: Sequence[int] | None = None, batch_size: int | None = None,
               global_mean: str = "sample") -> list[dict]:
  """Probes every (or the chosen) hidden layer of the head; host-side floats.

  One call of the compiled :func:`probe_all` (compiled once per shape and
  layer selection): the tail AGOPs of all layers come from one batched
  ``vmap(jacrev)`` over blocks of points.

  Args:
    hp: head parameters.
    h1: ``[n, d_1]`` head inputs (the backbone's output on the probe set).
    labels: ``[n]`` integers in ``0..K-1``.
    num_classes: ``K``.
    layers: 1-based layers to probe (default: all ``1..L``).
    batch_size: points per Jacobian block (default: from a 512 MiB budget).
    global_mean: ``"sample"`` or ``"class_means"``.

  Returns:
    one dict per probed layer, in the ``history.jsonl`` format:
    ``{"layer": l, "nfa": {...}, "nc1": {...}, "tr_w_over_t", "tr_b_over_t", "nc2"}``.
  """
  depth = nets.head_depth(hp)
  layers = list(range(1, depth + 1)) if layers is None else [int(l) for l in layers]
  bad = [l for l in layers if not 1 <= l <= depth]
  if bad:
    raise ConfigError(f"probe layers {bad} are out of range; the head has layers 1..{depth}")
  metrics_lib.check_labels(h1, labels, num_classes)
  labels = jnp.asarray(labels)
  k = nets.readout_weight(hp).shape[0]
  n = h1.shape[0]
  widths = [kern.shape[1] for kern in _head_kernels(hp)]
  bs = batch_size or default_probe_batch_size(n, k, widths,
                                              itemsize=jnp.dtype(h1.dtype).itemsize)
  recs = probe_all(hp, h1, labels, layers=tuple(sorted(set(layers))),
                   num_classes=int(num_classes), batch_size=int(bs), global_mean=global_mean)
  recs = jax.tree.map(float, jax.device_get(recs))
  by_layer = dict(zip(sorted(set(layers)), recs))
  return [{"layer": l, **by_layer[l]} for l in layers]


@functools.partial(jax.jit, static_argnames=("dim", "draws"))
def nfa_baseline(spec_a: jax.Array, spec_b: jax.Array, *, dim: int, key: jax.Array,
                 draws: int = 20) -> jax.Array:
  r"""NFA correlations of two PSD matrices with their eigenvectors made random.

  Each draw keeps the spectra of the two ``[d, d]`` matrices (their non-zero
  eigenvalues ``spec_a`` ``[r_a]`` and ``spec_b`` ``[r_b]``, ``r ≤ d``) and draws
  independent Haar-random orthonormal eigenvectors ``U_a`` ``[d, r_a]``, ``U_b``:
  :math:`\mathrm{corr}(U_a \Lambda_a U_a^\top, U_b \Lambda_b U_b^\top)` (Pearson of the
  entries, as :func:`dnc_jax.metrics.nfa_correlation`, computed from ``[r_a, r_b]``
  products). Two matrices dominated by their diagonals (as :math:`W^\top W` and
  :math:`G^{1/2}` are at small initialisation) correlate strongly under this
  baseline, which a chance level computed from i.i.d. entries misses.

  Args:
    spec_a, spec_b: non-negative eigenvalues.
    dim: ``d`` (static).
    key: PRNG key.
    draws: number of random draws (static).

  Returns:
    ``[draws]`` correlations.
  """
  dt = spec_a.dtype

  def frame(k, r):
    q, rr = jnp.linalg.qr(jax.random.normal(k, (dim, r), dt))
    return q * jnp.where(jnp.diagonal(rr) < 0, -1.0, 1.0).astype(dt)   # Haar, not QR-biased

  def one(k):
    k1, k2 = jax.random.split(k)
    fa = frame(k1, spec_a.shape[0]) * jnp.sqrt(jnp.maximum(spec_a, 0.0))
    fb = frame(k2, spec_b.shape[0]) * jnp.sqrt(jnp.maximum(spec_b, 0.0))
    return _factor_stats(fa, fb)[0]

  return jax.lax.map(one, jax.random.split(key, draws))


@jax.jit
def _layer_spectra(kern, gram):
  d, m = kern.shape
  if d > m:
    _, _, s = _low_rank_factors(kern, gram)
    return (jnp.linalg.eigvalsh(jnp.matmul(kern.T, kern, precision=HIGHEST)),
            jnp.sqrt(jnp.maximum(s, 0.0)))
  g = jnp.matmul(jnp.matmul(kern, gram, precision=HIGHEST), kern.T, precision=HIGHEST)
  return (jnp.linalg.eigvalsh(jnp.matmul(kern, kern.T, precision=HIGHEST)),
          jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(0.5 * (g + g.T)), 0.0)))


def layer_spectra(hp: dict, h1: jax.Array, *, batch_size: int | None = None) -> list[tuple]:
  """Non-zero spectra of ``WᵀW`` and ``G^{1/2}`` and ``d`` of every hidden layer.

  Returns:
    one ``(d_l, eig(WᵀW) [r], eig(G^{1/2}) [r])`` per layer, ``r = min(d_l, m_l)``
    (the inputs of :func:`nfa_baseline`).
  """
  kernels = _head_kernels(hp)
  k = nets.readout_weight(hp).shape[0]
  bs = batch_size or default_probe_batch_size(h1.shape[0], k, [kk.shape[1] for kk in kernels])
  grams = _preactivation_grams(hp, h1, batch_size=int(bs))
  return [(kern.shape[0], *_layer_spectra(kern, gram / h1.shape[0]))
          for kern, gram in zip(kernels, grams)]


def nc1_shares(record: dict) -> dict:
  """Log-scale split of a layer's NC1 reduction between ``S Vᵀ`` and the ReLU (with ``U``).

  Returns:
    ``{"total": log(in/full), "right_singular": log(in/right), "relu": log(right/full),
    "fraction_right_singular": right_singular/total}`` (fraction NaN when total = 0).
  """
  c = record["nc1"]
  a, b, f = (math.log(c["input"]), math.log(c["right_singular"]), math.log(c["full_layer"]))
  total = a - f
  return {"total": total, "right_singular": a - b, "relu": b - f,
          "fraction_right_singular": (a - b) / total if total != 0 else float("nan")}
