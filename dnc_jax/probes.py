r"""Layer-wise AGOP, Neural Feature Ansatz and NC1-decomposition probes (Section 6).

For head layer ``l`` with input rows :math:`H = \phi(X)` ``[n, d_l]`` and weight
:math:`W_l = U S V^\top` ``[m, d_l]`` (``r = min(m, d_l)`` singular values):

* **AGOP** of the tail :math:`g_l` (layer ``l`` up to the output) w.r.t. its input:
  :math:`G_l = \frac1n\sum_i J_{g_l}(h_i)^\top J_{g_l}(h_i)` ``[d_l, d_l]``,
  computed with :func:`dnc_jax.agop.agop_sum` in blocks of rows.
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
import numpy as np

from dnc_jax.agop import agop_sum, default_batch_size
from dnc_jax import metrics as metrics_lib
from dnc_jax import nets
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


def default_probe_batch_size(n: int, d: int, k: int, width: int, *, itemsize: int = 4) -> int:
  """Rows per AGOP block: Jacobians ``[b, K, d]`` plus tail intermediates in 512 MiB."""
  return default_batch_size(n, k * d + 4 * k * max(width, d), itemsize=itemsize)


@functools.partial(jax.jit, static_argnames=("layer", "batch_size"))
def tail_agop(hp: dict, h: jax.Array, *, layer: int, batch_size: int) -> jax.Array:
  r"""AGOP of the head tail from ``layer`` (0-based; ``L`` = readout) w.r.t. its input.

  Args:
    hp: head parameters (:func:`dnc_jax.nets.head_params`).
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


@functools.partial(jax.jit, static_argnames=("layer", "num_classes", "batch_size", "global_mean"))
def probe_layer(hp: dict, h: jax.Array, labels: jax.Array, *, layer: int, num_classes: int,
                batch_size: int, global_mean: str = "sample") -> dict:
  """All probes of one head layer (see the module docstring); traceable values.

  Args:
    hp: head parameters.
    h: ``[n, d_l]`` layer inputs :math:`\\phi(X)`.
    labels: ``[n]`` integer labels.
    layer: 0-based hidden layer index ``< L``.
    num_classes: ``K``.
    batch_size: AGOP rows per block.
    global_mean: ``"sample"`` or ``"class_means"``.

  Returns:
    dict with ``nfa`` (dict), ``nc1`` (dict), ``tr_w_over_t``, ``tr_b_over_t``,
    ``nc2`` (scalars), and ``output`` ``[n, m]`` (the layer output).
  """
  w = nets.head_weights(hp)[layer]                           # [m, d]
  g = tail_agop(hp, h, layer=layer, batch_size=batch_size)   # [d, d]
  g = 0.5 * (g + g.T)
  nfm = jnp.matmul(w.T, w, precision=HIGHEST)
  evals, evecs = jnp.linalg.eigh(g)
  s_a = jnp.sqrt(jnp.maximum(evals, 0.0))
  sqrt_g = jnp.matmul(evecs * s_a, evecs.T, precision=HIGHEST)
  _, s, vt = jnp.linalg.svd(w, full_matrices=False)          # vt [r, d]
  right = jnp.matmul(h, vt.T, precision=HIGHEST) * s         # [n, r]
  out = jax.nn.relu(jnp.matmul(h, w.T, precision=HIGHEST))   # [n, m]
  proj = jnp.matmul(h, evecs, precision=HIGHEST) * s_a       # [n, d]
  m_in = _metrics(h, labels, num_classes, global_mean)
  m_right = _metrics(right, labels, num_classes, global_mean)
  m_out = _metrics(out, labels, num_classes, global_mean)
  m_proj = _metrics(proj, labels, num_classes, global_mean)
  return {
      "nfa": {"sqrt_agop": metrics_lib.nfa_correlation(nfm, sqrt_g),
              "agop": metrics_lib.nfa_correlation(nfm, g),
              "cosine_sqrt_agop": metrics_lib.cosine_similarity(nfm, sqrt_g)},
      "nc1": {"input": m_in["nc1"], "right_singular": m_right["nc1"],
              "full_layer": m_out["nc1"], "agop_projection": m_proj["nc1"]},
      "tr_w_over_t": m_out["tr_w_over_t"], "tr_b_over_t": m_out["tr_b_over_t"],
      "nc2": m_out["nc2"],
      "output": out,
  }


def probe_head(hp: dict, h1: jax.Array, labels, *, num_classes: int,
               layers: Sequence[int] | None = None, batch_size: int | None = None,
               global_mean: str = "sample") -> list[dict]:
  """Probes every (or the chosen) hidden layer of the head; host-side floats.

  Args:
    hp: head parameters.
    h1: ``[n, d_1]`` head inputs (the backbone's output on the probe set).
    labels: ``[n]`` integers in ``0..K-1``.
    num_classes: ``K``.
    layers: 1-based layers to probe (default: all ``1..L``).
    batch_size: AGOP rows per block (default: from a 512 MiB budget).
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
  h = h1
  records = []
  for l in range(1, max(layers) + 1):
    w = nets.head_weights(hp)[l - 1]
    if l in layers:
      n, d = h.shape
      bs = batch_size or default_probe_batch_size(n, d, k, w.shape[0],
                                                  itemsize=jnp.dtype(h.dtype).itemsize)
      r = probe_layer(hp, h, labels, layer=l - 1, num_classes=int(num_classes),
                      batch_size=int(bs), global_mean=global_mean)
      h_next = r.pop("output")
      r = jax.tree.map(float, jax.device_get(r))
      records.append({"layer": l, **r})
      h = h_next
    else:
      h = jax.nn.relu(jnp.matmul(h, w.T, precision=HIGHEST))
  return records


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
