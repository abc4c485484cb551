"""flowav: flow-matching generation of audio from video, text and transcripts, in JAX.

Parameters carry logical axis names and are sharded by rules tables (flowav/parallel), so eager
sharding of variables at construction is switched off: models are built abstractly or inside a jit
whose `out_shardings` come from the rules (DESIGN.md, "Sharding by logical axis names").
"""

from flax import nnx as _nnx

_nnx.use_eager_sharding(False)

__version__ = "0.1.0"
