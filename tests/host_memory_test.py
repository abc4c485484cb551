"""flowav.host_memory: freed host memory is reused instead of page-faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flowav import host_memory

# Mallocs, touches and frees a 64 MiB block (above glibc's 32 MiB maximum mmap threshold) five
# times, as XLA:CPU does with a step's temporary buffer, and prints the minor page faults per round
# after a warm-up round. (Not numpy: it asks for transparent huge pages, which hide the faults.)
_SCRIPT = """
import ctypes, ctypes.util, resource, sys
from flowav import host_memory
if sys.argv[1] == "on":
  assert host_memory.reuse_freed_host_memory() is not None
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def round_trip(size=64 << 20):
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)
round_trip()
before = faults()
for _ in range(5):
  round_trip()
print((faults() - before) / 5)
"""

def _faults_per_round(mode: str) -> float:
  out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], check=True, capture_output=True,
                       text=True, timeout=120)
  return float(out.stdout.split()[-1])


@pytest.mark.skipif(host_memory._libc() is None, reason="needs glibc (mallopt)")
def test_reuse_stops_page_faults_on_freed_large_buffers():
  # 64 MiB = 16384 pages of 4 KiB: glibc's defaults unmap the block on free and fault it in again.
  assert _faults_per_round("off") > 8000
  assert _faults_per_round("on") < 500


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
  first = host_memory.reuse_freed_host_memory()
  assert first == host_memory.reuse_freed_host_memory()
  assert len(calls) == 3  # set once
  assert "M_ARENA_MAX=1" in host_memory.describe()


def test_rejected_setting_is_an_error(monkeypatch):
  monkeypatch.setattr(host_memory, "_applied", None)
  fake = type("Libc", (), {"mallopt": lambda self, p, v: 0})()
  monkeypatch.setattr(host_memory, "_libc", lambda: fake)
  with pytest.raises(RuntimeError, match="M_ARENA_MAX"):
    host_memory.reuse_freed_host_memory()
