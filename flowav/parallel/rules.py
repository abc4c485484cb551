"""Logical-axis rules tables: logical parameter/activation names -> mesh axes.

Model code names axes logically (`embed`, `mlp`, `act_batch`, ...); a rules table maps each name to a
mesh axis (or None = replicated). One table per layout; the config picks one by name (`mesh.rules`).

Rules are in priority order, as in flax: a name may appear several times, and each mesh axis is used
at most once per array, so `("embed", "fsdp"), ("mlp", "fsdp")` shards a `('embed', 'mlp')` kernel
on its embed dim and a `('freq', 'mlp')` kernel on its mlp dim. `sharding.spec_for` also skips a
rule whose mesh axes do not divide the dimension, and then tries the next rule (or replicates).
"""

from __future__ import annotations

from collections.abc import Sequence

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Every parameter name in use. Tables must cover all of them (checked by `validate_rules`).
PARAM_AXES = (
  "embed", "mlp", "heads", "kv_heads", "head_dim", "kv", "vocab", "layers", "norm",
  "conv_window", "channels", "freq",
)
ACTIVATION_AXES = ("act_batch", "act_len", "act_embed", "act_heads", "act_kv_len", "act_mlp")
BATCH_AXES = ("data", "fsdp")  # the batch is split over both: FSDP is data parallel for compute


def _replicate_rest(*rules: tuple[str, str | tuple[str, ...] | None]) -> Rules:
  """`rules` followed by `(name, None)` for every logical name they leave out."""
  named = {k for k, _ in rules}
  return tuple(rules) + tuple((n, None) for n in PARAM_AXES + ACTIVATION_AXES if n not in named)


# Everything replicated (single device, or debugging).
REPLICATED: Rules = _replicate_rest()

# Pure data parallel: every parameter replicated, the batch split over all mesh axes that hold devices.
DATA_PARALLEL: Rules = _replicate_rest(("act_batch", BATCH_AXES))

# ZeRO-3 / FSDP: each parameter split on one dim over 'fsdp' (first its model-width dim, else its
# widest hidden dim), gathered by XLA where used; gradients and optimizer state split the same way.
# Stacked 'layers' stay whole, so the layer scan slices locally. Small axes (norm scales, head_dim,
# rope/conv windows, frequency tables, latent channels) stay replicated.
FSDP: Rules = _replicate_rest(
  ("embed", "fsdp"), ("kv", "fsdp"), ("vocab", "fsdp"),
  ("mlp", "fsdp"), ("heads", "fsdp"), ("kv_heads", "fsdp"),
  ("act_batch", BATCH_AXES),
)

# FSDP + Megatron tensor parallel: attention heads and the MLP hidden dim over 'tensor' (column-
# parallel in, row-parallel out: one reduction per block half), model width over 'fsdp'. The hidden
# activations are constrained to match, so XLA keeps the heads/mlp dims local between the two
# matmuls. A kernel without a width dim (e.g. the timestep MLP's ('freq', 'mlp')) still gets fsdp on
# its hidden dim when 'tensor' is taken or does not divide.
FSDP_TENSOR: Rules = _replicate_rest(
  ("mlp", "tensor"), ("heads", "tensor"), ("kv_heads", "tensor"),
  ("embed", "fsdp"), ("kv", "fsdp"), ("vocab", "fsdp"),
  ("mlp", "fsdp"), ("heads", "fsdp"), ("kv_heads", "fsdp"),
  ("act_batch", BATCH_AXES), ("act_heads", "tensor"), ("act_mlp", "tensor"),
)

TABLES: dict[str, Rules] = {
  "replicated": REPLICATED,
  "data_parallel": DATA_PARALLEL,
  "fsdp": FSDP,
  "fsdp_tensor": FSDP_TENSOR,
}


def get_rules(name: str) -> Rules:
  """Returns the rules table called `name` (config key `mesh.rules`)."""
  if name not in TABLES:
    raise ValueError(f"Unknown rules table mesh.rules={name!r}; valid: {sorted(TABLES)}")
  return TABLES[name]


def validate_rules(rules: Rules, names: Sequence[str] = PARAM_AXES) -> None:
  """Raises if a logical name used by models has no entry in `rules`."""
  have = {k for k, _ in rules}
  missing = [n for n in names if n not in have]
  if missing:
    raise ValueError(f"Rules table has no entry for logical axes {missing}")
