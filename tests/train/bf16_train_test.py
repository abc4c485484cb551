"""bfloat16 training of every registered model through the entry point (XLA:CPU regression)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flowav import models
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_bfloat16_demo_train_step_runs_and_is_finite(model, tiny_demo, tmp_path):
  """The demo variant's train step with bfloat16 matmul inputs compiles, runs, keeps the loss
  finite and checkpoints. (With nn.linear.matmul's transposed residual folded back into its dK
  dot, XLA:CPU picked a dot it cannot run in bfloat16 -> float32: "Unsupported element type for
  DotThunk::Execute".)"""
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  proc = subprocess.run(
    [sys.executable, "-m", "flowav.main", "train", f"--config=configs/{model}.py:demo",
     f"--workdir={tmp_path}", f"--config.data.dir={tiny_demo}", "--config.train.num_steps=2",
     "--config.train.compute_dtype=bfloat16", "--config.train.log_every=1",
     "--config.data.batch_size=4", "--config.data.num_threads=1", "--progress=false"],
    cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
  # The loop stops with NonFiniteLossError (exit != 0) on a NaN / Inf loss at a log step.
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert any((tmp_path / "checkpoints").iterdir())
