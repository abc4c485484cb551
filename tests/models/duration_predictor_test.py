"""VSSFlow duration predictor (spec §2.7, acceptance check §7.12) and its monotonic alignment."""

from __future__ import annotations

import functools
import itertools

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowav.data import schema
from flowav.models import duration_predictor as dp
from tests.models.vssflow_testlib import NUM_FRAMES, jit_method, make_batch, tiny_model


def _duration_attention(model, batch):
  return model.duration_attention(batch)


def test_attention_rows_sum_to_one_over_valid_phones():
  model = tiny_model()
  batch = make_batch(model.cfg)
  weights = np.asarray(jit_method(model, _duration_attention)(batch))
  assert weights.shape == (3, NUM_FRAMES, 10)
  np.testing.assert_allclose(weights[[0, 2]].sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(weights[0, :, 5:], 0.0)  # padded phones get no weight
  np.testing.assert_array_equal(weights[2, :, 4:], 0.0)
  np.testing.assert_array_equal(weights[1], 0.0)  # V2S row: no phone at all


def test_loss_is_zero_at_the_target_and_ignores_rows_past_the_valid_length():
  durations = jnp.asarray([[3, 5, 7, 9, 0, 0]])  # 24 frames of 32
  valid = jnp.arange(NUM_FRAMES)[None] < 26
  target = schema.duration_matrix(durations, NUM_FRAMES)
  assert float(dp.alignment_loss(target, durations, valid)) == 0.0
  noise = jax.random.uniform(jax.random.key(0), target.shape)
  spoiled_tail = target.at[:, 24:].set(noise[:, 24:])  # frames 24, 25 have no phone; >= 26 invalid
  assert float(dp.alignment_loss(spoiled_tail, durations, valid)) == 0.0
  spoiled = target.at[:, 10].set(noise[:, 10])
  assert float(dp.alignment_loss(spoiled, durations, valid)) > 0.0


def test_smooth_l1_known_values():
  durations, valid = jnp.asarray([[1, 0]]), jnp.asarray([[True]])
  far = dp.alignment_loss(jnp.asarray([[[0.75, 0.25]]]), durations, valid, beta=5e-4)
  np.testing.assert_allclose(far, 0.25 - 2.5e-4, rtol=1e-6)  # |d| - beta / 2, mean of 2 entries
  near = dp.alignment_loss(jnp.asarray([[[1 - 1e-4, 1e-4]]]), durations, valid, beta=5e-4)
  np.testing.assert_allclose(near, 0.5 * 1e-8 / 5e-4, rtol=1e-3)  # d^2 / (2 beta)


@functools.partial(jax.jit, static_argnums=0)
def _loss_and_grads(graphdef, params, rest, batch):
  loss_fn = lambda p: nnx.merge(graphdef, p, rest).auxiliary_loss(batch)[0]
  return jax.value_and_grad(loss_fn)(params)


def _grads(model, batch):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return _loss_and_grads(graphdef, params, rest, batch)


def test_auxiliary_loss_trains_only_the_duration_predictor():
  model = tiny_model()
  loss, grads = _grads(model, make_batch(model.cfg))
  assert float(loss) > 0.0
  for path, grad in nnx.to_flat_state(grads):
    if path[0] != "duration_predictor":
      np.testing.assert_array_equal(grad[...], 0.0, err_msg="/".join(map(str, path)))
  dp_grads = jax.tree.leaves(nnx.state(grads, lambda p, _: p[0] == "duration_predictor"))
  assert sum(float(jnp.abs(g).sum()) for g in dp_grads) > 0


def test_auxiliary_loss_is_zero_without_transcripts():
  model = tiny_model()
  batch = make_batch(model.cfg)
  batch["transcript_mask"][:] = False
  loss, grads = _grads(model, batch)
  assert float(loss) == 0.0
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads))  # finite, no NaN


def _brute_force(log_probs: np.ndarray) -> float:
  """Best score over every allowed path (see `monotonic_alignment`), by enumeration."""
  frames, phones = log_probs.shape
  if frames >= phones:
    paths = [np.cumsum([0] + [int(i in steps) for i in range(1, frames)])
             for steps in itertools.combinations(range(1, frames), phones - 1)]
  else:
    paths = [np.asarray(c) for c in itertools.combinations(range(phones), frames)]
  return max(log_probs[np.arange(frames), p].sum() for p in paths)


@pytest.mark.parametrize("frames,phones", [(7, 3), (6, 6), (5, 1), (3, 5)])
def test_monotonic_alignment_is_the_best_allowed_path(frames, phones):
  rng = np.random.default_rng(frames * 10 + phones)
  for _ in range(5):
    log_probs = np.log(rng.dirichlet(np.ones(phones), size=frames))
    path = dp.monotonic_alignment(log_probs)
    steps = np.diff(path)
    if frames >= phones:
      assert path[0] == 0 and path[-1] == phones - 1 and set(steps) <= {0, 1}
    else:
      assert np.all(steps > 0) and path.max() < phones
    np.testing.assert_allclose(log_probs[np.arange(frames), path].sum(), _brute_force(log_probs))


def test_monotonic_alignment_keeps_a_feasible_argmax():
  truth = np.repeat(np.arange(4), [3, 1, 5, 2])
  log_probs = np.log(np.full((11, 4), 0.05) + 0.8 * np.eye(4)[truth])
  np.testing.assert_array_equal(dp.monotonic_alignment(log_probs), truth)
  assert dp.monotonic_alignment(np.zeros((0, 3))).shape == (0,)
  with pytest.raises(ValueError, match="log_probs"):
    dp.monotonic_alignment(np.zeros(4))


def test_durations_recovered_from_noisy_alignments():
  rng = np.random.default_rng(0)
  durations = np.array([[4, 9, 6, 8, 5, 0], [7, 1, 12, 0, 0, 0]])
  soft = np.asarray(schema.duration_matrix(durations, 32)) * 3.0 + rng.normal(0, 0.5, (2, 32, 6))
  soft[:, :, 5] = -np.inf  # padded phone
  weights = np.exp(soft) / np.exp(soft).sum(-1, keepdims=True)
  out = dp.durations_from_attention(weights, np.array([32, 20]), np.array([5, 3]))
  np.testing.assert_array_equal(out, durations)
  assert out.dtype == np.int32


def test_predict_durations_partitions_the_valid_frames():
  model = tiny_model()
  batch = make_batch(model.cfg)
  durations = model.predict_durations(batch)
  assert durations.shape == (3, 10) and durations.dtype == np.int32
  np.testing.assert_array_equal(durations.sum(-1), [32, 0, 26])
  assert np.all(durations[0, :5] >= 1) and np.all(durations[2, :4] >= 1)
  np.testing.assert_array_equal(durations[0, 5:], 0)
  np.testing.assert_array_equal(durations[2, 4:], 0)
  matrix = np.asarray(schema.duration_matrix(durations, NUM_FRAMES))  # monotonic one-hot rows
  np.testing.assert_array_equal(matrix[0].sum(-1), 1.0)
  np.testing.assert_array_equal(matrix[2].sum(-1), np.arange(NUM_FRAMES) < 26)
  assert np.all(np.diff(matrix[0].argmax(-1)) >= 0)


def test_training_lowers_the_duration_loss():
  model = tiny_model()
  batch = make_batch(model.cfg)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adam(3e-3)

  @jax.jit
  def update(grads, opt, params):
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt

  opt = jax.jit(tx.init)(params)
  losses = []
  for _ in range(40):
    loss, grads = _loss_and_grads(graphdef, params, rest, batch)
    params, opt = update(grads, opt, params)
    losses.append(float(loss))
  assert losses[-1] < 0.3 * losses[0], losses[::10]
