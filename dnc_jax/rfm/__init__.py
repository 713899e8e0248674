"""Deep Recursive Feature Machines: kernels, KRR, AGOP, features, layers and the driver."""
