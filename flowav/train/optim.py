"""Optimizer and learning-rate schedule from `config.optim` (optax)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax


def make_schedule(optim: Mapping[str, Any], num_steps: int) -> optax.Schedule:
  """Linear warmup to `lr`, then constant or cosine decay to 0 at `num_steps`."""
  lr, warmup = float(optim["lr"]), int(optim["warmup_steps"])
  kind = optim["schedule"]
  if kind == "constant":
    after = optax.constant_schedule(lr)
  elif kind == "cosine":
    after = optax.cosine_decay_schedule(lr, max(1, num_steps - warmup))
  else:
    raise ValueError(f"Unknown config.optim.schedule={kind!r}; valid: constant, cosine")
  if warmup <= 0:
    return after
  # Spec §3 (VSSFlow): linear warmup reaching the full rate at step `warmup`.
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_optimizer(optim: Mapping[str, Any], num_steps: int) -> optax.GradientTransformation:
  """AdamW (torch defaults unless configured) with optional global-norm clipping."""
  schedule = make_schedule(optim, num_steps)
  parts = []
  if float(optim["clip_norm"]) > 0:
    parts.append(optax.clip_by_global_norm(float(optim["clip_norm"])))
  parts.append(optax.adamw(schedule, b1=float(optim["b1"]), b2=float(optim["b2"]),
                           eps=float(optim["eps"]), weight_decay=float(optim["weight_decay"])))
  return optax.chain(*parts)
