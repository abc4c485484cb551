"""What the benchmarks record about the machine, and one timing helper (shared by the scripts)."""

from __future__ import annotations

import pathlib
import platform
import time

import jax
from absl import flags

from flowav import host_memory

REUSE_HOST_MEMORY = flags.DEFINE_bool(
  "reuse_host_memory", False, "Run under flowav.host_memory's glibc malloc settings (keep freed "
  "host memory, dispatch on the calling thread), as `python -m flowav.main --reuse_host_memory` "
  "does; implies --notcmalloc. They apply to every library in the process.")
TCMALLOC = flags.DEFINE_bool(
  "tcmalloc", True, "Run under tcmalloc as `python -m flowav.main` does by default (the script "
  "re-executes itself with it preloaded, when installed); --notcmalloc: glibc.")


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (else the platform's guess)."""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def set_host_malloc() -> str:
  """Applies --reuse_host_memory / --tcmalloc before JAX creates its backend (tcmalloc re-executes
  the script). Returns the result file's suffix: "" (tcmalloc, the default), "_glibc" or
  "_reuse_host_memory"."""
  if REUSE_HOST_MEMORY.value:
    host_memory.reuse_freed_host_memory()
    return "_reuse_host_memory"
  if TCMALLOC.value:
    host_memory.run_under_tcmalloc()
  return "" if host_memory.tcmalloc_loaded() else "_glibc"


def timed(fn, *args, repeats: int) -> list[float]:
  """Wall seconds of `repeats` calls of `fn(*args)`, each waited for (jax.block_until_ready)."""
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    out.append(time.perf_counter() - t0)
  return out
