"""Process pools for CPU-bound data jobs (demo builder, preprocess)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# The workers already fill the cores: BLAS threads inside them would only oversubscribe them
# (measured: 7x slower log-mel on a busy 2-core machine).
_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@contextlib.contextmanager
def single_threaded_children() -> Iterator[None]:
  """Sets one BLAS/OpenMP thread in os.environ while worker processes are spawned (children copy
  the environment at spawn), then restores this process's values."""
  saved = {k: os.environ.get(k) for k in _ONE_THREAD}
  os.environ.update(_ONE_THREAD)
  try:
    yield
  finally:
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key)
      else:
        os.environ[key] = value
