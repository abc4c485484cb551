"""Flow-matching math: the rectified-flow path, time samplers, masked losses, classifier-free
guidance, ODE samplers and minibatch OT pairing.

Convention: t = 0 is noise x0 ~ N(0, I), t = 1 is data x1; x_t = t x1 + (1 - t) x0; the model
regresses u = x1 - x0 and sampling integrates dx/dt = v(x, t) from t = 0 to 1.
"""

from flowav.flow.guidance import cfg_combine, guided_velocity, static_scale
from flowav.flow.loss import masked_direction_loss, masked_mse
from flowav.flow.ot import ot_permutation, pair_noise_with_data, pairwise_sq_dists
from flowav.flow.paths import RectifiedFlow, broadcast_time
from flowav.flow.samplers import (
  FIXED_STEP_METHODS,
  METHODS,
  make_sampler,
  num_function_evals,
  sample_ode,
)
from flowav.flow.timesteps import CosMapT, LogitNormalT, ShiftedT, UniformT, make_t_sampler

__all__ = [
  "RectifiedFlow", "broadcast_time",
  "UniformT", "LogitNormalT", "CosMapT", "ShiftedT", "make_t_sampler",
  "masked_mse", "masked_direction_loss",
  "cfg_combine", "guided_velocity", "static_scale",
  "sample_ode", "make_sampler", "num_function_evals", "METHODS", "FIXED_STEP_METHODS",
  "ot_permutation", "pair_noise_with_data", "pairwise_sq_dists",
]
