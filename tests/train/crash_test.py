"""Crash-proof training: SIGKILL at seeded moments (inside orbax's save too), SIGTERM, NaN loss.

Every test drives `python -m flowav.main train` on the tiny config in subprocesses, as a user or a
cluster scheduler would, and judges the run only by its workdir and exit status.
"""

from __future__ import annotations

import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

import numpy as np
import pytest

from tests.conftest import REPO
from tests.train.resume_test import _cmd, _data_position, _state

pytestmark = pytest.mark.slow

NUM_STEPS = 40  # long enough that a dozen kills, each a few steps apart, end before the run does
_TMP = re.compile(r"(\d+)\.orbax-checkpoint-tmp")  # orbax's name for a step not yet committed
_KEEP = 3  # config.train.keep_checkpoints
_RESUMED = re.compile(r"Resumed \S+ from step (\d+)")


def _env() -> dict[str, str]:
  return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
  """A persistent XLA cache shared by this module's processes: relaunches load instead of compile.

  A relaunch then costs imports and restore (~10 s of CPU) instead of ~50 s of compiling. The
  uninterrupted run fills it before any kill, so a killed process never holds a half-written entry.
  """
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("xla_cache")))
    mp.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    mp.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
    yield


def _committed(workdir: pathlib.Path) -> set[int]:
  d = workdir / "checkpoints"
  return {int(p.name) for p in d.iterdir() if p.name.isdigit()} if d.exists() else set()


def _pending(workdir: pathlib.Path) -> set[int]:
  """Steps whose temporary directory exists (orbax is writing them, or a kill interrupted it)."""
  d = workdir / "checkpoints"
  return {int(m.group(1)) for p in d.iterdir() if (m := _TMP.match(p.name))} if d.exists() else set()


class _Launch:
  """One training process with its log in a file (a pipe could fill up and stall it)."""

  def __init__(self, args: list[str], log: pathlib.Path):
    self.log = log
    with log.open("w") as f:
      self.proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT)

  def text(self) -> str:
    return self.log.read_text(errors="replace")

  def wait_until(self, cond: Callable[[], bool], timeout: float = 240.0, *,
                 must: bool = True) -> None:
    """Polls `cond` every millisecond (a save's temporary dir lives for well under a second);
    gives up after `timeout` s, failing the test if `must`."""
    end = time.monotonic() + timeout
    while not cond():
      if self.proc.poll() is not None:
        raise AssertionError(f"training exited (rc {self.proc.returncode}) before the awaited "
                             f"moment; log {self.log}:\n{self.text()[-3000:]}")
      if time.monotonic() > end:
        if not must:
          return
        self.proc.kill()
        raise AssertionError(f"timed out; log {self.log}:\n{self.text()[-3000:]}")
      time.sleep(0.001)

  def signal(self, sig: int) -> None:
    self.proc.send_signal(sig)


def _run(args: list[str], log: pathlib.Path, timeout: float = 300.0) -> subprocess.CompletedProcess:
  with log.open("w") as f:
    return subprocess.run(args, cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT,
                          timeout=timeout, check=False)


class _Verifier:
  """Restores committed checkpoints of a workdir onto the real model, as sampling would."""

  def __init__(self, workdir: pathlib.Path):
    self.workdir, self.verified = workdir, set()

  def latest(self) -> int | None:
    from flowav.train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
    ckpt = Checkpointer(self.workdir, async_save=False)
    try:
      listed, latest = set(ckpt.manager.all_steps()), ckpt.latest_step()
    finally:
      ckpt.close()
    assert listed == _committed(self.workdir), "orbax lists a step that is not a committed dir"
    assert latest == max(listed, default=None)
    return latest

  def check(self, step: int) -> None:
    """Raises unless `step` restores completely (state, metadata and data position)."""
    if step in self.verified:
      return
    from flowav import generate  # pylint: disable=g-import-not-at-top
    run = generate.load_run(self.workdir, use_ema=False, step=step)
    assert run.step == step
    _data_position(self.workdir, step)
    self.verified.add(step)


def _train_args(data: pathlib.Path, workdir: pathlib.Path, *extra: str) -> list[str]:
  # absl keeps the last value of a repeated flag, so `extra` overrides _cmd's defaults.
  return [*_cmd(data, workdir, NUM_STEPS), *extra]


@pytest.fixture(scope="module")
def clean(tiny_demo, tmp_path_factory) -> pathlib.Path:
  """The uninterrupted run every interrupted one must match bit for bit."""
  workdir = tmp_path_factory.mktemp("clean") / "run"
  args = _train_args(tiny_demo, workdir, f"--config.train.checkpoint_every={NUM_STEPS}")
  done = _run(args, workdir.parent / "train.log")
  assert done.returncode == 0, (workdir.parent / "train.log").read_text()[-3000:]
  return workdir


def _assert_same_as_clean(clean: pathlib.Path, workdir: pathlib.Path) -> None:
  step_a, leaves_a = _state(clean)
  step_b, leaves_b = _state(workdir)
  assert step_a == step_b == NUM_STEPS
  for a, b in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(a, b)
  assert _data_position(clean, NUM_STEPS) == _data_position(workdir, NUM_STEPS)


def _kill_schedule(seed: int) -> list[tuple[str, int, float]]:
  """(moment, steps ahead of the last checkpoint, delay in s), drawn from a seeded RNG.

  tmp: the instant the temporary directory of a step appears, i.e. before orbax commits it;
  committed: a random delay after a step is committed (lands in training, saving or deleting);
  startup: a random delay after launch (imports, restore, compilation), or the target's
  temporary dir if that comes first (so that a fast start cannot run the schedule out of steps).
  """
  rng = random.Random(seed)
  kinds = ["tmp"] * 6 + ["committed"] * 4 + ["startup"] * 2
  rng.shuffle(kinds)
  return [(k, rng.randint(1, 3), rng.uniform(0.0, 0.3) if k == "committed" else rng.uniform(2.0, 10.0))
          for k in kinds]


def _await_moment(run: _Launch, workdir: pathlib.Path, kind: str, target: int, delay: float) -> None:
  if kind == "tmp":
    run.wait_until(lambda: max(_pending(workdir), default=-1) >= target)
  elif kind == "committed":
    run.wait_until(lambda: max(_committed(workdir), default=-1) >= target)
    time.sleep(delay)
  else:
    run.wait_until(lambda: max(_pending(workdir), default=-1) >= target, timeout=delay, must=False)


def test_sigkill_schedule_resumes_bit_identical(tiny_demo, clean, tmp_path):
  workdir, logs = tmp_path / "killed", tmp_path / "logs"
  logs.mkdir()
  args = _train_args(tiny_demo, workdir, "--config.train.checkpoint_every=1")
  verifier = _Verifier(workdir)
  latest, in_tmp_window, history = None, 0, []
  for i, (kind, ahead, delay) in enumerate(_kill_schedule(seed=6)):
    before = _pending(workdir)  # torn by earlier kills; the trainer must step over them
    # Past every leftover temporary dir, so that "appeared" means written by this launch.
    target = min(max((latest or 0) + ahead, max(before, default=0) + 1), NUM_STEPS - 1)
    run = _Launch(args, logs / f"{i:02d}.log")
    _await_moment(run, workdir, kind, target, delay)
    assert run.proc.poll() is None, f"training ended before kill {i}:\n{run.text()[-3000:]}"
    run.signal(signal.SIGKILL)
    run.proc.wait()
    resumed = _RESUMED.search(run.text())
    if resumed:  # the launch resumed from the newest committed step, never from a temporary one
      assert int(resumed.group(1)) == latest, run.text()[-3000:]
    else:
      assert latest is None or kind == "startup", run.text()[-3000:]
    torn = _pending(workdir) - _committed(workdir)
    in_tmp_window += any(s > max(before, default=-1) for s in torn)
    latest = verifier.latest()  # a torn step is never listed, let alone taken as the latest
    steps = sorted(_committed(workdir))
    # One more than kept: the kill hit orbax deleting the oldest, which no resume would pick.
    deleting = steps[0] if len(steps) > _KEEP else None
    for step in steps:  # every other listed step restores completely
      if step != deleting:
        verifier.check(step)
    history.append((kind, target, latest, sorted(torn)))
  print(f"{len(history)} kills, {in_tmp_window} between a temporary dir and its commit; "
        f"(moment, target step, latest step after, torn steps): {history}")
  assert len(history) >= 10
  assert in_tmp_window >= 1, f"no kill landed between orbax's temporary dir and its commit: {history}"
  assert latest is not None and latest < NUM_STEPS
  done = _run(args, logs / "final.log")
  assert done.returncode == 0, (logs / "final.log").read_text()[-3000:]
  assert f"from step {latest}" in (logs / "final.log").read_text()
  _assert_same_as_clean(clean, workdir)


def test_sigterm_checkpoints_then_resumes(tiny_demo, clean, tmp_path):
  workdir = tmp_path / "preempted"
  periodic = 5
  args = _train_args(tiny_demo, workdir, f"--config.train.checkpoint_every={periodic}")
  run = _Launch(args, tmp_path / "sigterm.log")
  run.wait_until(lambda: periodic in _committed(workdir))
  run.signal(signal.SIGTERM)
  t0 = time.monotonic()
  rc = run.proc.wait(timeout=60)
  log = run.text()
  assert rc == 0, log[-3000:]
  stopped = re.search(r"Stopping at step (\d+) \(SIGTERM\)", log)
  assert stopped, log[-3000:]
  step = int(stopped.group(1))
  print(f"SIGTERM: stopped at step {step}, exited {time.monotonic() - t0:.1f} s after the signal")
  assert periodic < step < NUM_STEPS
  verifier = _Verifier(workdir)
  assert verifier.latest() == step  # the final checkpoint is committed before the process exits
  verifier.check(step)
  done = _run(args, tmp_path / "resume.log")
  assert done.returncode == 0, (tmp_path / "resume.log").read_text()[-3000:]
  assert f"from step {step}" in (tmp_path / "resume.log").read_text()
  _assert_same_as_clean(clean, workdir)


@pytest.fixture(scope="module")
def good_run(tiny_demo, tmp_path_factory) -> pathlib.Path:
  """4 healthy steps, checkpoints at 2 and 4: the run a diverging resume starts from."""
  workdir = tmp_path_factory.mktemp("good") / "run"
  done = _run(_cmd(tiny_demo, workdir, 4), workdir.parent / "train.log")
  assert done.returncode == 0, (workdir.parent / "train.log").read_text()[-3000:]
  return workdir


# An infinite learning rate makes the update after step 4 non-finite; the loss of step 5 was
# computed before that update and is still finite, the loss of step 6 is not.
@pytest.mark.parametrize("log_every,checkpoint_every,message", [
  (100, 1, "Loss or train state became NaN/Inf somewhere within steps (4, 5]"),  # at a checkpoint
  (1, 100, "somewhere within steps (5, 6]"),  # at a log step, between checkpoints
])
def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tiny_demo, good_run, tmp_path,
                                                             log_every, checkpoint_every, message):
  workdir = tmp_path / "run"
  shutil.copytree(good_run, workdir)
  args = [*_cmd(tiny_demo, workdir, 12), "--config.optim.lr=inf", "--allow_config_change",
          f"--config.train.log_every={log_every}",
          f"--config.train.checkpoint_every={checkpoint_every}"]
  done = _run(args, tmp_path / "train.log")
  log = (tmp_path / "train.log").read_text()
  assert done.returncode != 0, log[-3000:]
  assert "NonFiniteLossError" in log and message in log, log[-3000:]
  assert "the last good checkpoint (step 4)" in log, log[-3000:]
  assert _committed(workdir) == {2, 4}  # nothing non-finite was saved
  step, leaves = _state(workdir)
  assert step == 4
  assert all(np.isfinite(leaf).all() for leaf in leaves)
