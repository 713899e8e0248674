"""Deep Recursive Feature Machines (Algorithm 1 of the paper).

* :mod:`~dnc_jax.rfm.config`: :class:`DeepRFMConfig` with its :class:`SolverConfig`, presets.
* :mod:`~dnc_jax.rfm.kernels`: Laplace/Gaussian kernels, distances, the class-centred frame.
* :mod:`~dnc_jax.rfm.predictor`: the kernel predictor and its derivative rules.
* :mod:`~dnc_jax.rfm.agop`: the AGOP of any per-example function; ``kernel_agop``.
* :mod:`~dnc_jax.rfm.krr`, :mod:`~dnc_jax.rfm.solvers`: Cholesky KRR; preconditioned CG.
* :mod:`~dnc_jax.rfm.features`: ReLU and cos random features.
* :mod:`~dnc_jax.rfm.memory`, :mod:`~dnc_jax.rfm.precision`: memory budget; matmul precision.
* :mod:`~dnc_jax.rfm.layer`: one layer as a jitted pure function, and the final KRR.
* :mod:`~dnc_jax.rfm.sharded`: the layer over a device mesh.
* :mod:`~dnc_jax.rfm.driver`: the one layer loop, records, Gram pictures, resume.
* :mod:`~dnc_jax.rfm.checkpoint`, :mod:`~dnc_jax.rfm.timing`, :mod:`~dnc_jax.rfm.experiment`:
  a whole run as ``bin/deep_rfm`` does it.
"""
