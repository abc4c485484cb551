r"""AudioGen-Omni sampling speed at MMAudio S-16k's shapes on this machine (random weights).

Issue "AudioGen-Omni" §5: batch 1, conditions precomputed (`conditions()` once, outside the
timed calls), no lyric frames, 8 s of audio (250 x 20 latents, 64 x 1024 video, 192 x 768 sync,
77 x 1024 text). For float32 and for bfloat16 matmul inputs (float32 accumulation) it times
  * one velocity evaluation (batch 1) with the weights laid out as the sampler lays them out once
    per sample (`flowav.nn.prepare_for_sampling`: unstacked layers, kernels in the compute
    dtype, k3 convs as Winograd F(2, 3)), alternating with the same layout but direct k3 convs
    (`winograd=False`), and the same evaluation from the training layout (casts in every call),
  * 25 Euler steps with CFG (conditional + null rows in one batch of 2), conditions precomputed,
  * the whole 8 s sample end to end as `flowav.generate` runs it (weights laid out, conditions
    from the batch with them, then the 25 steps),
and reports XLA's FLOP count of one evaluation, the FLOP/s reached beside a 2048^3 matmul's
measured in the same run (the machine's practical peak for that dtype), and the targets beside
MMAudio S-16k in PyTorch measured on this machine (the issue's numbers). Medians of `--repeats`.
Writes benchmarks/results/omni_sample_speed_<backend>.json with the CPU model and XLA flags.
Like `python -m flowav.main` it runs under tcmalloc by default; --notcmalloc (glibc) writes
..._glibc.json, --reuse_host_memory (glibc with flowav.host_memory's settings)
..._reuse_host_memory.json beside it.

  python benchmarks/omni_sample_speed.py [--repeats=5] [--dtypes=float32,bfloat16]
                                         [--notcmalloc | --reuse_host_memory]
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import statistics
import time

import jax
import jax.numpy as jnp
import machine  # this folder
import numpy as np
import omni_inputs  # this folder
from absl import app, flags
from flax import nnx
from omni_inputs import SECONDS, batch_for  # this folder

from flowav import host_memory, models
from flowav.flow import guidance, samplers
from flowav.nn import prepare_for_sampling

_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repetitions (median reported).")
_STEPS = flags.DEFINE_integer("steps", 25, "Euler steps.")
_CFG = flags.DEFINE_float("cfg", 4.5, "Guidance scale (spec §4).")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Matmul input dtypes to time.")
_OUT = flags.DEFINE_string("out", None, "Result JSON (default benchmarks/results/...).")

# Issue targets and MMAudio S-16k in PyTorch 2.13 on this machine (same shapes, 57.3 GFLOP/eval).
TARGETS = {"float32": {"velocity_eval_s": 0.15},
           "bfloat16": {"velocity_eval_s": 0.11, "sample_end_to_end_s": 5.0}}
PYTORCH_MMAUDIO_S = {"float32": {"velocity_eval_s": 0.22, "sample_25_cfg_s": [11.0, 12.0]},
                     "bfloat16": {"velocity_eval_s": 0.118, "sample_25_cfg_s": [5.7, 6.0]}}
# FLOPs of one evaluation at these shapes as counted for MMAudio S-16k (the 57.3 GFLOP).
# XLA's count for the prepared (unrolled) model is recorded beside it; the training layout's
# scanned stacks would be counted once per stack by cost_analysis.
REFERENCE_GFLOP_PER_EVAL = 57.3
NOTED_MATMUL_GFLOPS = {"float32": 480.0, "bfloat16": 950.0}  # large matmul, stack_notes.md


def matmul_gflops(dtype: str, n: int = 2048, repeats: int = 5) -> float:
  """Measured peak of this run: an n x n x n matmul with `dtype` inputs, float32 result."""
  dt = jnp.float32 if dtype == "float32" else jnp.bfloat16
  a = jax.random.normal(jax.random.key(1), (n, n)).astype(dt)
  f = jax.jit(lambda x, y: jax.lax.dot(x, y, preferred_element_type=jnp.float32))
  jax.block_until_ready(f(a, a))
  return 2 * n**3 / 1e9 / statistics.median(machine.timed(f, a, a, repeats=repeats))


def measure(dtype: str) -> dict:
  graphdef, state = omni_inputs.random_model(dtype)
  batch = batch_for(models.model_config({"name": "audiogen_omni", "variant": "mmaudio_s"}))
  scale = float(_CFG.value)

  @jax.jit
  def conditions(state, batch):
    m = nnx.merge(graphdef, state)
    cond = m.conditions(batch)
    return cond, m.null_conditions(cond)

  @jax.jit
  def velocity_unprepared(state, x, t, cond):
    return nnx.merge(graphdef, state)(x, t, cond)

  prepare, prepared_graphdef = omni_inputs.preparer(graphdef)

  def solve(m, x0, cond, null):
    prepare_for_sampling(m)  # once per sample, before the ODE loop (a no-op if done already)
    v = guidance.guided_velocity(lambda x, t, c: m(x, t, c), cond, null, scale)
    return samplers.sample_ode(v, x0, method="euler", num_steps=_STEPS.value)[0]

  @jax.jit
  def sample(state, x0, cond, null):
    return solve(nnx.merge(graphdef, state), x0, cond, null)

  @jax.jit
  def end_to_end(state, x0, batch):  # as flowav.generate: lay the weights out, then conditions
    m = prepare_for_sampling(nnx.merge(graphdef, state))
    cond = m.conditions(batch)
    return solve(m, x0, cond, m.null_conditions(cond))

  cond, null = conditions(state, batch)
  prepared = prepare(state)
  prepare_direct, direct_graphdef = omni_inputs.preparer(graphdef, winograd=False)
  prepared_direct = prepare_direct(state)

  @jax.jit
  def velocity(prepared, x, t, cond):
    return nnx.merge(prepared_graphdef[0], prepared)(x, t, cond)

  @jax.jit
  def velocity_direct(prepared, x, t, cond):
    return nnx.merge(direct_graphdef[0], prepared)(x, t, cond)

  x = jax.random.normal(jax.random.key(0), batch["audio_latents"].shape)
  t = jnp.full((1,), 0.5)
  t0 = time.perf_counter()
  compiled = velocity.lower(prepared, x, t, cond).compile()
  compile_velocity = time.perf_counter() - t0
  flops = float((compiled.cost_analysis() or {}).get("flops", float("nan")))
  t0 = time.perf_counter()
  sample.lower(state, x, cond, null).compile()
  compile_sample = time.perf_counter() - t0
  end_to_end.lower(state, x, batch).compile()
  for fn, args in ((velocity, (prepared, x, t, cond)), (sample, (state, x, cond, null)),
                   (end_to_end, (state, x, batch)), (velocity_unprepared, (state, x, t, cond)),
                   (velocity_direct, (prepared_direct, x, t, cond))):
    jax.block_until_ready(fn(*args))  # warm-up
  reps = _REPEATS.value
  # Winograd k3 convs vs direct, alternating calls: an A/B that the VM's drift does not bias.
  v_times, d_times = [], []
  for _ in range(4 * reps):
    v_times += machine.timed(velocity, prepared, x, t, cond, repeats=1)
    d_times += machine.timed(velocity_direct, prepared_direct, x, t, cond, repeats=1)
  u_times = machine.timed(velocity_unprepared, state, x, t, cond, repeats=reps)
  s_times = machine.timed(sample, state, x, cond, null, repeats=reps)
  e_times = machine.timed(end_to_end, state, x, batch, repeats=reps)
  v_med = statistics.median(v_times)
  peak = matmul_gflops(dtype)
  res = {
    "params": int(sum(np.prod(a.shape) for a in jax.tree.leaves(state))),
    "xla_gflop_per_velocity_eval": flops / 1e9,
    "compile_velocity_s": compile_velocity, "compile_sampler_s": compile_sample,
    "velocity_eval_s": v_med, "velocity_eval_s_all": v_times,
    "velocity_eval_direct_conv_s": statistics.median(d_times),
    "velocity_eval_direct_conv_s_all": d_times,
    "velocity_eval_unprepared_s": statistics.median(u_times),
    "velocity_eval_unprepared_s_all": u_times,
    "sample_25_cfg_s": statistics.median(s_times), "sample_25_cfg_s_all": s_times,
    "sample_end_to_end_s": statistics.median(e_times), "sample_end_to_end_s_all": e_times,
    "matmul_2048_gflops_per_s_measured": peak,
    "matmul_gflops_per_s_noted": NOTED_MATMUL_GFLOPS[dtype],
    "target": TARGETS[dtype], "pytorch_mmaudio_s": PYTORCH_MMAUDIO_S[dtype],
  }
  return derive(res)


def derive(res: dict) -> dict:
  """FLOP/s from the reference FLOP count (MMAudio's work per evaluation) and from XLA's count of
  what ran (fewer: Winograd convs, sync-rate AdaLN), its fraction of the measured matmul peak,
  targets met."""
  executed = res["xla_gflop_per_velocity_eval"] / res["velocity_eval_s"]
  res.update(reference_gflop_per_velocity_eval=REFERENCE_GFLOP_PER_EVAL,
             gflops_per_s_velocity=REFERENCE_GFLOP_PER_EVAL / res["velocity_eval_s"],
             executed_gflops_per_s_velocity=executed,
             fraction_of_measured_matmul_peak=executed / res["matmul_2048_gflops_per_s_measured"],
             meets_target={k: res[k] <= v for k, v in res["target"].items()})
  return res


def main(_):
  suffix = machine.set_host_malloc()  # before JAX creates its backend
  cfg = models.model_config({"name": "audiogen_omni", "variant": "mmaudio_s"})
  result = {
    "benchmark": "audiogen_omni_sample_speed", "variant": "mmaudio_s", "batch": 1,
    "clip_seconds": SECONDS, "euler_steps": _STEPS.value, "cfg_scale": float(_CFG.value),
    "shapes": {"audio": [int(round(SECONDS * cfg.audio_rate)), cfg.audio_channels],
               "video": [int(round(SECONDS * cfg.video_rate)), cfg.video_dim],
               "sync": [int(round(SECONDS * cfg.sync_rate)), cfg.sync_dim], "text": [77, cfg.text_dim],
               "width": cfg.width, "heads": cfg.num_heads, "joint_depth": cfg.joint_depth,
               "single_depth": cfg.single_depth},
    "dtypes": {d: measure(d) for d in _DTYPES.value},
    "machine": {"host": socket.gethostname(), "cpu": machine.cpu_model(),
                "cores": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend(),
                "xla_flags": os.environ.get("XLA_FLAGS", ""), "host_malloc": host_memory.describe()},
    "date": time.strftime("%Y-%m-%d"),
  }
  out = pathlib.Path(_OUT.value or pathlib.Path(__file__).parent / "results" /
                     f"omni_sample_speed_{jax.default_backend()}"
                     f"{suffix}.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_suffix(".tmp")
  tmp.write_text(json.dumps(result, indent=1) + "\n")
  tmp.replace(out)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  app.run(main)
