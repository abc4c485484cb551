"""ODE samplers against ODEs with known solutions; evaluation counts; the jitted sampler."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.flow import guidance, samplers

A = 0.8
X0 = jnp.array([[1.0, -0.5], [0.25, 2.0]])


def linear(x, t):  # dx/dt = a x  ->  x(1) = x0 e^a
  return A * x


def cosine(x, t):  # dx/dt = cos t  ->  x(1) = x0 + sin 1
  return jnp.broadcast_to(jnp.cos(t)[:, None], x.shape)


CASES = [(linear, X0 * math.exp(A)), (cosine, X0 + math.sin(1.0))]


def _error(f, exact, method, n):
  x1, _ = jax.jit(lambda x: samplers.sample_ode(f, x, method=method, num_steps=n))(X0)
  return float(jnp.max(jnp.abs(x1 - exact)))


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("heun", 2)])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fixed_step_convergence_order(method, order, case):
  f, exact = CASES[case]
  errors = [_error(f, exact, method, n) for n in (8, 16, 32)]
  measured = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
  for p in measured:
    assert order - 0.25 < p < order + 0.25, (errors, measured)


def test_dopri5_hits_the_exact_solution_and_counts_evals():
  for f, exact in CASES:
    calls = []

    def counted(x, t, f=f, calls=calls):
      jax.debug.callback(lambda: calls.append(1))
      return f(x, t)

    x1, info = jax.jit(lambda x: samplers.sample_ode(counted, x, method="dopri5"))(X0)
    jax.block_until_ready(x1)
    np.testing.assert_allclose(x1, exact, atol=1e-4)
    assert int(info["num_function_evals"]) == len(calls) == 1 + 6 * int(info["num_steps"])


def test_backward_integration_inverts_forward():
  x1, _ = samplers.sample_ode(linear, X0, method="dopri5", t0=1.0, t1=0.0)
  np.testing.assert_allclose(x1, X0 * math.exp(-A), atol=1e-4)
  x1, _ = samplers.sample_ode(linear, X0, method="heun", num_steps=64, t0=1.0, t1=0.0)
  np.testing.assert_allclose(x1, X0 * math.exp(-A), atol=1e-3)


@pytest.mark.parametrize("method,evals", [("euler", 7), ("midpoint", 14), ("heun", 13)])
def test_fixed_step_eval_counts_and_grid(method, evals):
  calls, times = [], []

  def counted(x, t):
    jax.debug.callback(lambda t: (calls.append(1), times.append(float(t[0]))), t)
    return jnp.ones_like(x)

  x1, info = jax.jit(lambda x: samplers.sample_ode(counted, x, method=method, num_steps=7))(X0)
  jax.block_until_ready(x1)
  assert int(info["num_function_evals"]) == len(calls) == evals
  assert samplers.num_function_evals(method, 7) == evals
  np.testing.assert_allclose(x1, X0 + 1.0, atol=1e-6)  # constant field: exact for every method
  assert min(times) == 0.0 and max(times) < 1.0  # never evaluates at t = 1


def test_euler_visits_the_uniform_grid():
  n = 10
  x1, _ = samplers.sample_ode(lambda x, t: jnp.broadcast_to(t[:, None], x.shape), X0,
                              num_steps=n)
  # x1 = x0 + sum_k h t_k with t_k = k / n
  np.testing.assert_allclose(x1, X0 + (1 - 1 / n) / 2, atol=1e-6)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun"])
def test_point_mass_flow_lands_on_the_data_point(method):
  """The exact rectified-flow field for data = a point x*: v(x, t) = (x* - x) / (1 - t)."""
  target = jnp.array([[3.0, -2.0], [0.5, 1.0]])
  field = lambda x, t: (target - x) / (1.0 - t)[:, None]
  noise = jax.random.normal(jax.random.key(0), target.shape)
  x1, _ = samplers.sample_ode(field, noise, method=method, num_steps=5)
  np.testing.assert_allclose(x1, target, atol=1e-5)


def test_bad_arguments_are_rejected():
  with pytest.raises(ValueError, match="valid.*euler.*dopri5"):
    samplers.sample_ode(linear, X0, method="rk4")
  with pytest.raises(ValueError, match="num_steps"):
    samplers.sample_ode(linear, X0, num_steps=0)
  with pytest.raises(ValueError, match="rtol"):
    samplers.sample_ode(linear, X0, method="dopri5", rtol=0.0)
  with pytest.raises(ValueError, match="t0 and t1"):
    samplers.sample_ode(linear, X0, t0=0.5, t1=0.5)
  with pytest.raises(ValueError, match="valid"):
    samplers.make_sampler(lambda x, t, c: x, method="ddim")


def _model(traces):
  def apply_fn(x, t, cond):
    traces.append(x.shape[0])
    return cond["scale"] * x + t[:, None]
  return apply_fn


def test_make_sampler_compiles_once_per_shape():
  traces = []
  sample = samplers.make_sampler(_model(traces), method="heun", num_steps=4, cfg_scale=2.0)
  cond, null = {"scale": jnp.full((2, 1), 0.5)}, {"scale": jnp.zeros((2, 1))}
  first = sample(X0, cond, null)
  n = len(traces)
  assert n >= 1 and set(traces) == {4}  # guided: one 2B batch per evaluation
  second = sample(X0 + 1.0, {"scale": jnp.full((2, 1), 0.1)}, null)
  assert len(traces) == n  # same shapes: no retrace
  assert not np.allclose(first, second)
  sample(jnp.zeros((3, 2)), {"scale": jnp.ones((3, 1))}, {"scale": jnp.zeros((3, 1))})
  assert len(traces) > n  # a new shape compiles anew


def test_make_sampler_matches_guided_sample_ode():
  for method, scale in (("euler", 1.0), ("midpoint", 3.0), ("dopri5", 1.5)):
    traces = []
    apply_fn = _model(traces)
    cond, null = {"scale": jnp.full((2, 1), 0.5)}, {"scale": jnp.zeros((2, 1))}
    got = samplers.make_sampler(apply_fn, method=method, num_steps=6, cfg_scale=scale)(
      X0, cond, null)
    velocity = guidance.guided_velocity(apply_fn, cond, null, scale)
    want, _ = samplers.sample_ode(velocity, X0, method=method, num_steps=6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if scale == 1.0:
      assert set(traces) == {2}  # unguided: batch B only
