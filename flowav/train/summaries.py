"""TensorBoard events without TensorFlow (tensorboardX): scalars, spectrograms and audio."""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np
import tensorboardX

from flowav import outputs
from flowav.data import inputs, pipeline


class Writer:
  def __init__(self, logdir: str | pathlib.Path):
    self._w = tensorboardX.SummaryWriter(str(logdir))

  def scalars(self, step: int, values: dict[str, float]) -> None:
    for k, v in values.items():
      self._w.add_scalar(k, v, step)
    self._w.flush()

  def image(self, step: int, tag: str, image: np.ndarray) -> None:
    self._w.add_image(tag, image[None], step, dataformats="CHW")

  def audio(self, step: int, tag: str, wav: np.ndarray, sample_rate: int) -> None:
    self._w.add_audio(tag, np.clip(wav, -1, 1)[:, None], step, sample_rate=sample_rate)

  def close(self) -> None:
    self._w.close()


def log_samples(writer: Writer, config: Any, rt: Any, state: Any, info: Any, step: int,
                per_task: int = 1) -> None:
  """Samples a few validation clips per task with the current weights and logs mel + audio.

  Skipped in a multi-process run: only process 0 writes summaries, and a jitted sampler over
  parameters spread across every process would wait forever for the others to join.
  """
  if jax.process_count() > 1:
    return
  from flowav import generate  # pylint: disable=g-import-not-at-top  (avoids an import cycle)
  from flowav.audio.codec import LatentStats, make_codec  # pylint: disable=g-import-not-at-top
  lengths = pipeline.config_lengths(info, config.data)
  run = generate.Run(config=config, graphdef=rt.graphdef,
                     params=state.ema if state.ema is not None else state.params,
                     rest=state.rest, weights="ema" if state.ema is not None else "raw",
                     step=step, meta={}, codec=make_codec(info.codec),
                     stats=LatentStats.from_dict(info.latent_stats))
  for task in ("sound", "speech"):
    clips = inputs.heldout_clips(config.data.dir, config.data.eval_split, lengths, task=task,
                                 limit=per_task)
    if not clips:
      continue
    batch = inputs.stack([c.prepared for c in clips])
    if task == "speech":
      batch["phone_durations"] = run.predict_durations(batch)
    latents = run.sample(batch, jax.random.key(step))
    for i, (clip, wav) in enumerate(zip(clips, run.decode(latents, batch))):
      tag = f"samples/{task}_{i}"
      writer.image(step, tag + "/generated", outputs.spectrogram_image(latents[i]))
      writer.image(step, tag + "/original",
                   outputs.spectrogram_image(np.asarray(clip.example["audio_latents"])))
      writer.audio(step, tag, wav, int(run.codec.sample_rate))
