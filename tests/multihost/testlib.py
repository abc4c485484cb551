"""Helpers for the multi-process tests: train commands, free ports, reading back a run."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

from tests.conftest import REPO

LAUNCH = REPO / "launch"


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return int(s.getsockname()[1])


def env(devices: int | None = None, **extra: str) -> dict[str, str]:
  """This environment with the repo importable and `devices` simulated CPU devices per process."""
  out = {**os.environ, "PYTHONPATH": str(REPO), "PYTHON": sys.executable, **extra}
  out.pop("XLA_FLAGS", None)
  if devices is not None:
    out["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return out


def run(cmd: list[str], environ: dict[str, str], timeout: float = 600) -> str:
  """Runs `cmd` in the repo; on failure the assertion shows the end of its output."""
  proc = subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True,
                        timeout=timeout, check=False)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, f"{' '.join(cmd[:6])} ... exited {proc.returncode}:\n{out[-6000:]}"
  return out


def train_flags(data: pathlib.Path, workdir: pathlib.Path, steps: int, **overrides) -> list[str]:
  """Flags of the tiny VSSFlow run; the global batch of 8 splits over 1, 2, 4 or 8 devices.

  The tiny demo's validation split (4 clips) is smaller than one global batch, so validation reads
  the train split in record order.
  """
  flags = {"data.dir": data, "data.batch_size": 8, "data.eval_split": "train",
           "train.num_steps": steps, "train.eval_every": 100, "train.keep_checkpoints": 5,
           **overrides}
  return (["--config=configs/vssflow.py:tiny", f"--workdir={workdir}", "--progress=false"]
          + [f"--config.{k}={v}" for k, v in flags.items()])


def params(workdir: pathlib.Path, step: int | None = None) -> tuple[int, list[np.ndarray]]:
  """(step, raw parameter leaves) of the run's latest (or given) checkpoint, on this process."""
  from flowav import generate  # pylint: disable=g-import-not-at-top
  loaded = generate.load_run(workdir, use_ema=False, step=step)
  return loaded.step, jax.tree.leaves(jax.tree.map(np.asarray, loaded.params))


def data_position(workdir: pathlib.Path, step: int):
  from flowav.train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  ckpt = Checkpointer(workdir, async_save=False)
  try:
    return ckpt.read_data_position(step)
  finally:
    ckpt.close()
