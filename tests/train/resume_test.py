"""train -> SIGKILL -> rerun ends bit-identical to an uninterrupted run (params and data position)."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _cmd(data: pathlib.Path, workdir: pathlib.Path, steps: int) -> list[str]:
  return [sys.executable, "-m", "flowav.main", "train", "--config=configs/vssflow.py:tiny",
          f"--workdir={workdir}", f"--config.data.dir={data}",
          f"--config.train.num_steps={steps}", "--config.train.checkpoint_every=2",
          "--config.train.eval_every=100", "--progress=false"]


def _state(workdir: pathlib.Path):
  from flowav import generate  # pylint: disable=g-import-not-at-top
  run = generate.load_run(workdir, use_ema=False)
  return run.step, jax.tree.leaves(jax.tree.map(np.asarray, run.params))


def _data_position(workdir: pathlib.Path, step: int):
  from flowav.train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  ckpt = Checkpointer(workdir, async_save=False)
  pos = ckpt.read_data_position(step)
  ckpt.close()
  assert pos is not None, f"no data position saved at step {step}"
  return pos


def test_sigkill_then_resume_equals_uninterrupted(tiny_demo, tmp_path):
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  steps = 8
  clean = tmp_path / "clean"
  subprocess.run(_cmd(tiny_demo, clean, steps), cwd=REPO, env=env, check=True,
                 capture_output=True, timeout=600)

  killed = tmp_path / "killed"
  proc = subprocess.Popen(_cmd(tiny_demo, killed, steps), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (killed / "checkpoints" / "4").exists() and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert (killed / "checkpoints" / "4").exists(), "training never reached step 4"
  subprocess.run(_cmd(tiny_demo, killed, steps), cwd=REPO, env=env, check=True,
                 capture_output=True, timeout=600)

  step_a, leaves_a = _state(clean)
  step_b, leaves_b = _state(killed)
  assert step_a == step_b == steps
  for a, b in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(a, b)
  pos = _data_position(killed, steps)
  assert pos == _data_position(clean, steps)
  assert pos.next_element == steps * pos.global_batch  # the tiny config's global batch
