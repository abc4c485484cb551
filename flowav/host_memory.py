"""Host (CPU) memory: freed memory reused instead of handed back and page-faulted in each step.

Default: `run_under_tcmalloc` re-executes the command with tcmalloc preloaded (Debian
libtcmalloc-minimal4; `flowav.main --notcmalloc` or FLOWAV_TCMALLOC=0 keep glibc). tcmalloc keeps
freed large blocks for reuse on every thread, with no setting to trade off. Measured on the 2-core
AMD EPYC VM, one process per allocator, 2 interleaved rounds (benchmarks/host_malloc.py, medians):
the MMAudio-S-shaped DiT block's train step 58.9 ms (glibc) / 45.9 (glibc tuned below) / 45.1
(tcmalloc) in float32 and 50.3 / 31.2 / 36.0 ms with bfloat16 matmuls; the `tiny` train step and
the AudioGen-Omni mmaudio_s velocity did not differ beyond the rounds' spread (115 / 104 / 112
steps/s, 0.174 / 0.178 / 0.176 s). Without tcmalloc, `reuse_freed_host_memory` tunes glibc
instead (opt-in, `--reuse_host_memory`):

Why: XLA:CPU allocates each execution's temporary buffer with `malloc` and frees it at the end. A
block larger than glibc's mmap threshold (at most 32 MiB by default) is mmapped fresh and unmapped
on free, so every train step page-faults its whole temporary buffer in again. Measured on the
MMAudio-S-shaped DiT block of benchmarks/train_speed.py (2-core AMD EPYC): 12.6k minor page faults
and 23 ms of system time per step; float32 94 -> 79 ms, bfloat16 65 -> 52.5 ms with the settings
below (PyTorch's block in the same process: 81-82 and 54 ms either way).

Two glibc settings, no mmap for large blocks and no trimming of the heap top, keep freed blocks
for the next step. They only reach blocks allocated from glibc's main arena: a thread other than
the main one allocates from a per-thread arena, whose heaps are capped at 64 MiB, so a larger
block falls back to mmap however the thresholds are set. JAX's CPU client runs single-device
computations on a worker thread, so the third setting turns off its async dispatch
(`jax_cpu_enable_async_dispatch`): they then run on the calling thread and allocate from the main
arena. (Multi-device computations still run on worker threads; the settings help them less.)
An earlier version forced one arena for all threads instead (`M_ARENA_MAX=1`); that removed the
faults too but made XLA's threads contend for malloc's lock (VSSFlow `demo` step 408 -> 543 ms,
PyTorch's bf16 block 55.6 -> 61.0 ms), which this version does not (demo step 448 vs 436 ms).

The costs: the process keeps its peak host memory until it exits instead of returning freed pages
to the OS, and the host no longer queues the next computation while one runs, which costs a model
with a millisecond-scale step (the `tiny` model's 10 ms step measured 0-30 % slower). Hence opt-in
(`--reuse_host_memory`), for CPU runs of large models; on GPU/TPU hosts it would only keep memory.
Only glibc (Linux) has `mallopt`; elsewhere this does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pathlib
import sys

import jax

# glibc's <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Large enough that no real allocation crosses it (mallopt takes an int).
_NEVER = 2**31 - 1
_ASYNC_DISPATCH = "jax_cpu_enable_async_dispatch"

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


def _backends_exist() -> bool:
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top  (no public API says this)
  return bool(getattr(xla_bridge, "backends_are_initialized", lambda: False)())


def reuse_freed_host_memory() -> dict[str, int] | None:
  """Sets glibc malloc to keep freed memory for reuse; returns the settings, None where unsupported.

  Call it once, before JAX creates its CPU backend (the first `jax.devices()` or computation): it
  changes the whole process. Idempotent. Raises RuntimeError if the backend already exists (its
  dispatch mode is fixed then) or glibc rejects a setting (a changed glibc would go unnoticed).
  """
  global _applied
  if _applied is not None:
    return _applied
  libc = _libc()
  if libc is None:
    return None
  if _backends_exist():
    raise RuntimeError("reuse_freed_host_memory must run before JAX creates its backends (call it "
                       "before the first jax.devices() or computation)")
  settings = {"M_MMAP_THRESHOLD": (_M_MMAP_THRESHOLD, _NEVER),
              "M_TRIM_THRESHOLD": (_M_TRIM_THRESHOLD, _NEVER)}
  for name, (param, value) in settings.items():
    if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
      raise RuntimeError(f"reuse_freed_host_memory: glibc mallopt({name}, {value}) failed")
  jax.config.update(_ASYNC_DISPATCH, False)
  _applied = {name: value for name, (_, value) in settings.items()} | {_ASYNC_DISPATCH: 0}
  return _applied


# "0": stay on glibc. Set to "exec" by the re-execution, so a tcmalloc that fails to load is
# reported instead of re-executed again.
TCMALLOC_ENV = "FLOWAV_TCMALLOC"


def tcmalloc_library() -> str | None:
  """The installed tcmalloc's soname (the minimal build first), None if there is none."""
  for name in ("tcmalloc_minimal", "tcmalloc"):
    found = ctypes.util.find_library(name)
    if found:
      return found
  return None


def tcmalloc_loaded() -> bool:
  try:
    return "libtcmalloc" in pathlib.Path("/proc/self/maps").read_text()
  except OSError:  # not Linux
    return False


def run_under_tcmalloc() -> str:
  """Re-executes this very command (`sys.orig_argv`, same pid, environment and working directory)
  with tcmalloc in LD_PRELOAD, if it is installed and not loaded yet; otherwise returns the
  allocator in use and why. Call it first thing, before any work: the process is replaced.
  """
  if tcmalloc_loaded():
    return describe()
  mode = os.environ.get(TCMALLOC_ENV)
  if mode == "0":
    return f"glibc ({TCMALLOC_ENV}=0)"
  lib = tcmalloc_library()
  if lib is None:
    return "glibc (no tcmalloc installed: apt-get install libtcmalloc-minimal4 runs CPU steps faster)"
  if mode == "exec":
    return f"glibc ({lib} in LD_PRELOAD did not load)"
  preload = ":".join(p for p in (lib, os.environ.get("LD_PRELOAD")) if p)
  env = dict(os.environ, LD_PRELOAD=preload, **{TCMALLOC_ENV: "exec"})
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
  raise AssertionError("unreachable")  # execve does not return


def describe() -> str:
  """One line for benchmark records: what this process's malloc does with freed memory."""
  if tcmalloc_loaded():
    return "tcmalloc (" + (os.environ.get("LD_PRELOAD") or "linked in") + ")"
  if _applied is None:
    return "glibc defaults" if _libc() is not None else "not glibc (no mallopt)"
  return "glibc mallopt " + ", ".join(f"{k}={v}" for k, v in _applied.items())
