"""`make demo`: build flowav-demo, train VSSFlow-demo, sample held-out clips, evaluate, report.

Everything lands under one workdir (default runs/demo/): data/, checkpoints/, tb/, samples/,
eval.json, eval_plots/, report.md. Each stage resumes or skips what is already done, so rerunning
the command continues where a killed run stopped.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import ml_collections as mlc
from absl import logging

from flowav import sampling
from flowav.data.demo import build
from flowav.eval import demo as demo_eval
from flowav.eval import report as report_lib
from flowav.train import loop


def run(config: mlc.ConfigDict, workdir: str, *, demo_size: str = "default",
        progress: bool = True) -> dict[str, Any]:
  workdir_path = pathlib.Path(workdir)
  data_dir = workdir_path / "data"
  with config.unlocked():
    config.data.dir = str(data_dir)
  timings: dict[str, float] = {}
  t0 = time.time()
  build.build_demo(str(data_dir), build.preset(demo_size))
  timings["build data"] = time.time() - t0
  t0 = time.time()
  loop.train(config, workdir, progress=progress)
  timings["train"] = time.time() - t0
  t0 = time.time()
  sampling.sample_heldout(workdir, workdir_path / "samples")
  timings["sample"] = time.time() - t0
  t0 = time.time()
  result = demo_eval.evaluate(workdir)
  timings["eval"] = time.time() - t0
  report = report_lib.render(result, timings)
  (workdir_path / "report.md").write_text(report)
  print(report)
  print(f"\nEverything is in {workdir_path.absolute()} (report.md, eval.json, samples/, tb/).")
  logging.info("demo timings: %s", json.dumps(timings))
  return result
