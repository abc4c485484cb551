"""Inference-time preparation of a built model: weights laid out once for many solver steps.

Training keeps float32 parameters in scanned stacks: each `Dense`/`Conv1d` with a compute `dtype`
(bfloat16) casts its kernel at every call, and `Stack` slices each layer's weights out of the
stacked arrays at every call. A sampler calls the same weights at every solver step, so at
AudioGen-Omni's `mmaudio_s` shapes those memory-bound casts and copies took ~40 % of a bfloat16
velocity evaluation on XLA:CPU (benchmarks/omni_sample_speed.py). Doing them once, before the ODE
loop, leaves each layer computing the same values from the same inputs.
"""

from __future__ import annotations

import flax.nnx as nnx

from flowav.nn.conv import Conv1d
from flowav.nn.linear import Dense
from flowav.nn.stack import Stack


def cast_kernels_to_compute_dtype(model: nnx.Module) -> int:
  """Stores, in place, the kernel of every `Dense`/`Conv1d` that has a compute dtype in that dtype.

  Biases, norms and layers without a compute dtype keep their values and dtypes; each layer casts
  its kernel to the same dtype anyway, so its output is unchanged. Returns the number of kernels
  cast (0 for a float32 model).
  """
  count = 0
  for _, module in nnx.iter_graph(model):
    if not isinstance(module, (Dense, Conv1d)) or module.dtype is None:
      continue
    kernel = module.kernel.get_value()
    if kernel.dtype != module.dtype:
      module.kernel.set_value(kernel.astype(module.dtype))
      count += 1
  return count


def prepare_for_sampling(model: nnx.Module, *, winograd: bool = True) -> nnx.Module:
  """Unstacks every `Stack` into per-layer modules, lays out conv kernels for sampling
  (`Conv1d.lay_out_for_sampling`: Winograd taps for k3 unless `winograd=False`), then casts matmul
  kernels to compute dtypes.

  Mutates and returns `model`, which must be a merged copy used only for sampling (inside the
  jitted sampler, before the ODE loop, so XLA does the work once per sample): its parameter paths
  and dtypes no longer match a checkpoint, and gradients through it would not reach the float32
  parameters. Velocities agree with the unprepared model's to float rounding. Memory: the laid-
  out weights can be a second copy held beside the float32 parameters during the sample (half
  their size where cast to bfloat16; k3 conv kernels 4/3 of theirs).
  """
  stacks = [module for _, module in nnx.iter_graph(model) if isinstance(module, Stack)]
  for stack in stacks:
    stack.unstack()  # first, so each layer's kernel is sliced in float32 and cast in one pass
  for _, module in nnx.iter_graph(model):
    if isinstance(module, Conv1d):
      module.lay_out_for_sampling(winograd=winograd)
  cast_kernels_to_compute_dtype(model)
  return model
