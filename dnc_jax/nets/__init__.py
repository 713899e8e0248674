"""Neural networks: Flax models, the SGD training loop and the AGOP/NFA probes."""
