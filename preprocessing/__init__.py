"""Offline half of oscar-jax: images -> padded, masked scene-graph records.

Nothing here imports `oscar_jax.models`; the records are the only contract with training.
"""
