"""Frozen pretrained encoders and vocoders in JAX/Flax, loaded from local weight files."""
