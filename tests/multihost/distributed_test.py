"""flowav.parallel.distributed.initialize: which start-up it picks (no coordinator is started here)."""

from __future__ import annotations

import pytest

from flowav.parallel import distributed


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch):
  for var in (*distributed.ENV.values(), "SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
              "SLURM_PROCID", "SLURM_LOCALID"):
    monkeypatch.delenv(var, raising=False)


def test_single_process_by_default():
  assert distributed.initialize() is False
  assert distributed.initialize("off") is False


def test_one_task_slurm_step_needs_no_coordinator(monkeypatch):
  for var, value in {"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1",
                     "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
    monkeypatch.setenv(var, value)
  assert distributed.initialize("auto") is False


def test_partial_explicit_values_name_what_is_missing(monkeypatch):
  with pytest.raises(ValueError, match=r"missing: \['coordinator_address', 'process_id'\]"):
    distributed.initialize(num_processes=2)
  monkeypatch.setenv("FLOWAV_PROCESS_ID", "1")
  with pytest.raises(ValueError, match=r"missing: \['coordinator_address'\]"):
    distributed.initialize(num_processes=2)


def test_bad_mode_and_contradictions_are_refused():
  with pytest.raises(ValueError, match="valid"):
    distributed.initialize("slurm")
  with pytest.raises(ValueError, match="--distributed=off"):
    distributed.initialize("off", process_id=0)
