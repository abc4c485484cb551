"""ODE samplers: integrate dx/dt = v(x, t) from t0 = 0 (noise) to t1 = 1 (data).

Fixed-step methods on the uniform grid t_k = t0 + k h, h = (t1 - t0) / N, k = 0..N-1:

  euler     x_{k+1} = x_k + h v(x_k, t_k)                                 order 1, N evals
  midpoint  x_{k+1} = x_k + h v(x_k + h/2 v(x_k, t_k), t_k + h/2)         order 2, 2N evals
  heun      x~ = x_k + h v_k;  x_{k+1} = x_k + h/2 (v_k + v(x~, t_{k+1}))   order 2, 2N - 1 evals

Heun is the explicit trapezoid rule (predictor-corrector). Its LAST step is a plain Euler step,
as in Karras et al. 2022 (EDM, Alg. 1): the corrector would evaluate the model at exactly t = 1,
where the ideal field (x1 - x) / (1 - t) is singular for concentrated data and where logit-normal
training rarely looks; one Euler step adds a local error O(h^2), so the method stays order 2 and
saves one (CFG: doubled) forward pass. Flowley §4, SyncFlow §3 and AudioGen-Omni §4 use Euler.

`dopri5` is the adaptive Dormand-Prince 5(4) pair from diffrax with a PID step-size controller
(VSSFlow §4: dopri5, rtol = atol = 1e-5).

Each sampler is a pure function of (velocity_fn, x0) built from `lax.fori_loop` / diffrax's
while loop, so a caller jits the whole loop once (`make_sampler`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import diffrax
import jax
import jax.numpy as jnp

from flowav.flow import guidance

VelocityFn = guidance.VelocityFn
METHODS = ("euler", "midpoint", "heun", "dopri5")
FIXED_STEP_METHODS = ("euler", "midpoint", "heun")
_DOPRI5_EVALS_PER_STEP = 6  # 7 stages, the last reused as the next step's first (FSAL)


def _times(t: jax.Array | float, x: jax.Array) -> jax.Array:
  """The scalar time t as the [B] vector the velocity function takes."""
  return jnp.full((x.shape[0],), t, jnp.float32)


def _euler_step(f: VelocityFn, x: jax.Array, t: jax.Array, h: float) -> jax.Array:
  return x + h * f(x, _times(t, x))


def _midpoint_step(f: VelocityFn, x: jax.Array, t: jax.Array, h: float) -> jax.Array:
  x_half = x + (0.5 * h) * f(x, _times(t, x))
  return x + h * f(x_half, _times(t + 0.5 * h, x))


def _heun_step(f: VelocityFn, x: jax.Array, t: jax.Array, h: float) -> jax.Array:
  v = f(x, _times(t, x))
  v_end = f(x + h * v, _times(t + h, x))
  return x + (0.5 * h) * (v + v_end)


_STEPS = {"euler": _euler_step, "midpoint": _midpoint_step, "heun": _heun_step}


def num_function_evals(method: str, num_steps: int) -> int:
  """Velocity evaluations of a fixed-step method over `num_steps` steps (CFG doubles the rows,
  not the count)."""
  check_method(method)
  if method == "dopri5":
    raise ValueError("dopri5 is adaptive; its evaluation count is only known after solving")
  return {"euler": num_steps, "midpoint": 2 * num_steps, "heun": 2 * num_steps - 1}[method]


def check_method(method: str) -> None:
  if method not in METHODS:
    raise ValueError(f"Unknown ODE method {method!r} (config.sample.method); valid: {METHODS}")


def _integrate_fixed(f: VelocityFn, x0: jax.Array, method: str, num_steps: int, t0: float,
                     t1: float) -> jax.Array:
  h = (t1 - t0) / num_steps
  step = _STEPS[method]
  # Heun: N - 1 trapezoid steps, then one Euler step that never evaluates v at t1 (see module doc).
  looped = num_steps - 1 if method == "heun" else num_steps

  def body(k: jax.Array, x: jax.Array) -> jax.Array:
    return step(f, x, t0 + k.astype(jnp.float32) * h, h)

  x = jax.lax.fori_loop(0, looped, body, x0)
  if method == "heun":
    x = _euler_step(f, x, jnp.float32(t0 + looped * h), h)
  return x


def _integrate_dopri5(f: VelocityFn, x0: jax.Array, num_steps: int, rtol: float, atol: float,
                      max_steps: int, t0: float,
                      t1: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  term = diffrax.ODETerm(lambda t, y, args: f(y, _times(t, y)))
  sol = diffrax.diffeqsolve(
    term, diffrax.Dopri5(), t0=t0, t1=t1, dt0=(t1 - t0) / num_steps, y0=x0,
    stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps,
    saveat=diffrax.SaveAt(t1=True))
  steps = jnp.asarray(sol.stats["num_steps"], jnp.int32)  # accepted + rejected
  info = {
    "num_function_evals": 1 + _DOPRI5_EVALS_PER_STEP * steps,
    "num_steps": steps,
    "num_rejected_steps": jnp.asarray(sol.stats["num_rejected_steps"], jnp.int32),
  }
  return sol.ys[-1], info


def sample_ode(velocity_fn: VelocityFn, x0: jax.Array, *, method: str = "euler",
               num_steps: int = 25, rtol: float = 1e-5, atol: float = 1e-5,
               max_steps: int = 4096, t0: float = 0.0,
               t1: float = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Integrates dx/dt = velocity_fn(x, t) from x(t0) = x0 to t1.

  Args:
    velocity_fn: (x [B, ...], t [B]) -> v [B, ...]; t holds B equal values.
    x0: [B, ...] the state at t0 (noise for t0 = 0).
    method: 'euler', 'midpoint', 'heun' (fixed `num_steps`) or 'dopri5' (adaptive).
    num_steps: fixed-step count; for dopri5 it only sets the first trial step (t1 - t0) / N.
    rtol, atol: dopri5 error tolerances.
    max_steps: dopri5 step budget (accepted + rejected); exceeding it raises at run time.
    t0, t1: integration interval; t1 < t0 integrates backwards (data -> noise).
  Returns:
    (x1 [B, ...], info) with info['num_function_evals'] and info['num_steps'] (int32 scalars;
    dopri5 adds 'num_rejected_steps').
  Raises:
    ValueError: an unknown method or a non-positive step count / tolerance, or t0 == t1.
  """
  check_method(method)
  if int(num_steps) < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  t0, t1 = float(t0), float(t1)
  if t0 == t1:
    raise ValueError(f"t0 and t1 must differ, got t0 = t1 = {t0}")
  if method == "dopri5":
    if not (rtol > 0 and atol > 0):
      raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    if int(max_steps) < 1:
      raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    return _integrate_dopri5(velocity_fn, x0, int(num_steps), float(rtol), float(atol),
                             int(max_steps), t0, t1)
  x1 = _integrate_fixed(velocity_fn, x0, method, int(num_steps), t0, t1)
  info = {"num_function_evals": jnp.asarray(num_function_evals(method, int(num_steps)), jnp.int32),
          "num_steps": jnp.asarray(int(num_steps), jnp.int32)}
  return x1, info


def make_sampler(apply_fn: guidance.ApplyFn, *, method: str = "euler", num_steps: int = 25,
                 cfg_scale: float = 1.0, rtol: float = 1e-5, atol: float = 1e-5,
                 max_steps: int = 4096) -> Callable[[jax.Array, Any, Any], jax.Array]:
  """One jax.jit-compiled function (x0, cond, null_cond) -> x1 of the whole guided sampling loop.

  method, num_steps, cfg_scale and the tolerances are static (closed over), so the function
  compiles once per input shape and reruns without retracing. With cfg_scale == 1, null_cond is
  accepted but unused.

  Args:
    apply_fn: apply_fn(x [B, ...], t [B], cond) -> v [B, ...].
    method, num_steps, rtol, atol, max_steps: as in `sample_ode`.
    cfg_scale: static guidance scale w (see `guidance.guided_velocity`).
  Returns:
    sample(x0 [B, ...], cond, null_cond) -> x1 [B, ...].
  """
  check_method(method)
  if int(num_steps) < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  scale = guidance.static_scale(cfg_scale, "cfg_scale")

  @jax.jit
  def sample(x0: jax.Array, cond: Any, null_cond: Any) -> jax.Array:
    velocity = guidance.guided_velocity(apply_fn, cond, null_cond, scale)
    x1, _ = sample_ode(velocity, x0, method=method, num_steps=num_steps, rtol=rtol, atol=atol,
                       max_steps=max_steps)
    return x1

  return sample
