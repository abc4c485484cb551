"""flowav.host_memory: freed host memory is reused instead of page-faulted in again."""

from __future__ import annotations

import subprocess
import sys

import jax
import pytest

from flowav import host_memory

# A jitted function whose temporary buffer, sin(x), is 64 MiB (above glibc's 32 MiB maximum mmap
# threshold and a per-thread arena's 64 MiB heaps), as a large model's train step has; prints the
# minor page faults per call after two warm-up calls. Mode "thresholds": the malloc settings
# alone, with JAX's async dispatch left on (what the settings cannot fix by themselves).
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
for _ in range(2):
  f(x, w).block_until_ready()
before = faults()
for _ in range(5):
  f(x, w).block_until_ready()
print((faults() - before) / 5)
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
  # the malloc settings alone (the computation allocates on JAX's dispatch thread); measured here
  # 16.4k, 16.4k and 3.3k faults per call.
  off, thresholds, on = (_run(_SCRIPT, mode).splitlines() for mode in ("off", "thresholds", "on"))
  assert float(off[0]) > 12000 and float(thresholds[0]) > 12000
  assert float(on[0]) < 6000
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
