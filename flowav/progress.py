"""Progress bars that stay readable in log files.

tqdm redraws up to 10 times a second; on a terminal that is one line, but in a CI log or a SLURM
output file every redraw is kept. Off a terminal, bars update every 30 s instead.
"""

from __future__ import annotations

import sys
from typing import Any

import tqdm


def bar(*, disable: bool = False, **kwargs: Any) -> tqdm.tqdm:
  """A tqdm bar on stderr; `kwargs` go to tqdm (total, desc, unit, initial, ...)."""
  interactive = sys.stderr.isatty()
  return tqdm.tqdm(file=sys.stderr, disable=disable, dynamic_ncols=interactive,
                   mininterval=0.1 if interactive else 30.0, **kwargs)
