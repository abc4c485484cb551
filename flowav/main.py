r"""flowav's one entry point: `python -m flowav.main MODE [flags]`.

Modes:
  build_demo_data --out=DIR                 build flowav-demo offline (deterministic)
  preprocess --input=DIR --out=DIR [--config=configs/preprocess.py]   a folder of media -> dataset
         (resumable; several hosts: --process_id=I --num_processes=N on each, no coordinator)
  train  --config=configs/vssflow.py:demo --workdir=DIR [--config.train.num_steps=100]
         multi-host: [--distributed=cluster] on TPU pods / SLURM, or explicitly
         --coordinator_address=HOST:PORT --num_processes=N --process_id=I (see launch/)
  sample --workdir=DIR [--out=DIR] [--video=FILE.mp4 [--transcript="..."]]
  eval   --workdir=DIR                      metrics against negative controls -> eval.json
  export --workdir=DIR                      weights (EMA or raw, recorded) -> DIR/export/
  demo   --config=configs/vssflow.py:demo --workdir=runs/demo   all of the above, end to end
The logic lives in importable modules (Colab); this file only parses flags and dispatches.
"""

from __future__ import annotations

import logging as std_logging
import pathlib
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from flowav import host_memory

MODES = ("build_demo_data", "preprocess", "train", "sample", "eval", "export", "demo")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:args].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).")
_OUT = flags.DEFINE_string("out", None, "Output directory (build_demo_data, preprocess, sample).")
_INPUT = flags.DEFINE_string("input", None, "preprocess: folder of media files to turn into a dataset.")
_VIDEO = flags.DEFINE_string("video", None, "sample: a video file to generate audio for.")
_TRANSCRIPT = flags.DEFINE_string("transcript", None, "sample: text to speak (visual TTS / TTS).")
_CAPTION = flags.DEFINE_string("caption", None, "sample: a caption (models that take captions).")
_LYRICS = flags.DEFINE_string("lyrics", None, "sample: lyrics to sing (models that sing).")
_DURATION = flags.DEFINE_float("duration", None,
                               "sample: seconds of audio (default: the --video's length).")
_WINDOW_OVERLAP = flags.DEFINE_float(
  "window_overlap", None, "sample: sound longer than the model's window (config.data.clip_seconds) "
  "is made in windows, each continuing this many seconds of the previous one (default: a quarter "
  "of the window).")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", None, "sample/eval: held-out clips per task.")
_DTYPE_SEEDS = flags.DEFINE_integer(
  "dtype_seeds", 0, "eval (AudioGen-Omni): also sample with float32 at this many seeds and with "
  "bfloat16 at the first, and say whether bfloat16 falls within the float32 spread (0: skip).")
_SPREAD_SEEDS = flags.DEFINE_integer(
  "spread_seeds", 0, "eval (AudioGen-Omni): re-sample --spread_tasks at this many seeds (the "
  "eval's own first) and report each measure's spread over them, the sampling noise (0: skip).")
_SPREAD_TASKS = flags.DEFINE_list(
  "spread_tasks", ["video_to_sound", "caption_to_sound", "speech", "transcript_to_speech", "song"],
  "eval --spread_seeds: the AudioGen-Omni tasks to re-sample.")
_DEMO_SIZE = flags.DEFINE_enum("demo_size", "default", ["default", "small", "tiny", "full"],
                               "build_demo_data: dataset size preset.")
_ALLOW_CHANGE = flags.DEFINE_bool("allow_config_change", False,
                                  "train: resume even though the config changed.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")
_SAMPLE_OVERRIDE = flags.DEFINE_multi_string(
  "sample_override", [], "sample, eval: KEY=VALUE changing one of the run's saved sample.* "
  "settings for this command only, e.g. --sample_override=sample.cfg_scale_speech=8 (repeatable; "
  "config.json keeps the saved value).")
_REUSE_HOST_MEMORY = flags.DEFINE_bool(
  "reuse_host_memory", False, "CPU runs of large models: keep freed host memory for reuse (glibc "
  "malloc settings and JAX CPU dispatch on the calling thread, flowav.host_memory), so a step whose "
  "XLA buffers exceed 32 MiB stops page-faulting them in each time (MMAudio-S block: -15 to -20 %). "
  "The process keeps its peak host memory until it exits.")
_TCMALLOC = flags.DEFINE_bool(
  "tcmalloc", True, "Run under tcmalloc: the command re-executes itself with tcmalloc in LD_PRELOAD "
  "when it is installed (Debian libtcmalloc-minimal4) and not loaded yet, so XLA:CPU's large step "
  "buffers are reused instead of page-faulted in each step (flowav.host_memory). --notcmalloc or "
  "FLOWAV_TCMALLOC=0: glibc. --reuse_host_memory implies glibc.")
_DISTRIBUTED = flags.DEFINE_enum(
  "distributed", "auto", ["auto", "cluster", "off"],
  "train: multi-process start-up. auto: from the flags below (or FLOWAV_COORDINATOR_ADDRESS, "
  "FLOWAV_NUM_PROCESSES, FLOWAV_PROCESS_ID) if given, else from a multi-task SLURM step, else one "
  "process; cluster: JAX detects the cluster (TPU pod, SLURM, Open MPI); off: one process.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "train: HOST:PORT of process 0's coordinator (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "train, preprocess: processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "train, preprocess: this process's index, 0-based.")


def _require(flag, mode: str) -> str:
  if flag.value is None:
    raise app.UsageError(f"mode {mode!r} needs --{flag.name}")
  return flag.value


def build_demo_data(out: str) -> None:
  from flowav.data.demo import build  # pylint: disable=g-import-not-at-top
  cfg = build.preset(_DEMO_SIZE.value)
  t0 = time.time()
  info = build.build_demo(out, cfg, progress=_PROGRESS.value)
  logging.info("flowav-demo in %s (%.0f s): %s", out, time.time() - t0,
               {k: v["num_examples"] for k, v in info.splits.items()})


def preprocess(input_dir: str, out: str) -> dict:
  from configs import preprocess as preprocess_config  # pylint: disable=g-import-not-at-top
  from flowav.data import preprocess as preprocess_lib  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value if _CONFIG.value is not None else preprocess_config.get_config()
  try:
    index, count = preprocess_lib.host_share(_PROCESS_ID.value, _NUM_PROCESSES.value)
    return preprocess_lib.run(input_dir, out, config, process_index=index, process_count=count,
                              progress=_PROGRESS.value)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from e


def init_distributed(mode: str) -> None:
  """Joins a multi-process run (train only; before any other JAX use)."""
  from flowav.parallel import distributed  # pylint: disable=g-import-not-at-top
  given = [f.name for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID) if f.value is not None]
  if mode == "preprocess" and _COORDINATOR.value is None and _DISTRIBUTED.value != "cluster":
    return  # hosts split the files by --process_id / --num_processes alone (no jax.distributed)
  if mode != "train":
    if given or _DISTRIBUTED.value == "cluster":
      raise app.UsageError(f"mode {mode!r} runs in one process; multi-process flags are for train")
    return
  try:
    distributed.initialize(_DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
                           num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def train(config, workdir: str) -> dict:
  from flowav.train import loop  # pylint: disable=g-import-not-at-top
  return loop.train(config, workdir, allow_config_change=_ALLOW_CHANGE.value,
                    progress=_PROGRESS.value)


def sample(workdir: str, out: str | None) -> list[dict]:
  from flowav import sampling  # pylint: disable=g-import-not-at-top
  out = out or str(pathlib.Path(workdir) / "samples")
  given = {f.name: f.value for f in (_VIDEO, _TRANSCRIPT, _CAPTION, _LYRICS, _DURATION)
           if f.value is not None}
  if given:  # any subset of conditions; the model ignores streams it does not take
    try:
      return [sampling.sample_conditions(
        workdir, out, video=_VIDEO.value, transcript=_TRANSCRIPT.value, caption=_CAPTION.value,
        lyrics=_LYRICS.value, duration=_DURATION.value, sample_overrides=_SAMPLE_OVERRIDE.value,
        window_overlap_s=_WINDOW_OVERLAP.value)]
    except ValueError as e:
      raise app.UsageError(f"sample {sorted(given)}: {e}") from e
  return sampling.sample_heldout(workdir, out, num_clips=_NUM_CLIPS.value,
                                 sample_overrides=_SAMPLE_OVERRIDE.value)


def check_sample_overrides(workdir: str) -> None:
  """Rejects a malformed or unknown --sample_override before any model is loaded."""
  if not _SAMPLE_OVERRIDE.value:
    return
  from flowav import generate  # pylint: disable=g-import-not-at-top
  from flowav.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  try:
    generate.override_sample(workdir_lib.load_config(pathlib.Path(workdir)), _SAMPLE_OVERRIDE.value)
  except ValueError as e:
    raise app.UsageError(f"--sample_override: {e}") from e


def evaluate(workdir: str) -> dict:
  """eval.json, eval_plots/ and report.md in `workdir`; with --sample_override, eval.<overrides>.json
  etc. beside them (generate.override_suffix), so the default eval is kept."""
  from flowav.eval import demo as demo_eval  # pylint: disable=g-import-not-at-top
  from flowav.eval import omni as omni_eval  # pylint: disable=g-import-not-at-top
  from flowav.eval import report  # pylint: disable=g-import-not-at-top
  from flowav.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  n = _NUM_CLIPS.value
  for flag in (_DTYPE_SEEDS, _SPREAD_SEEDS):
    if flag.value == 1 or flag.value < 0:
      raise app.UsageError(f"--{flag.name}={flag.value}: 0 skips it; a spread needs at least 2 "
                           "seeds")
  unknown = sorted(set(_SPREAD_TASKS.value) - set(omni_eval.TASKS))
  if unknown:
    raise app.UsageError(f"--spread_tasks: unknown tasks {unknown}; known: {sorted(omni_eval.TASKS)}")
  model_name = workdir_lib.load_config(pathlib.Path(workdir)).model.name
  overrides = _SAMPLE_OVERRIDE.value
  if model_name == "audiogen_omni":
    # One model, every task: each task with only its conditions (flowav/eval/omni.py).
    result = omni_eval.evaluate(workdir, num_clips=n, dtype_seeds=_DTYPE_SEEDS.value,
                                spread_seeds=_SPREAD_SEEDS.value,
                                spread_tasks=tuple(_SPREAD_TASKS.value), sample_overrides=overrides)
    text = omni_eval.render(result)
  elif _DTYPE_SEEDS.value or _SPREAD_SEEDS.value:
    flag = "--dtype_seeds" if _DTYPE_SEEDS.value else "--spread_seeds"
    raise app.UsageError(f"{flag} is for AudioGen-Omni runs; this run's model is "
                         f"{model_name!r}")
  else:
    result = demo_eval.evaluate(workdir, num_impacts=n, num_speech=None if n is None else n // 2,
                                sample_overrides=overrides)
    text = report.render(result)
  from flowav import generate  # pylint: disable=g-import-not-at-top
  report_path = pathlib.Path(workdir) / f"report{generate.override_suffix(overrides)}.md"
  tmp = report_path.with_name(report_path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(report_path)
  print(text)
  return result


def main(argv) -> None:
  if len(argv) != 2 or argv[1] not in MODES:
    raise app.UsageError(f"usage: python -m flowav.main MODE [flags]; MODE is one of {MODES}")
  mode = argv[1]
  if _REUSE_HOST_MEMORY.value:
    logging.info("host memory: %s", host_memory.reuse_freed_host_memory())
  elif _TCMALLOC.value:
    logging.info("host malloc: %s", host_memory.run_under_tcmalloc())  # may re-execute this command
  if _SAMPLE_OVERRIDE.value and mode not in ("sample", "eval"):
    raise app.UsageError(f"--sample_override is for modes sample and eval; for {mode!r} set "
                         "--config.sample.* instead")
  init_distributed(mode)
  if mode == "build_demo_data":
    build_demo_data(_require(_OUT, mode))
  elif mode == "preprocess":
    preprocess(_require(_INPUT, mode), _require(_OUT, mode))
  elif mode == "train":
    if _CONFIG.value is None:
      raise app.UsageError("mode 'train' needs --config=configs/<model>.py[:variant]")
    train(_CONFIG.value, _require(_WORKDIR, mode))
  elif mode == "sample":
    check_sample_overrides(_require(_WORKDIR, mode))
    for s in sample(_require(_WORKDIR, mode), _OUT.value):
      logging.info("wrote %s", s)
  elif mode == "eval":
    check_sample_overrides(_require(_WORKDIR, mode))
    evaluate(_require(_WORKDIR, mode))
  elif mode == "export":
    from flowav.train import export  # pylint: disable=g-import-not-at-top
    print(export.export(_require(_WORKDIR, mode)))
  elif mode == "demo":
    from flowav import demo  # pylint: disable=g-import-not-at-top
    if _CONFIG.value is None:
      raise app.UsageError("mode 'demo' needs --config=configs/vssflow.py:demo")
    demo.run(_CONFIG.value, _require(_WORKDIR, mode), demo_size=_DEMO_SIZE.value,
             progress=_PROGRESS.value)


class _QuietLibraries(std_logging.Filter):
  """Drops INFO chatter of orbax / grain (one line per file op) from flowav's log."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    noisy = any(s in record.pathname for s in ("/orbax/", "/grain/", "/etils/"))
    return record.levelno >= std_logging.WARNING or not noisy


def run() -> None:
  std_logging.getLogger("absl").addFilter(_QuietLibraries())
  # grain worker processes read absl flags; parsing them here (app.run) keeps them valid.
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
