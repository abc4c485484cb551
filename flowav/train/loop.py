"""The training loop: resume, step, log, validate, checkpoint. Reads top to bottom.

Re-running the same command resumes from the last checkpoint (train state + data position) and
ends bit-identical to an uninterrupted run. SIGTERM (preemption) writes a checkpoint and exits.
A NaN/Inf loss raises NonFiniteLossError naming the step range; a non-finite state is never saved.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from flowav import progress as progress_lib
from flowav.data import pipeline, records
from flowav.parallel import sharding as shd
from flowav.train import runtime, summaries
from flowav.train import step as step_lib
from flowav.train import workdir as workdir_lib
from flowav.train.checkpoint import Checkpointer


class NonFiniteLossError(RuntimeError):
  """The loss (or, before a checkpoint, the train state) is NaN/Inf; names the step range."""


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  """True when every floating-point leaf is finite: one fused on-device reduction, one scalar back."""
  ok = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.stack(ok).all() if ok else jnp.asarray(True)


def _diverged(what: str, since: int, step: int, ckpt: Checkpointer) -> NonFiniteLossError:
  """The error to raise; first lets an in-flight save of the last good state commit."""
  ckpt.wait()
  return NonFiniteLossError(
    f"{what} somewhere within steps ({since}, {step}]; the last good checkpoint (step "
    f"{ckpt.latest_step()}) in {ckpt.directory} is kept.")


def run_meta(rt: runtime.Runtime, info: records.DatasetInfo) -> dict[str, Any]:
  """What sampling needs besides the weights: codec, latent statistics, rates, vocabularies."""
  return {**rt.meta, "codec": info.codec, "latent_stats": info.latent_stats,
          "rates": info.rates, "dims": info.dims, "vocab": info.vocab}


def global_batch(local: dict[str, np.ndarray], mesh: jax.sharding.Mesh, rules) -> dict:
  """Assembles this process's rows into global arrays sharded over the batch axes."""
  return {k: jax.make_array_from_process_local_data(shd.batch_sharding(mesh, rules, v.ndim), v)
          for k, v in local.items()}


# config.model key -> where the dataset states the same fact (dataset_info.json).
_DATA_FACTS = {"audio_channels": ("dims", "audio"), "video_dim": ("dims", "video"),
               "speaker_dim": ("dims", "speaker"), "audio_rate": ("rates", "audio"),
               "video_rate": ("rates", "video")}


def check_data_fits_model(config: mlc.ConfigDict, info: records.DatasetInfo,
                          lengths: pipeline.Lengths) -> None:
  """Fails early, naming the config key and the dataset file, when model and data disagree."""
  where = f"{config.data.dir}/{records.INFO_FILE}"
  for key, (section, name) in _DATA_FACTS.items():
    if key in config.model and name in getattr(info, section):
      want, have = float(config.model[key]), float(getattr(info, section)[name])
      if abs(want - have) > 1e-6 * max(1.0, abs(have)):
        raise ValueError(f"config.model.{key}={want:g} but {where} has {section}.{name}={have:g}")
  if "phone_vocab" in config.model and "phone_vocab" in info.dims:
    if int(config.model.phone_vocab) < int(info.dims["phone_vocab"]):
      raise ValueError(f"config.model.phone_vocab={config.model.phone_vocab} is smaller than "
                       f"{where} dims.phone_vocab={info.dims['phone_vocab']}")
  if "max_frames" in config.model and lengths.audio > int(config.model.max_frames):
    raise ValueError(f"config.data.clip_seconds={config.data.clip_seconds} gives {lengths.audio} "
                     f"audio frames; config.model.max_frames={config.model.max_frames} is too small")


def data_info(config: mlc.ConfigDict) -> tuple[records.DatasetInfo, pipeline.Lengths]:
  """The dataset's description and the stream lengths, checked against the model config."""
  info = records.DatasetInfo.load(config.data.dir)
  lengths = pipeline.config_lengths(info, config.data)
  check_data_fits_model(config, info, lengths)
  return info, lengths


def make_data(config: mlc.ConfigDict, split: str, *, train: bool, start_element: int = 0) -> Any:
  """(info, this process's share of `split`); training streams start at global `start_element`."""
  info, lengths = data_info(config)
  ds = pipeline.make_dataset(
    config.data.dir, split, lengths=lengths, global_batch=int(config.data.batch_size),
    seed=int(config.train.seed), shuffle=train, repeat=train,
    random_crop=bool(config.data.random_crop) and train,
    process_index=jax.process_index(), process_count=jax.process_count(),
    start_element=start_element,
    task_weights=dict(config.data.get("task_weights", None) or {}) if train else None)
  return info, ds


def resume_position(config: mlc.ConfigDict, info: records.DatasetInfo, ckpt: Checkpointer,
                    step: int | None) -> pipeline.DataPosition:
  """The global data position to continue from: the start, or the one saved at `step`.

  A checkpoint that changes meaning under the current config is named in a warning: a different
  global batch size (only reachable with --allow_config_change) continues from the saved next
  element, so no example is skipped or repeated; a different seed or record count changes the
  shuffle order from here on.
  """
  split = config.data.train_split
  fresh = pipeline.DataPosition(step=0, next_element=0, global_batch=int(config.data.batch_size),
                                seed=int(config.train.seed),
                                num_records=int(info.splits.get(split, {}).get("num_examples", 0)))
  if step is None:
    return fresh
  saved = ckpt.read_data_position(step)
  if saved is None:  # written before positions were recorded: the batch size never changed
    logging.warning("Checkpoint %s/%d has no data position; assuming %d examples per step",
                    ckpt.directory, step, fresh.global_batch)
    return fresh.advance(step)
  for key in ("global_batch", "seed", "num_records"):
    if getattr(saved, key) != getattr(fresh, key):
      logging.warning("Checkpoint %s/%d was trained with %s=%d, this run has %d; the data stream "
                      "continues from global element %d", ckpt.directory, step, key,
                      getattr(saved, key), getattr(fresh, key), saved.next_element)
  return dataclasses.replace(saved, global_batch=fresh.global_batch, seed=fresh.seed,
                             num_records=fresh.num_records)


# With several processes, stop requests are exchanged every this many steps (a host all-gather that
# waits for the step to finish, so not every step: it would stall asynchronous dispatch).
STOP_SYNC_EVERY = 10


def _agree_to_stop(step: int, is_last: bool, wants_stop: bool) -> bool:
  """Whether every process stops after `step`.

  SIGTERM may reach one host only and wall-clock deadlines differ slightly between hosts; a process
  leaving the loop alone would hang the others in the next collective. So processes compare their
  requests at the same steps and all stop if any asked to.
  """
  if jax.process_count() == 1:
    return wants_stop
  if step % STOP_SYNC_EVERY and not is_last:
    return False
  return bool(np.any(multihost_utils.process_allgather(np.asarray(wants_stop))))


class _Preemption:
  """Turns SIGTERM into a flag the loop polls, so it can checkpoint before exiting."""

  def __init__(self):
    self.requested = False
    self._prev = None

  def __enter__(self):
    try:
      self._prev = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. inside a notebook worker): no handler
      self._prev = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._prev is not None:
      signal.signal(signal.SIGTERM, self._prev)


def train(config: mlc.ConfigDict, workdir: str | pathlib.Path, *,
          allow_config_change: bool = False, progress: bool = True) -> dict[str, float]:
  """Trains (or resumes) the run in `workdir`. Returns the last logged metrics."""
  workdir = pathlib.Path(workdir)
  changed = workdir_lib.check_config(workdir, config, allow_change=allow_config_change)
  if changed:
    logging.warning("Config keys changed since the last run (accepted): %s", changed)
  rt = runtime.make_runtime(config)
  shd.check_batch_divides(int(config.data.batch_size), rt.mesh, rt.rules)
  info, _ = data_info(config)
  meta = run_meta(rt, info)
  ckpt = Checkpointer(workdir, keep=int(config.train.keep_checkpoints),
                      save_timeout_minutes=float(config.train.checkpoint_timeout_minutes))
  latest = ckpt.latest_step()
  if latest is None:
    state = rt.init_state(runtime.data_feature_stats(config))
    logging.info("Initialised a new run in %s", workdir)
  else:
    state, _ = ckpt.restore(latest, rt.abstract_state, meta)
    logging.info("Resumed %s from step %d", workdir, latest)
  # The data stream is rebuilt from the global position, so any process count resumes it exactly.
  position = resume_position(config, info, ckpt, latest)
  _, train_ds = make_data(config, config.data.train_split, train=True,
                          start_element=position.next_element)
  data_iter = pipeline.to_iterator(train_ds, num_threads=int(config.data.num_threads),
                                   prefetch=int(config.data.prefetch))
  if jax.process_index() == 0:  # one writer: the workdir may be shared by every process
    workdir_lib.write_config(workdir, config)  # only once the workdir is known to fit the config

  cfg = step_lib.step_config(config)
  batch_sh = None  # shardings are carried by the global arrays themselves
  train_step = jax.jit(
    functools.partial(step_lib.train_step, graphdef=rt.graphdef, tx=rt.tx, cfg=cfg),
    in_shardings=(rt.state_shardings, batch_sh), out_shardings=(rt.state_shardings, None),
    donate_argnums=0)
  eval_step = jax.jit(functools.partial(step_lib.eval_step, graphdef=rt.graphdef, cfg=cfg))

  num_steps = int(config.train.num_steps)
  start = int(jax.device_get(state.step))
  writer = summaries.Writer(workdir / "tb") if jax.process_index() == 0 else None
  deadline = (time.time() + 60 * float(config.train.max_minutes)
              if float(config.train.max_minutes) > 0 else None)
  last_logged: dict[str, float] = {}
  last_checked = start
  bar = progress_lib.bar(total=num_steps, initial=start, desc="train", disable=not progress)
  t_last, steps_since = time.time(), 0
  with _Preemption() as preempt, jax.set_mesh(rt.mesh), shd.use_mesh(rt.mesh, rt.rules):
    step = start
    while step < num_steps:
      batch = global_batch(next(data_iter), rt.mesh, rt.rules)
      state, metrics = train_step(state, batch)
      step += 1
      steps_since += 1
      bar.update(1)
      is_last = step == num_steps
      stop = _agree_to_stop(step, is_last,
                            preempt.requested or (deadline is not None and time.time() > deadline))
      if step % int(config.train.log_every) == 0 or is_last or stop:
        host = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not np.isfinite(host["loss"]):
          raise _diverged(f"Loss became {host['loss']}", last_checked, step, ckpt)
        last_checked = step
        now = time.time()
        host["steps_per_sec"] = steps_since / max(now - t_last, 1e-9)
        host["lr"] = float(runtime.optim.make_schedule(config.optim, num_steps)(step))
        t_last, steps_since = now, 0
        last_logged = host
        bar.set_postfix(loss=f"{host['loss']:.4f}")
        if writer:
          writer.scalars(step, {f"train/{k}": v for k, v in host.items()})
      if step % int(config.train.eval_every) == 0 or is_last:
        val = validation_loss(config, rt, state, eval_step)
        if writer:
          writer.scalars(step, {f"validation/{k}": v for k, v in val.items()})
        last_logged.update({f"val_{k}": v for k, v in val.items()})
      every = int(config.train.summary_every)
      if writer and every > 0 and step % every == 0 and not is_last:
        summaries.log_samples(writer, config, rt, state, info, step)
      if step % int(config.train.checkpoint_every) == 0 or is_last or stop:
        # Log steps only see the loss, which predates this step's update: never save a NaN state.
        if not (np.isfinite(float(jax.device_get(metrics["loss"])))
                and bool(jax.device_get(_all_finite(state)))):
          raise _diverged("Loss or train state became NaN/Inf", last_checked, step, ckpt)
        last_checked = step
        ckpt.save(state, position.advance(step), meta)
      if stop and not is_last:
        why = ("SIGTERM" if preempt.requested else "train.max_minutes reached"
               if deadline is not None and time.time() > deadline else "another process stopped")
        logging.warning("Stopping at step %d (%s); rerun the same command to resume.", step, why)
        break
  bar.close()
  ckpt.close()  # waits for the async save: a preempted run exits only once it is committed
  if writer:
    if not preempt.requested:  # the preemption grace period is too short for sampling
      summaries.log_samples(writer, config, rt, state, info, step)
    writer.close()
  return last_logged


def validation_loss(config: mlc.ConfigDict, rt: runtime.Runtime, state, eval_step) -> dict:
  """Mean validation metrics over the first `train.num_eval_batches` batches, fixed noise."""
  _, ds = make_data(config, config.data.eval_split, train=False)
  n = min(int(config.train.num_eval_batches), len(ds))
  params = state.ema if state.ema is not None else state.params
  totals: dict[str, float] = {}
  for i in range(n):
    batch = global_batch(ds[i], rt.mesh, rt.rules)
    m = jax.device_get(eval_step(params, state.rest, batch, jax.random.key(i)))
    for k, v in m.items():
      totals[k] = totals.get(k, 0.0) + float(v) / n
  return {k: v for k, v in totals.items() if not k.startswith("count/")}

