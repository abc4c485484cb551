"""The demo builder's external programs (flite, festival, fluidsynth), run as separate processes.

One place for how they are called and how they fail: a missing program names its Debian package,
a failed run names the command, its exit status and its messages.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence


def run(args: Sequence[str], *, install: str, needed_by: str, outputs: Sequence[str] = (),
        what: str | None = None, cwd: str | None = None, timeout: float = 120.0
        ) -> subprocess.CompletedProcess:
  """Runs `args` (text mode, output captured) and checks that it left every file in `outputs`.

  Raises RuntimeError: the program is not installed (naming `install`, e.g. "apt-get install
  flite", and `needed_by`), or it exited non-zero / left an output missing (naming `what`, default
  the program, with its exit status and stderr + stdout).
  """
  try:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)
  except FileNotFoundError as e:
    raise RuntimeError(f"the `{args[0]}` program is not installed (Debian/Ubuntu: {install}); "
                       f"{needed_by} needs it") from e
  if proc.returncode != 0 or not all(os.path.exists(o) for o in outputs):
    raise RuntimeError(f"{what or args[0]} failed (exit {proc.returncode}): "
                       f"{(proc.stderr + proc.stdout).strip()}")
  return proc
