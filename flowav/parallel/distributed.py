"""Multi-host start-up: one `initialize` call before any other JAX use.

Three ways a run learns its place among the processes:
  * explicit: coordinator address, process count and process id (flags, or the environment variables
    FLOWAV_COORDINATOR_ADDRESS / FLOWAV_NUM_PROCESSES / FLOWAV_PROCESS_ID), e.g. several processes
    on one machine (`launch/local_multiprocess.sh`);
  * cluster: `jax.distributed.initialize()` with no arguments, where JAX reads the cluster's own
    description (TPU pod metadata, SLURM_* variables of an `srun` step, Open MPI);
  * none: a single process, no coordinator (the default on a laptop).
"""

from __future__ import annotations

import os

import jax
from absl import logging

MODES = ("auto", "cluster", "off")
ENV = {"coordinator_address": "FLOWAV_COORDINATOR_ADDRESS", "num_processes": "FLOWAV_NUM_PROCESSES",
       "process_id": "FLOWAV_PROCESS_ID"}
# Variables of an `srun` job step, as jax's SlurmCluster reads them.
_SLURM_STEP = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def _slurm_multi_task() -> bool:
  """True inside an `srun` step of more than one task (a lone task needs no coordinator)."""
  return all(v in os.environ for v in _SLURM_STEP) and int(os.environ["SLURM_NTASKS"]) > 1


def initialize(mode: str = "auto", *, coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> bool:
  """Joins this process to a multi-process JAX run; returns whether it did.

  Args:
    mode: 'auto' initializes from explicit values if any is given (argument or FLOWAV_* variable),
      else from the environment inside a multi-task SLURM step, else not at all (one process);
      'cluster' always calls `jax.distributed.initialize`, letting JAX detect the cluster (TPU
      pods, whose description comes from the metadata server, need this); 'off' never initializes.
    coordinator_address: 'host:port' of process 0's coordinator service.
    num_processes: processes in the run.
    process_id: this process's index in [0, num_processes).
  """
  if mode not in MODES:
    raise ValueError(f"Unknown --distributed={mode!r}; valid: {MODES}")
  explicit = {"coordinator_address": coordinator_address, "num_processes": num_processes,
              "process_id": process_id}
  for key, var in ENV.items():
    if explicit[key] is None and os.environ.get(var):
      value = os.environ[var]
      explicit[key] = value if key == "coordinator_address" else int(value)
  given = {k: v for k, v in explicit.items() if v is not None}
  if mode == "off":
    if given:
      raise ValueError(f"--distributed=off but {sorted(given)} given: drop them or the mode")
    return False
  if mode == "auto" and not given and not _slurm_multi_task():
    return False
  if mode == "auto" and given and len(given) < 3:
    missing = sorted(set(explicit) - set(given))
    raise ValueError(f"A multi-process run needs --coordinator_address, --num_processes and "
                     f"--process_id (or {', '.join(ENV.values())}); missing: {missing}")
  if jax.distributed.is_initialized():
    return True  # already joined (a notebook or a caller did it): nothing to redo
  # Missing values are filled in by JAX's cluster detection (TPU, SLURM, Open MPI). JAX itself
  # refuses, with a clear message, if a device was already used.
  jax.distributed.initialize(**given)
  logging.info("JAX distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True
