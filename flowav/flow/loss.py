"""Masked losses for velocity regression over padded sequences.

All take predictions and targets [B, T, C] with a frame mask [B, T] (True = valid frame) and
return (batch loss scalar, per-example [B]). Masked frames are removed with `jnp.where` *before*
any arithmetic, so they contribute exactly 0 to the loss and exactly 0 to the gradient, even when
the padded predictions or targets hold inf or NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _frame_mask(mask: jax.Array | None, pred: jax.Array) -> jax.Array:
  if pred.ndim != 3:
    raise ValueError(f"pred must be [B, T, C]; got shape {pred.shape}")
  if mask is None:
    return jnp.ones(pred.shape[:2], bool)
  if mask.shape != pred.shape[:2]:
    raise ValueError(f"mask must be [B, T] = {pred.shape[:2]}; got shape {mask.shape}")
  return mask.astype(bool)


def masked_mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None, *,
               weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Mean squared error over the valid (frame, channel) elements.

  With e_btc = pred - target, valid set V_b = {(t, c) : mask[b, t]} and n_b = |V_b| = C * sum_t
  mask[b, t]:

      per_example[b] = sum_{V_b} e_btc^2 / max(n_b, 1)
      loss           = sum_b w_b sum_{V_b} e_btc^2 / max(sum_b n_b, 1)

  i.e. the batch loss is the total squared error over all valid elements of the batch divided by
  their count (a frame-weighted mean, AudioGen-Omni §3 "length-based mask"): padding never
  dilutes it, and long clips weigh in proportion to their length. An example without valid
  frames contributes 0 to both and yields no NaN. With w = 1 and no padding this is plain MSE.

  Args:
    pred: [B, T, C] predicted velocity.
    target: [B, T, C] target velocity.
    mask: [B, T] bool, True on valid frames; None means all frames are valid.
    weights: optional [B] per-example weights w_b scaling each example's squared errors in `loss`
      (the denominator stays the unweighted count).
  Returns:
    (loss, per_example): a float32 scalar and [B] float32; per_example is each example's own
    unweighted MSE (for logging).
  """
  if target.shape != pred.shape:
    raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
  m = _frame_mask(mask, pred)[..., None]
  err = jnp.where(m, pred.astype(jnp.float32) - target.astype(jnp.float32), 0.0)
  sq_sum = jnp.sum(jnp.square(err), axis=(1, 2))  # [B]
  count = jnp.sum(m, axis=(1, 2)).astype(jnp.float32) * pred.shape[-1]  # [B]
  per_example = sq_sum / jnp.maximum(count, 1.0)
  if weights is not None:
    if weights.shape != pred.shape[:1]:
      raise ValueError(f"weights must be [B] = {pred.shape[:1]}; got shape {weights.shape}")
    sq_sum = sq_sum * weights.astype(jnp.float32)
  loss = jnp.sum(sq_sum) / jnp.maximum(jnp.sum(count), 1.0)
  return loss, per_example


def masked_direction_loss(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None, *,
                          eps: float = 1e-8) -> tuple[jax.Array, jax.Array]:
  """Mean over valid frames of 1 - cos(pred_bt, target_bt), the angle taken over channels.

  Flowley §3 adds 0.5 x this to the MSE. Per frame,

      cos = <p, u> / max(|p| |u|, eps)                                   (torch cosine_similarity)

  so a prediction k u with k > 0 scores 0 and -u scores 2. The batch loss averages over all
  valid frames of the batch; examples without valid frames give 0 and no NaN.

  Args:
    pred, target: [B, T, C].
    mask: [B, T] bool (True = valid) or None for all valid.
    eps: floor of |p| |u| (also keeps the gradient finite at zero vectors).
  Returns:
    (loss scalar, per_example [B]), float32.
  """
  if target.shape != pred.shape:
    raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
  m = _frame_mask(mask, pred)
  p = jnp.where(m[..., None], pred.astype(jnp.float32), 0.0)
  u = jnp.where(m[..., None], target.astype(jnp.float32), 0.0)
  dot = jnp.sum(p * u, axis=-1)
  # sqrt(max(|p|^2 |u|^2, eps^2)) = max(|p| |u|, eps) with a finite gradient at zero vectors.
  norms = jnp.sqrt(jnp.maximum(jnp.sum(p * p, -1) * jnp.sum(u * u, -1), eps * eps))
  dist = jnp.where(m, 1.0 - dot / norms, 0.0)  # [B, T]
  frames = jnp.sum(m, axis=1).astype(jnp.float32)
  per_example = jnp.sum(dist, axis=1) / jnp.maximum(frames, 1.0)
  loss = jnp.sum(dist) / jnp.maximum(jnp.sum(frames), 1.0)
  return loss, per_example
