"""Pure train and eval steps: no I/O, no Python side effects; jitted by the loop under the mesh.

Every model implements the same small interface (flowav/models): `conditions(batch)`,
`drop_conditions(cond, key, **rates)`, `__call__(x_t, t, cond) -> velocity`, and
`auxiliary_loss(batch) -> (loss, metrics)` for side objectives such as a duration predictor.
`config.flow.dropout` holds the models' CFG dropout rates, plus `p_timing` for any model that reads
phone durations (flowav/train/timing_dropout.py), applied to the batch before `conditions`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flowav import models
from flowav.data import schema
from flowav.flow import loss as flow_loss
from flowav.flow import paths, timesteps
from flowav.train import timing_dropout
from flowav.train.state import TrainState

Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """The static parts of a step (hashable; closed over by jit)."""
  t_sampler: Any
  dropout: tuple[tuple[str, float], ...] = ()
  ema_decay: float = 0.0
  grad_accum: int = 1


def step_config(config: Any) -> StepConfig:
  f = config.flow
  kwargs = {}
  if f.t_sampler == "logit_normal":
    kwargs = dict(mean=float(f.logit_normal_mean), std=float(f.logit_normal_std))
  dropout = tuple(sorted((k, float(v)) for k, v in dict(f.get("dropout", {})).items()))
  p_timing = dict(dropout).get("p_timing", 0.0)
  if not 0.0 <= p_timing <= 1.0:
    raise ValueError(f"config.flow.dropout.p_timing={p_timing} must lie in [0, 1]")
  if p_timing > 0 and not models.model_config(config.model).reads_phone_timing:
    # Would train exactly as with 0: say so rather than let a sweep compare identical runs.
    raise ValueError(f"config.flow.dropout.p_timing={p_timing} has no effect: model "
                     f"{config.model.name!r} ({config.model.variant!r}, with these overrides) does not "
                     f"read phone durations (AudioGen-Omni reads them with "
                     f"config.model.lyrics_aligned=True)")
  return StepConfig(t_sampler=timesteps.make_t_sampler(f.t_sampler, **kwargs), dropout=dropout,
                    ema_decay=float(config.train.ema_decay), grad_accum=int(config.optim.grad_accum))


def velocity_mse(model: nnx.Module, batch: Batch, t: jax.Array, x0: jax.Array,
                 cond: Any) -> tuple[jax.Array, jax.Array]:
  """Rectified-flow velocity MSE over valid frames, from noise x0 `[B, T, C]` to the data
  batch['audio_latents'] at times t `[B]`: (the mean, per-example values `[B]`)."""
  x1 = batch["audio_latents"]
  flow = paths.RectifiedFlow()
  v = model(flow.interpolate(x0, x1, t), t, cond)
  return flow_loss.masked_mse(v.astype(jnp.float32), flow.velocity_target(x0, x1), batch["audio_mask"])


def flow_matching_loss(model: nnx.Module, batch: Batch, key: jax.Array, cfg: StepConfig,
                       *, train: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Rectified-flow velocity loss on valid audio frames, plus the model's auxiliary loss.

  batch['audio_latents'] [B, T, C] are normalised data x1; noise x0 ~ N(0, I); t ~ cfg.t_sampler.
  """
  k_t, k_noise, k_drop = jax.random.split(key, 3)
  x1 = batch["audio_latents"]
  t = cfg.t_sampler.sample(k_t, (x1.shape[0],))
  x0 = jax.random.normal(k_noise, x1.shape, x1.dtype)
  rates = dict(cfg.dropout)
  p_timing = rates.pop("p_timing", 0.0)  # taken here: the conditions are built from the timing
  cond_batch = batch
  if train and p_timing > 0 and "phone_durations" in batch and "transcript_mask" in batch:
    # A key derived from k_drop, so runs without timing dropout keep their random streams.
    cond_batch = {**batch, "phone_durations": timing_dropout.drop_timing(
      batch["phone_durations"], batch["transcript_mask"], jax.random.fold_in(k_drop, 1), p_timing)}
  cond = model.conditions(cond_batch)
  if train and rates:
    cond = model.drop_conditions(cond, k_drop, **rates)
  loss, per_example = velocity_mse(model, batch, t, x0, cond)
  aux, aux_metrics = model.auxiliary_loss(batch)  # the true durations (a duration predictor's target)
  metrics = {"flow_loss": loss, **aux_metrics}
  # Per-task loss for logging: mean over the examples of each task present in the batch.
  task = batch["task_id"]
  for name, tid in schema.TASKS.items():
    sel = (task == tid).astype(jnp.float32)
    metrics[f"flow_loss/{name}"] = jnp.sum(per_example * sel) / jnp.maximum(sel.sum(), 1.0)
    metrics[f"count/{name}"] = sel.sum()
  return loss + aux, metrics


def _split_micro(batch: Batch, n: int) -> Batch:
  """[B, ...] -> [n, B/n, ...] with micro-batch i = rows i, i+n, i+2n, ...

  Strided rather than contiguous: the batch axis is sharded in contiguous blocks over devices, so
  taking every n-th row keeps each micro-batch spread over all devices (a contiguous split would put
  micro-batch 0 on the first 1/n of the devices and leave the rest idle).
  """
  def one(x):
    if x.shape[0] % n:
      raise ValueError(f"batch of {x.shape[0]} does not split into config.optim.grad_accum={n}")
    return jnp.swapaxes(x.reshape((x.shape[0] // n, n) + x.shape[1:]), 0, 1)
  return jax.tree.map(one, batch)


def train_step(state: TrainState, batch: Batch, *, graphdef: nnx.GraphDef,
               tx: optax.GradientTransformation, cfg: StepConfig) -> tuple[TrainState, dict]:
  """One optimizer step (averaging gradients over `cfg.grad_accum` micro-batches)."""
  key = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params, micro, k):
    model = nnx.merge(graphdef, params, state.rest)
    return flow_matching_loss(model, micro, k, cfg)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if cfg.grad_accum == 1:
    (loss, metrics), grads = grad_fn(state.params, batch, key)
  else:
    micro = _split_micro(batch, cfg.grad_accum)
    keys = jax.random.split(key, cfg.grad_accum)

    def body(carry, xs):
      g_sum, l_sum, m_sum = carry
      (l, m), g = grad_fn(state.params, xs[0], xs[1])
      return (jax.tree.map(jnp.add, g_sum, g), l_sum + l, jax.tree.map(jnp.add, m_sum, m)), None

    (l0, m0), g0 = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], micro),
                                  keys[0])
    zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)
    (grads, loss, metrics), _ = jax.lax.scan(body, (zeros(g0), zeros(l0), zeros(m0)),
                                             (micro, keys))
    scale = 1.0 / cfg.grad_accum
    grads, loss = jax.tree.map(lambda g: g * scale, grads), loss * scale
    metrics = jax.tree.map(lambda m: m * scale, metrics)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema
  if cfg.ema_decay > 0:
    ema = optax.incremental_update(params, state.ema, 1.0 - cfg.ema_decay)
  metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema=ema)
  return new_state, metrics


def eval_step(params: nnx.State, rest: nnx.State, batch: Batch, key: jax.Array, *,
              graphdef: nnx.GraphDef, cfg: StepConfig) -> dict[str, jax.Array]:
  """Validation loss with a fixed key and no condition dropout."""
  model = nnx.merge(graphdef, params, rest)
  loss, metrics = flow_matching_loss(model, batch, key, cfg, train=False)
  return {**metrics, "loss": loss}
