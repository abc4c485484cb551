"""Two processes train together and checkpoint; the run then resumes on 2 processes, on 1 process
with 8 devices and on 1 process with 1 device. Each ends where an uninterrupted single-process run
ends: the same parameters (to float tolerance, since gradients are summed in another order) and the
same global data position.

Tolerance: attention key biases get no gradient in exact arithmetic (softmax ignores a shift), so
Adam turns summation-order noise in them into steps of ~1e-5 (measured 1.5e-5 after 6 steps; every
other weight agrees to 2e-7). A data-order or restore bug moves every weight by about lr = 1e-3.
"""

from __future__ import annotations

import pathlib
import shutil
import sys

import numpy as np
import pytest

from tests.multihost.testlib import LAUNCH, data_position, env, params, run, train_flags

pytestmark = pytest.mark.slow

K = 3  # steps before the checkpoint; every run ends at 2K


def _train_1(flags: list[str], devices: int, cache: pathlib.Path) -> str:
  return run([sys.executable, "-m", "flowav.main", "train", *flags],
             env(devices, JAX_COMPILATION_CACHE_DIR=str(cache)))


def _train_2(flags: list[str], cache: pathlib.Path) -> str:
  """Two processes with 4 CPU devices each, through the local launcher."""
  return run(["bash", str(LAUNCH / "local_multiprocess.sh"), "--num_processes=2",
              "--devices_per_process=4", *flags], env(JAX_COMPILATION_CACHE_DIR=str(cache)))


def test_resume_on_other_process_counts_matches_uninterrupted(tiny_demo, tmp_path):
  every = {"train.checkpoint_every": K}
  cache = tmp_path / "xla_cache"  # a resume on the same topology reuses the compiled programs
  reference = tmp_path / "reference"
  _train_1(train_flags(tiny_demo, reference, 2 * K, **every), devices=1, cache=cache)

  first = tmp_path / "two_processes"
  out = _train_2(train_flags(tiny_demo, first, K, **every), cache)
  assert "process 0 of 2, 4 local / 8 global devices" in out
  assert "process 1 of 2, 4 local / 8 global devices" in out
  assert data_position(first, K) == data_position(reference, K)

  want_step, want = params(reference)
  want_pos = data_position(reference, 2 * K)
  assert want_step == 2 * K and want_pos.next_element == 2 * K * 8
  _, at_k = params(reference, step=K)  # the last K steps move weights far beyond the tolerance
  assert max(float(np.abs(a - b).max()) for a, b in zip(want, at_k, strict=True)) > 1e-3
  for name, processes, devices in (("2x4", 2, 4), ("1x8", 1, 8), ("1x1", 1, 1)):
    workdir = tmp_path / name
    shutil.copytree(first, workdir)
    flags = train_flags(tiny_demo, workdir, 2 * K, **every)
    out = _train_2(flags, cache) if processes == 2 else _train_1(flags, devices, cache)
    assert f"from step {K}" in out, f"{name}: did not resume"
    step, got = params(workdir)
    assert step == 2 * K, name
    for a, b in zip(want, got, strict=True):
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4, err_msg=name)
    assert data_position(workdir, 2 * K) == want_pos, name
