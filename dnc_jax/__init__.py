"""dnc_jax: deep neural collapse through the average gradient outer product (AGOP).

The functional API::

    import dnc_jax as dj
    k = dj.laplace_kernel(x, z, bandwidth=2.0)
    m = dj.agop(fn, x)
    dj.nc1(x, labels, num_classes=10)
    result = dj.deep_rfm(x, labels, dj.preset_config("reference"), key=jax.random.key(0))

Importing this package imports neither tensorflow-datasets nor matplotlib.
"""
from dnc_jax.rfm.agop import agop, kernel_agop
# The real function, so help() shows its signature and docstring (dnc_jax.data
# imports tensorflow-datasets only when a tfds dataset is loaded).
from dnc_jax.data import load_dataset
from dnc_jax.rfm.config import DeepRFMConfig, SolverConfig, preset_config
from dnc_jax.rfm.driver import DeepRFMResult, deep_rfm, deep_rfm_cg, sharded_deep_rfm
from dnc_jax.rfm.layer import normalise_rows, rfm_layer
from dnc_jax.errors import ConfigError, DataError, DncError, SolveError
from dnc_jax.rfm.features import apply_features, init_features
from dnc_jax.rfm.kernels import gaussian_kernel, laplace_kernel, sq_distances
from dnc_jax.rfm.krr import krr_fit, krr_predict
from dnc_jax.metrics import (collapse_metrics, cosine_similarity, covariance_traces, gram_picture,
                             nc1, nc2, nfa_correlation, psd_sqrt)


# Heavier parts (Flax networks, training, the mesh layer, CG) load on first use.
_LAZY = {
    "make_model": "dnc_jax.nets.models", "TrainConfig": "dnc_jax.nets.train",
    "paper_defaults": "dnc_jax.nets.train", "DivergenceError": "dnc_jax.nets.train",
    "probe_head": "dnc_jax.nets.probes", "tail_agop": "dnc_jax.nets.probes", "nc1_shares": "dnc_jax.nets.probes",
    "sharded_rfm_layer": "dnc_jax.rfm.sharded", "make_mesh": "dnc_jax.rfm.sharded",
    "solve": "dnc_jax.rfm.solvers", "conjugate_gradient": "dnc_jax.rfm.solvers",
    "nystrom_preconditioner": "dnc_jax.rfm.solvers", "choose_solver": "dnc_jax.rfm.solvers",
}


def __getattr__(name):
  if name in _LAZY:
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'dnc_jax' has no attribute {name!r}")


__version__ = "0.1.0"
