"""oscar-jax: OSCAR-Net, an object-centric robust image hash, in JAX/Flax."""

__version__ = "0.1.0"
