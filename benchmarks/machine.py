"""What the benchmarks record about the machine, and one timing helper (shared by the scripts)."""

from __future__ import annotations

import pathlib
import platform
import time

import jax


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (else the platform's guess)."""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def timed(fn, *args, repeats: int) -> list[float]:
  """Wall seconds of `repeats` calls of `fn(*args)`, each waited for (jax.block_until_ready)."""
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    out.append(time.perf_counter() - t0)
  return out
