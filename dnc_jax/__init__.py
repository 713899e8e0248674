"""dnc_jax: deep neural collapse through the average gradient outer product."""
