"""oscar-jax: OSCAR-Net, an object-centric robust image hash, in JAX/Flax."""

__version__ = "0.1.0"


def load_hasher(workdir=None, method="oscar"):
    """The hasher of a trained workdir or of a classical baseline: see `oscar_jax.hash`."""
    from oscar_jax.hash import load_hasher as load

    return load(workdir, method)
