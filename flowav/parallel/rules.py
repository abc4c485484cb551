"""Logical-axis rules tables: logical parameter/activation names -> mesh axes.

Model code names axes logically (`embed`, `mlp`, `act_batch`, ...); a rules table maps each name to a
mesh axis (or None = replicated). One table per layout; the config picks one by name.
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

# Pure data parallel: every parameter replicated, the batch split over all mesh axes that hold devices.
DATA_PARALLEL: Rules = tuple((name, None) for name in PARAM_AXES) + (
  ("act_batch", ("data", "fsdp")),
) + tuple((name, None) for name in ACTIVATION_AXES if name != "act_batch")

# Everything replicated (single device, or debugging).
REPLICATED: Rules = tuple((name, None) for name in PARAM_AXES + ACTIVATION_AXES)

TABLES: dict[str, Rules] = {
  "replicated": REPLICATED,
  "data_parallel": DATA_PARALLEL,
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
