"""Host (CPU) memory: make glibc's malloc reuse freed memory instead of handing it back each step.

Why: XLA:CPU allocates each execution's temporary buffer with `malloc` and frees it at the end. A
block larger than glibc's mmap threshold (at most 32 MiB by default) is mmapped fresh and unmapped
on free, so every train step page-faults its whole temporary buffer in again. Measured on the
MMAudio-S-shaped DiT block of benchmarks/train_speed.py (2-core AMD EPYC, float32): 12.6k minor
page faults and 23 ms of system time per step, the step 95 ms; with `reuse_freed_host_memory()`
~0 faults and 79 ms (bf16: 64 -> 53 ms). Small models (every temporary buffer under the dynamic
threshold) gain nothing and lose: the single arena makes XLA's threads contend for malloc's lock
(the VSSFlow `demo` train step went from 408 to 543 ms, PyTorch's bf16 block from 55.6 to 61.0 ms).
So it is opt-in: for CPU runs of large models (`--reuse_host_memory`); GPU/TPU device memory is
unaffected either way.

Three settings (measured without each: one arena alone, arena + no trim, and the two thresholds
without the single arena all left most faults in place): one malloc arena
(XLA's worker threads otherwise allocate from per-thread arenas, whose heaps are capped at 64 MiB
and fall back to mmap), no mmap for large blocks, and no trimming of the heap top. The cost: the
process keeps its peak host memory until it exits instead of returning freed pages to the OS.
Only glibc (Linux) has `mallopt`; elsewhere this does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc's <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Large enough that no real allocation crosses it (mallopt takes an int).
_NEVER = 2**31 - 1

_applied: dict[str, int] | None = None


def _libc():
  name = ctypes.util.find_library("c")
  if name is None:
    return None
  try:
    libc = ctypes.CDLL(name)
  except OSError:
    return None
  return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def reuse_freed_host_memory() -> dict[str, int] | None:
  """Sets glibc malloc to keep freed memory for reuse; returns the settings, None where unsupported.

  Call it once, early (before JAX allocates much): it changes the whole process. Idempotent.
  Raises RuntimeError if glibc rejects a setting (a changed glibc would otherwise go unnoticed).
  """
  global _applied
  if _applied is not None:
    return _applied
  libc = _libc()
  if libc is None:
    return None
  settings = {"M_ARENA_MAX": (_M_ARENA_MAX, 1), "M_MMAP_THRESHOLD": (_M_MMAP_THRESHOLD, _NEVER),
              "M_TRIM_THRESHOLD": (_M_TRIM_THRESHOLD, _NEVER)}
  for name, (param, value) in settings.items():
    if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
      raise RuntimeError(f"reuse_freed_host_memory: glibc mallopt({name}, {value}) failed")
  _applied = {name: value for name, (_, value) in settings.items()}
  return _applied


def describe() -> str:
  """One line for benchmark records: what this process's malloc does with freed memory."""
  if _applied is None:
    return "glibc defaults" if _libc() is not None else "not glibc (no mallopt)"
  return "glibc mallopt " + ", ".join(f"{k}={v}" for k, v in _applied.items())
