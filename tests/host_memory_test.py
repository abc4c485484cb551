"""flowav.host_memory: freed host memory is reused instead of page-faulted in again."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

import jax
import pytest

from flowav import host_memory

# A jitted function whose temporary buffer, sin(x), is 64 MiB (above glibc's 32 MiB maximum mmap
# threshold and a per-thread arena's 64 MiB heaps), as a large model's train step has; prints the
# minor page faults of each of 24 calls. Mode "thresholds": the malloc settings alone, with JAX's
# async dispatch left on (what the settings cannot fix by themselves).
_SCRIPT = """
import ctypes, resource, sys
import jax, jax.numpy as jnp
from flowav import host_memory
if sys.argv[1] == "on":
  assert host_memory.reuse_freed_host_memory() is not None
if sys.argv[1] == "thresholds":
  libc = host_memory._libc()
  for param in (host_memory._M_MMAP_THRESHOLD, host_memory._M_TRIM_THRESHOLD):
    assert libc.mallopt(ctypes.c_int(param), ctypes.c_int(host_memory._NEVER)) == 1
f = jax.jit(lambda x, w: (jnp.sin(x) @ w).sum())
x, w = jnp.ones((4096, 4096)), jnp.ones((4096, 8))
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
per_call = []
for _ in range(24):
  before = faults()
  f(x, w).block_until_ready()
  per_call.append(faults() - before)
print(*per_call)
try:
  host_memory._applied = None
  host_memory.reuse_freed_host_memory()
except RuntimeError as e:
  print("late:", e)
"""


def _run(script: str, mode: str) -> str:
  return subprocess.run([sys.executable, "-c", script, mode], check=True, capture_output=True,
                        text=True, timeout=120).stdout


# Slow tier, which runs one test at a time: page-fault counts are a whole-process measure that
# another test competing for the 2 cores (make test runs two workers) disturbs.
@pytest.mark.slow
@pytest.mark.skipif(host_memory._libc() is None, reason="needs glibc (mallopt)")
def test_reuse_stops_page_faults_on_a_jitted_steps_large_buffer():
  # 64 MiB = 16384 pages of 4 KiB, faulted in again on every call with glibc's defaults, and with
  # the malloc settings alone (the computation allocates on JAX's dispatch thread). With reuse on,
  # the first calls can still fault the whole buffer in while Python's own small allocations split
  # the freed block (here up to the 6th call; a CI machine averaged 9.8k over calls 3-7), then
  # none do: judge the last 12 calls, by their median.
  off, thresholds, on = (_run(_SCRIPT, mode).splitlines() for mode in ("off", "thresholds", "on"))
  settled = {name: statistics.median(map(int, out[0].split()[-12:]))
             for name, out in (("off", off), ("thresholds", thresholds), ("on", on))}
  assert settled["off"] > 12000 and settled["thresholds"] > 12000, (off[0], thresholds[0])
  assert settled["on"] < 1000, on[0]
  # Called once the backend exists, the dispatch setting could no longer apply: an error.
  assert "before JAX creates its backends" in off[1]


def test_describe_names_the_setting_and_reuse_is_idempotent(monkeypatch):
  monkeypatch.setattr(host_memory, "_applied", None)
  if host_memory._libc() is None:
    assert host_memory.reuse_freed_host_memory() is None
    assert "no mallopt" in host_memory.describe()
    return
  assert host_memory.describe() == "glibc defaults"
  calls = []
  fake = type("Libc", (), {"mallopt": lambda self, p, v: calls.append((p.value, v.value)) or 1})()
  monkeypatch.setattr(host_memory, "_libc", lambda: fake)
  monkeypatch.setattr(host_memory, "_backends_exist", lambda: False)
  async_dispatch = jax.config.read("jax_cpu_enable_async_dispatch")
  try:
    first = host_memory.reuse_freed_host_memory()
    assert first == host_memory.reuse_freed_host_memory()
  finally:
    jax.config.update("jax_cpu_enable_async_dispatch", async_dispatch)
  assert len(calls) == 2  # set once
  assert "M_MMAP_THRESHOLD=2147483647" in host_memory.describe()
  assert "jax_cpu_enable_async_dispatch=0" in host_memory.describe()


def test_rejected_setting_is_an_error(monkeypatch):
  monkeypatch.setattr(host_memory, "_applied", None)
  fake = type("Libc", (), {"mallopt": lambda self, p, v: 0})()
  monkeypatch.setattr(host_memory, "_libc", lambda: fake)
  monkeypatch.setattr(host_memory, "_backends_exist", lambda: False)
  with pytest.raises(RuntimeError, match="M_MMAP_THRESHOLD"):
    host_memory.reuse_freed_host_memory()


# Prints the allocator after run_under_tcmalloc (which re-executes this very script when it
# preloads tcmalloc) and the pid, which an exec keeps. argv[1] "missing": pretend tcmalloc is a
# library that does not exist, so the preload fails and the re-executed script must not loop.
_TCMALLOC_SCRIPT = """
import os, sys
from flowav import host_memory
if sys.argv[1] == "missing":
  host_memory.tcmalloc_library = lambda: "libflowav-no-such-tcmalloc.so.4"
print(os.getpid(), host_memory.run_under_tcmalloc(), sep="|")
"""


def _tcmalloc_run(mode: str, **env: str) -> list[str]:
  clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", host_memory.TCMALLOC_ENV)}
  proc = subprocess.Popen([sys.executable, "-c", _TCMALLOC_SCRIPT, mode], env={**clean, **env},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  pid, allocator = out.strip().split("|")
  assert int(pid) == proc.pid  # re-executed in place, not in a child process
  return allocator


@pytest.mark.skipif(host_memory.tcmalloc_library() is None,
                    reason="needs tcmalloc (Debian libtcmalloc-minimal4, `make system-deps`)")
def test_run_under_tcmalloc_re_executes_with_it_preloaded():
  assert _tcmalloc_run("real").startswith("tcmalloc (")
  assert _tcmalloc_run("real", FLOWAV_TCMALLOC="0") == "glibc (FLOWAV_TCMALLOC=0)"


def test_a_tcmalloc_that_fails_to_load_is_reported_not_re_executed_again():
  # ld.so ignores a preload it cannot find; the re-executed script sees the marker and stops.
  assert _tcmalloc_run("missing") == "glibc (libflowav-no-such-tcmalloc.so.4 in LD_PRELOAD did not load)"
