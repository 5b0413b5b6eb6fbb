"""Inference: codes and popcount (`codes`), the query-time record maker (`records`), the hasher
of a trained workdir or a classical baseline (`hasher`, `baselines`) and the faiss Hamming
index (`hamming_index`)."""
