"""SIGTERM reaching one host of two stops both at the same step, with one committed checkpoint.

A process that left the loop alone would hang its peer in the next collective; `loop._agree_to_stop`
exchanges stop requests every STOP_SYNC_EVERY steps.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from flowav.train.loop import STOP_SYNC_EVERY
from tests.conftest import REPO
from tests.multihost.testlib import env, free_port, train_flags

pytestmark = pytest.mark.slow


def test_sigterm_on_one_process_stops_both_at_the_same_step(tiny_demo, tmp_path):
  workdir, port, steps = tmp_path / "run", free_port(), 10_000
  flags = train_flags(tiny_demo, workdir, steps, **{"train.checkpoint_every": 5})
  procs = [subprocess.Popen(
    [sys.executable, "-m", "flowav.main", "train", *flags, f"--coordinator_address=127.0.0.1:{port}",
     "--num_processes=2", f"--process_id={i}"], cwd=REPO, env=env(1), stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    deadline = time.time() + 300
    while not (workdir / "checkpoints" / "5").exists() and time.time() < deadline:
      assert all(p.poll() is None for p in procs), "a process exited before step 5"
      time.sleep(0.1)
    assert (workdir / "checkpoints" / "5").exists(), "training never reached step 5"
    procs[1].send_signal(signal.SIGTERM)  # the other process is not told
    outs = [p.communicate(timeout=180)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
  stopped = []
  for out in outs:
    line = next(l for l in out.splitlines() if "Stopping at step" in l)
    stopped.append(int(line.split("Stopping at step ")[1].split()[0]))
  assert stopped[0] == stopped[1] and stopped[0] % STOP_SYNC_EVERY == 0 and 5 < stopped[0] < steps
  assert "(another process stopped)" in outs[0] and "(SIGTERM)" in outs[1]
  committed = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert committed[-1] == stopped[0], committed
