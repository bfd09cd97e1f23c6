"""aigc_jax: generative image models (GANs, VAEs) in JAX/Flax, sharded over every device."""
