"""Test setup: absl flags parsed (grain workers read them), a session-wide tiny demo dataset."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags

flags.FLAGS.mark_as_parsed()

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_main(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
  """Runs `python -m flowav.main ARGS --progress=false` from the repository, output captured."""
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  return subprocess.run([sys.executable, "-m", "flowav.main", *args, "--progress=false"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                        check=check)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> pathlib.Path:
  """A few-clip flowav-demo (both tasks, every split), built once per test session."""
  from flowav.data.demo import build  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("data") / "flowav-demo"
  build.build_demo(str(out), build.preset("tiny"))
  return out
