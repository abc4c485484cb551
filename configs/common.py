"""Shared config pieces: argument parsing for `get_config(arg)` and the sections every run has.

Sections (DESIGN.md "Contracts"): model, data, flow, optim, train, mesh, sample, eval.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections as mlc


def parse_arg(arg: str | None, **defaults: Any) -> mlc.ConfigDict:
  """Parses 'variant=tiny,foo=1' or a bare 'tiny' (taken as the variant) against typed defaults."""
  out = mlc.ConfigDict(defaults)
  if not arg:
    return out
  for i, item in enumerate(arg.split(",")):
    if "=" not in item:
      if i == 0 and "variant" in defaults:
        out.variant = item
        continue
      raise ValueError(f"Config argument {item!r} is not key=value (in {arg!r})")
    key, value = item.split("=", 1)
    if key not in defaults:
      raise ValueError(f"Unknown config argument {key!r} in {arg!r}; valid: {sorted(defaults)}")
    kind = type(defaults[key])
    out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
  return out


def model_section(name: str, variant: str, config_cls: type, variants: dict[str, dict]) -> dict:
  """Every field of the model's config dataclass, so `--config.model.<field>=...` overrides work."""
  if variant not in variants:
    raise ValueError(f"Unknown variant {variant!r} for model {name!r}; valid: {sorted(variants)}")
  fields = dataclasses.asdict(config_cls(**variants[variant]))
  fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}
  return {"name": name, "variant": variant, **fields}


def base_config() -> mlc.ConfigDict:
  """Defaults shared by all experiments; experiment files override what they need."""
  c = mlc.ConfigDict()
  c.data = dict(
    dir="runs/data/flowav-demo",  # dataset directory (dataset_info.json + shards)
    train_split="train", eval_split="validation", test_split="test",
    batch_size=32,  # global batch (all processes)
    clip_seconds=2.0,  # training window; longer clips are cropped, shorter ones padded + masked
    max_phones=64,
    # Caption / lyric token streams (UTF-8 bytes + 1 when a dataset stores only text); 0 = not fed.
    max_text_tokens=0, max_lyric_tokens=0,
    random_crop=True,
    # Times each record of a task (flowav.data.schema.TASKS) appears per training epoch, e.g.
    # --config.data.task_weights.speech=2; 0 leaves the task out.
    task_weights=dict(sound=1, speech=1, song=1, music=1, t2av=1),
    num_threads=2, prefetch=4,
  )
  c.flow = dict(t_sampler="uniform", logit_normal_mean=0.0, logit_normal_std=1.0)
  c.optim = dict(
    lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01,
    warmup_steps=100, schedule="constant",  # constant | cosine (decays to 0 at train.num_steps)
    clip_norm=0.0,  # 0 disables gradient clipping
    grad_accum=1,  # micro-batches per optimizer step
  )
  c.train = dict(
    num_steps=1000, seed=0,
    compute_dtype="float32",  # float32 | bfloat16: matmul inputs; params and optimizer stay f32
    ema_decay=0.0,  # 0 disables EMA; otherwise exported/sampled weights are the EMA
    log_every=50, eval_every=500, num_eval_batches=2,
    checkpoint_every=500, keep_checkpoints=3,
    checkpoint_timeout_minutes=60.0,  # a background save that takes longer stops the run (rc 1)
    summary_every=0,  # spectrogram images + audio to TensorBoard every N steps (0 = at the end only)
    max_minutes=0.0,  # stop (and checkpoint) after this wall time; 0 = no limit
  )
  # Device mesh data x fsdp x tensor (-1: the remaining devices) and the rules table that maps
  # logical axis names onto it (flowav/parallel/rules.py): replicated | data_parallel | fsdp (params
  # split over 'fsdp', batch over data x fsdp) | fsdp_tensor (plus heads / mlp over 'tensor').
  # A parameter dim that does not divide its mesh axes stays whole (logged at startup).
  c.mesh = dict(data=-1, fsdp=1, tensor=1, rules="data_parallel")
  c.sample = dict(
    method="euler", num_steps=25, rtol=1e-5, atol=1e-5,
    cfg_scale=3.0, cfg_scale_speech=1.5,  # spec: 3.0 for sound, 1.5 for speech
    use_ema=True, num_clips=64, batch_size=16, seed=0,
  )
  c.eval = dict(onset_tolerance_frames=1, bootstrap_resamples=2000, max_lag_frames=5)
  return c
