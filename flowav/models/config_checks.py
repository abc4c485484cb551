"""Checks shared by the models' frozen config dataclasses, raised from their `__post_init__`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any


def check_sizes(config: Any, *, may_be_zero: Iterable[str] = (), not_sizes: Iterable[str] = ()
                ) -> None:
  """Raises ValueError naming the first int or float field of `config` that is not positive.

  Fields in `may_be_zero` (block counts that can be 0) must only be >= 0; fields in `not_sizes`
  (seeds, offsets) are not checked. Booleans are not sizes and are never checked.
  """
  may_be_zero, not_sizes = set(may_be_zero), set(not_sizes)
  name = type(config).__name__
  for f in dataclasses.fields(config):
    if f.name in not_sizes or f.type not in ("int", "float", int, float):
      continue
    value = getattr(config, f.name)
    if f.name in may_be_zero:
      if value < 0:
        raise ValueError(f"{name}: {f.name}={value} must be >= 0")
    elif value <= 0:
      raise ValueError(f"{name}: {f.name}={value} must be positive")
