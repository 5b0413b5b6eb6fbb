"""oscar-jax: OSCAR-Net, an object-centric robust image hash, in JAX/Flax.

The README's "Layout" section says which module holds what; `oscar_jax.inference.hasher.
load_hasher(workdir)` is the way in for hashing images with a trained model.
"""

__version__ = "0.1.0"
