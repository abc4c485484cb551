"""launch/ scripts: each --dry-run prints exactly the command it would run; SLURM for real, once."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.multihost.testlib import LAUNCH, data_position, env, free_port, run, train_flags

TRAIN = [sys.executable, "-m", "flowav.main", "train"]
USER_FLAGS = ["--config=configs/vssflow.py:tiny", "--workdir=/shared/runs/a b"]


def _dry_run(script: str, args: list[str], **environ: str) -> list[list[str]]:
  e = env(**environ)
  e.pop("PYTHONPATH")  # the scripts add the repo themselves
  proc = subprocess.run(["bash", str(LAUNCH / script), "--dry-run", *args], env=e, cwd=REPO,
                        capture_output=True, text=True, timeout=60, check=True)
  return [shlex.split(line) for line in proc.stdout.splitlines()]


def test_local_multiprocess_dry_run_prints_one_command_per_process():
  lines = _dry_run("local_multiprocess.sh",
                   ["--num_processes=3", "--devices_per_process=2", "--port=1234", *USER_FLAGS])
  assert lines == [["env", f"PYTHONPATH={REPO}", "PYTHONUNBUFFERED=1",
                    "XLA_FLAGS=--xla_force_host_platform_device_count=2", *TRAIN,
                    "--coordinator_address=127.0.0.1:1234", "--num_processes=3",
                    f"--process_id={i}", *USER_FLAGS] for i in range(3)]


def test_tpu_pod_dry_run_runs_train_on_every_worker():
  [line] = _dry_run("tpu_pod.sh", ["--tpu=pod", "--zone=us-east5-a", "--project=p", *USER_FLAGS])
  assert line[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod", "--zone=us-east5-a",
                      "--project=p", "--worker=all"]
  assert line[9].startswith("--command=") and len(line) == 10
  remote = shlex.split(line[9].removeprefix("--command="))
  assert remote == ["cd", "~/flowav", "&&", "PYTHONUNBUFFERED=1", "python3", "-m", "flowav.main",
                    "train", "--distributed=cluster", *USER_FLAGS]


def test_tpu_pod_needs_name_and_zone():
  proc = subprocess.run(["bash", str(LAUNCH / "tpu_pod.sh"), "--dry-run", "--zone=z"],
                        capture_output=True, text=True, timeout=60, check=False)
  assert proc.returncode == 2 and "--tpu=NAME" in proc.stderr


_SLURM_JOB = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_NTASKS": "16",
              "SLURM_PROCID": "0", "SLURM_SUBMIT_DIR": str(REPO)}


def test_slurm_dry_run_prints_the_srun_command():
  [line] = _dry_run("slurm_gpu.sbatch", USER_FLAGS, **_SLURM_JOB)
  assert line == ["srun", "--kill-on-bad-exit=1", "env", f"PYTHONPATH={REPO}",
                  "PYTHONUNBUFFERED=1", *TRAIN, "--distributed=cluster", *USER_FLAGS]
  sbatch = (LAUNCH / "slurm_gpu.sbatch").read_text()
  assert "#SBATCH --ntasks-per-node=8" in sbatch and "#SBATCH --gpus-per-node=8" in sbatch


def test_slurm_outside_a_job_says_so():
  e = {k: v for k, v in env().items() if not k.startswith("SLURM_")}
  proc = subprocess.run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), "--dry-run"], env=e,
                        capture_output=True, text=True, timeout=60, check=False)
  assert proc.returncode != 0 and "not inside a SLURM job" in proc.stderr


@pytest.mark.slow
def test_slurm_script_trains_through_jax_slurm_detection(tiny_demo, tmp_path):
  """One task on 127.0.0.1: a stand-in `srun` runs the task with the variables a real step sets,
  and JAX's SLURM detection (not flowav flags) supplies the coordinator, rank and process count."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  srun = bin_dir / "srun"  # drops srun's own options, then runs the task
  srun.write_text('#!/usr/bin/env bash\nwhile [[ "$1" == -* ]]; do shift; done\nexec "$@"\n')
  srun.chmod(0o755)
  step = {**_SLURM_JOB, "SLURM_NTASKS": "1", "SLURM_LOCALID": "0", "SLURM_STEP_NODELIST": "localhost",
          "SLURM_JOB_NODELIST": "localhost", "JAX_COORDINATOR_PORT": str(free_port()),
          "PATH": f"{bin_dir}:{env()['PATH']}"}
  workdir = tmp_path / "slurm"
  out = run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), *train_flags(tiny_demo, workdir, 2)],
            env(devices=1, **step))
  assert "JAX distributed: process 0 of 1" in out
  assert data_position(workdir, 2).next_element == 2 * 8
