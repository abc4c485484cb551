"""Time samplers: range, known moments and quantiles, determinism, the factory."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.flow import timesteps

N = 100_000
KEY = jax.random.key(0)


@pytest.mark.parametrize("sampler", [
  timesteps.UniformT(), timesteps.LogitNormalT(), timesteps.LogitNormalT(1.0, 2.0),
  timesteps.CosMapT(), timesteps.ShiftedT(timesteps.UniformT(), 3.0)])
def test_samples_are_float32_in_unit_interval_and_keyed(sampler):
  t = sampler.sample(KEY, (N,))
  assert t.shape == (N,) and t.dtype == jnp.float32
  assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
  np.testing.assert_array_equal(t, sampler.sample(KEY, (N,)))
  assert not np.array_equal(t, sampler.sample(jax.random.key(1), (N,)))


def test_uniform_moments():
  t = np.asarray(timesteps.UniformT().sample(KEY, (N,)))
  assert abs(t.mean() - 0.5) < 0.005
  assert abs((t < 0.25).mean() - 0.25) < 0.005


def test_logit_normal_median_is_sigmoid_of_mean():
  for mean, std in ((0.0, 1.0), (0.7, 1.0), (-1.0, 0.5)):
    t = np.asarray(timesteps.LogitNormalT(mean, std).sample(KEY, (N,)))
    assert abs(np.median(t) - 1.0 / (1.0 + math.exp(-mean))) < 0.01
  t = np.asarray(timesteps.LogitNormalT().sample(KEY, (N,)))
  assert abs(t.mean() - 0.5) < 0.005  # symmetric about 1/2 when mean = 0
  # logit(t) is N(mean, std^2)
  z = np.log(t / (1 - t))
  assert abs(z.std() - 1.0) < 0.02


def test_cosmap_matches_its_cdf():
  t = np.asarray(timesteps.CosMapT().sample(KEY, (N,)))
  assert abs(t.mean() - 0.5) < 0.005
  cdf = lambda x: 2 / math.pi * math.atan(x / (1 - x))
  assert abs(cdf(0.25) - 0.2048) < 1e-3
  for q in (0.1, 0.25, 0.4):
    assert abs((t < q).mean() - cdf(q)) < 0.005


def test_shift_formula_and_direction():
  base = timesteps.UniformT()
  t = base.sample(KEY, (1000,))
  shifted = timesteps.ShiftedT(base, 3.0).sample(KEY, (1000,))
  np.testing.assert_allclose(shifted, t / (t + 3.0 * (1 - t)), rtol=1e-6)
  assert bool(jnp.all(shifted <= t + 1e-7))  # s > 1 moves towards noise (t = 0)
  np.testing.assert_allclose(timesteps.ShiftedT(base, 1.0).sample(KEY, (1000,)), t, rtol=1e-6)
  ends = jnp.array([0.0, 1.0])
  np.testing.assert_allclose(ends / (ends + 3.0 * (1 - ends)), ends)


def test_make_t_sampler():
  assert timesteps.make_t_sampler("uniform") == timesteps.UniformT()
  assert timesteps.make_t_sampler("logit_normal", mean=0.5, std=2.0) == timesteps.LogitNormalT(
    0.5, 2.0)
  assert timesteps.make_t_sampler("cosmap") == timesteps.CosMapT()
  assert timesteps.make_t_sampler("uniform", shift=1.0) == timesteps.UniformT()
  shifted = timesteps.make_t_sampler("logit_normal", shift=3.0)
  assert shifted == timesteps.ShiftedT(timesteps.LogitNormalT(), 3.0)


def test_make_t_sampler_errors_name_the_choices():
  with pytest.raises(ValueError, match="logit_normal.*uniform|uniform.*logit_normal"):
    timesteps.make_t_sampler("beta")
  with pytest.raises(ValueError, match="unknown keyword.*sigma"):
    timesteps.make_t_sampler("logit_normal", sigma=1.0)
  with pytest.raises(ValueError, match="std"):
    timesteps.LogitNormalT(std=0.0)
  with pytest.raises(ValueError, match="shift"):
    timesteps.make_t_sampler("uniform", shift=-1.0)
