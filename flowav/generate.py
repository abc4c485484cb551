"""Sampling from a trained run: load weights, build conditions, solve the ODE, decode audio.

Library API (also used by `python -m flowav.main sample` and the Colab):
  run = load_run(workdir)                       # config, model, EMA or raw weights, codec, stats
  latents = run.sample(batch, key)              # [B, T, C] denormalised codec latents
  wavs = run.decode(latents, batch)             # list of waveforms, trimmed to valid frames
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from flax import nnx

from flowav.audio.codec import LatentStats, make_codec
from flowav.data import schema
from flowav.flow import guidance, samplers
from flowav.nn.inference import prepare_for_sampling
from flowav.train import runtime
from flowav.train import workdir as workdir_lib
from flowav.train.checkpoint import Checkpointer


@dataclasses.dataclass
class Run:
  """A trained model ready to sample."""
  config: mlc.ConfigDict
  graphdef: nnx.GraphDef
  params: nnx.State
  rest: nnx.State
  weights: str  # 'ema' or 'raw': which weights `params` holds
  step: int
  meta: dict[str, Any]
  codec: Any
  stats: LatentStats

  @property
  def model(self) -> nnx.Module:
    return nnx.merge(self.graphdef, self.params, self.rest)

  def cfg_scale(self, task_id: int) -> float:
    s = self.config.sample
    return float(s.cfg_scale_speech if task_id == schema.TASKS["speech"] else s.cfg_scale)

  def predict_durations(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """Phone durations from the model's duration predictor, run on the batch's video. Models that
    align text themselves (AudioGen-Omni: attention over a frame budget) have none: the batch's
    durations come back unchanged (the model does not read them)."""
    if not hasattr(self.model, "predict_durations"):
      return np.asarray(batch["phone_durations"])
    return np.asarray(self.model.predict_durations(dict(batch)))

  def sample(self, batch: Mapping[str, np.ndarray], key: jax.Array, *,
             cfg_scale: float | None = None, unconditional: bool = False,
             known: np.ndarray | None = None, known_mask: np.ndarray | None = None) -> np.ndarray:
    """Generates normalised latents for a padded batch, then denormalises them.

    All rows share one guidance scale (static); by default it is the first row's task's scale.
    `unconditional` samples from the null condition (every condition dropped, as in CFG training):
    the evaluation's null-condition control. `known` [B, T_a, C_a] codec latents and `known_mask`
    [B, T_a] bool: frames fixed to `known` (inpainting; `long_form` continues a window from the
    previous one's overlap). Returns [B, T_a, C_a] codec latents.
    """
    scale = self.cfg_scale(int(batch["task_id"][0])) if cfg_scale is None else float(cfg_scale)
    s = self.config.sample
    shape = np.shape(batch["audio_latents"])
    x0 = jax.random.normal(key, shape, jnp.float32)
    inpaint = known is not None
    if inpaint:
      if known_mask is None or np.shape(known) != shape or np.shape(known_mask) != shape[:2]:
        raise ValueError(f"Run.sample: known {np.shape(known)} and known_mask "
                         f"{None if known_mask is None else np.shape(known_mask)} must be "
                         f"{shape} and {shape[:2]}")
      known = self.stats.normalize(np.asarray(known, np.float32))
      known_mask = np.asarray(known_mask, bool)
    fn = _sampler(self.graphdef, s.method, int(s.num_steps), scale, float(s.rtol), float(s.atol),
                  bool(unconditional), inpaint)
    x1 = np.asarray(fn(self.params, self.rest, x0, dict(batch), known, known_mask))
    return self.stats.denormalize(x1)

  def decode(self, latents: np.ndarray, batch: Mapping[str, np.ndarray], *,
             vocoder: str = "auto") -> list[np.ndarray]:
    """Waveforms of the valid frames of each row (`vocoder`: see `MelCodec.decode`)."""
    out = []
    for lat, mask in zip(latents, np.asarray(batch["audio_mask"])):
      out.append(self.codec.decode(lat[: int(mask.sum())], vocoder=vocoder))
    return out


@functools.lru_cache(maxsize=16)
def _sampler(graphdef: nnx.GraphDef, method: str, num_steps: int, scale: float, rtol: float,
             atol: float, unconditional: bool = False, inpaint: bool = False):
  """One jitted function for the whole sampling loop: conditions built and weights laid out for
  inference (`prepare_for_sampling`: unstacked layers, kernels in the compute dtype) once, outside
  the ODE loop.

  With `inpaint`, the frames of `known_mask` move along their own straight path from the noise x0
  to `known` (velocity known - x0, constant, so any solver lands on `known` at t = 1), and the
  model sees them at each step's noise level, as in training: the replacement idea of RePaint
  (Lugmayr et al. 2022, §3) written as a velocity, so it holds for adaptive solvers too.
  """

  @jax.jit
  def run(params, rest, x0, batch, known=None, known_mask=None):
    model = prepare_for_sampling(nnx.merge(graphdef, params, rest))
    cond = model.conditions(batch)
    null = model.null_conditions(cond)
    if unconditional:  # guidance between two null conditions is the null velocity
      cond = null
    apply_fn = lambda x, t, c: model(x, t, c)
    velocity = guidance.guided_velocity(apply_fn, cond, null, scale)
    if inpaint:
      guided, path_velocity = velocity, known - x0
      velocity = lambda x, t: jnp.where(known_mask[..., None], path_velocity, guided(x, t))
    x1, _ = samplers.sample_ode(velocity, x0, method=method, num_steps=num_steps, rtol=rtol,
                                atol=atol)
    return x1

  return run


def override_sample(config: mlc.ConfigDict, overrides: Sequence[str]) -> dict[str, Any]:
  """Applies 'sample.KEY=VALUE' strings to `config.sample` in place; returns {key: new value}.

  Only the sampler's settings can change after training (the weights fix everything else). Each
  value is parsed as the type of the setting it replaces; a malformed item, an unknown key or a
  value of the wrong type raises ValueError naming it.
  """
  applied: dict[str, Any] = {}
  for item in overrides:
    key, sep, text = item.partition("=")
    section, _, name = key.strip().partition(".")
    if not sep or section != "sample" or not name:
      raise ValueError(f"override {item!r}: expected sample.KEY=VALUE; only the sample.* settings "
                       "can change after training")
    if name not in config.sample:
      raise ValueError(f"override {key!r}: unknown key; sample.* has {sorted(config.sample)}")
    old = config.sample[name]
    try:
      if isinstance(old, bool):
        if text.strip().lower() not in ("true", "false", "1", "0"):
          raise ValueError("expected true or false")
        value: Any = text.strip().lower() in ("true", "1")
      elif isinstance(old, (int, float, str)):
        value = type(old)(text.strip() if not isinstance(old, str) else text)
      else:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"override {key!r}={text!r}: not a {type(old).__name__} ({e})") from e
    with config.unlocked():
      config.sample[name] = value
    applied[key.strip()] = value
  return applied


# 'eval_plots' + suffix stays well under the common 255-byte file-name limit.
_MAX_SUFFIX = 160


def override_suffix(overrides: Sequence[str]) -> str:
  """'' without overrides, else a file-name suffix naming them ('.cfg_scale_speech=1.5'), so that
  an eval with other sampler settings writes eval<suffix>.json beside, not over, eval.json."""
  names = [item.strip().removeprefix("sample.") for item in overrides]
  suffix = "".join("." + re.sub(r"[^A-Za-z0-9_.=+-]", "_", name) for name in names)
  if len(suffix) <= _MAX_SUFFIX:
    return suffix
  # Past a file system's 255-byte name limit: keep a readable head, and a hash of every override
  # so that two long lists still name different files.
  digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
  return f"{suffix[: _MAX_SUFFIX - 13]}.{digest}"


def load_run(workdir: str | pathlib.Path, *, use_ema: bool | None = None,
             step: int | None = None, dtype: str | None = None,
             sample_overrides: Sequence[str] = ()) -> Run:
  """Loads the latest (or given) checkpoint of `workdir` for sampling on this host's devices.

  `dtype` overrides `config.train.compute_dtype`, the matmul input dtype ('float32' or
  'bfloat16'); the parameters are the same either way. `sample_overrides` ('sample.KEY=VALUE',
  see `override_sample`) change the sampler's settings for this run only; config.json keeps the
  saved ones.
  """
  workdir = pathlib.Path(workdir)
  config = workdir_lib.load_config(workdir)
  override_sample(config, sample_overrides)
  if dtype is not None:
    with config.unlocked():
      config.train.compute_dtype = dtype  # make_runtime rejects an unknown dtype, naming it
  rt = runtime.make_runtime(config)
  ckpt = Checkpointer(workdir, keep=int(config.train.keep_checkpoints), async_save=False)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{ckpt.directory} holds no checkpoint: train first")
  state, meta = ckpt.restore(step, rt.abstract_state, rt.meta)
  ckpt.close()
  use_ema = bool(config.sample.use_ema) if use_ema is None else use_ema
  if use_ema and state.ema is not None:
    params, weights = state.ema, "ema"
  else:
    params, weights = state.params, "raw"
  return Run(config=config, graphdef=rt.graphdef, params=params, rest=state.rest,
             weights=weights, step=int(step), meta=meta, codec=make_codec(meta["codec"]),
             stats=LatentStats.from_dict(meta["latent_stats"]))
