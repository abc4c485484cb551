r"""Sampling speed of VSSFlow at `paper` shapes on this machine (random weights; no training).

Measures, for one 10 s clip (T_a = 250 latent frames of 128 channels, 100 CLIP frames):
  * compile time of the velocity function and of the whole 25-step sampler (separately);
  * one velocity evaluation, batch 2 (conditional + unconditional rows, as CFG runs it), with the
    weights laid out as the sampler lays them out once per sample (`nn.prepare_for_sampling`) and,
    beside it, from the training layout;
  * a full 25-step Euler sampling with CFG (one jitted loop, weights laid out inside it).
Like `python -m flowav.main` it runs under tcmalloc by default (--notcmalloc: glibc, written to
..._glibc.json; --reuse_host_memory: ..._reuse_host_memory.json).
Writes benchmarks/results/sample_speed_<variant>_<backend>.json with the CPU model, XLA flags and
allocator.

  python benchmarks/sample_speed.py [--variant=paper] [--repeats=3] [--steps=25]
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
import numpy as np
from absl import app, flags
from flax import nnx
from machine import cpu_model, set_host_malloc, timed  # this folder

from flowav import host_memory, models
from flowav.flow import guidance, samplers
from flowav.nn import prepare_for_sampling

_VARIANT = flags.DEFINE_string("variant", "paper", "VSSFlow variant.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions (median reported).")
_STEPS = flags.DEFINE_integer("steps", 25, "Euler steps.")
_CFG = flags.DEFINE_float("cfg", 3.0, "Guidance scale (!= 1 runs both halves in one batch).")
_OUT = flags.DEFINE_string("out", None, "Result JSON (default benchmarks/results/...).")


def batch_for(cfg, seconds: float = 10.0) -> dict[str, np.ndarray]:
  t_a = int(round(seconds * cfg.audio_rate))
  t_v = int(round(seconds * cfg.video_rate))
  p = 100
  rng = np.random.default_rng(0)
  dur = np.zeros((1, p), np.int32)
  dur[0, :50] = t_a // 50
  dur[0, 49] += t_a - dur.sum()
  return {
    "audio_latents": np.zeros((1, t_a, cfg.audio_channels), np.float32),
    "audio_mask": np.ones((1, t_a), bool),
    "video_features": rng.standard_normal((1, t_v, cfg.video_dim)).astype(np.float32),
    "video_mask": np.ones((1, t_v), bool),
    "transcript_ids": np.where(np.arange(p) < 50, 5, 0)[None].astype(np.int32),
    "transcript_mask": (np.arange(p) < 50)[None],
    "phone_durations": dur,
    "speaker_embedding": rng.standard_normal((1, cfg.speaker_dim)).astype(np.float32),
    "speaker_mask": np.ones((1,), bool),
    "task_id": np.ones((1,), np.int32),
  }


def main(_):
  suffix = set_host_malloc()  # before JAX creates its backend
  cfg = models.model_config({"name": "vssflow", "variant": _VARIANT.value})
  model = nnx.eval_shape(lambda: models.build_model(
    {"name": "vssflow", "variant": _VARIANT.value}, rngs=nnx.Rngs(0)))
  graphdef, _ = nnx.split(model)

  @jax.jit
  def init():
    return nnx.split(models.build_model({"name": "vssflow", "variant": _VARIANT.value},
                                        rngs=nnx.Rngs(0)))[1]

  state = init()
  batch = {k: jnp.asarray(v) for k, v in batch_for(cfg).items()}
  scale = float(_CFG.value)

  def cfg_velocity(m, x, t, batch):
    cond = m.conditions(batch)
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), cond, m.null_conditions(cond))
    return m(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both)

  prepared_graphdef = []

  @jax.jit
  def prepare(state):  # what flowav.generate's sampler does once per sample
    graph, prepared_state = nnx.split(prepare_for_sampling(nnx.merge(graphdef, state)))
    prepared_graphdef.append(graph)
    return prepared_state

  prepared = prepare(state)

  @jax.jit
  def velocity(prepared, x, t, batch):
    return cfg_velocity(nnx.merge(prepared_graphdef[0], prepared), x, t, batch)

  @jax.jit
  def velocity_unprepared(state, x, t, batch):
    return cfg_velocity(nnx.merge(graphdef, state), x, t, batch)

  @jax.jit
  def sample(state, x0, batch):
    m = prepare_for_sampling(nnx.merge(graphdef, state))
    cond = m.conditions(batch)
    v = guidance.guided_velocity(lambda x, t, c: m(x, t, c), cond, m.null_conditions(cond), scale)
    return samplers.sample_ode(v, x0, method="euler", num_steps=_STEPS.value)[0]

  x = jax.random.normal(jax.random.key(0), batch["audio_latents"].shape)
  t = jnp.full((1,), 0.5)
  t0 = time.perf_counter()
  velocity.lower(prepared, x, t, batch).compile()
  compile_velocity = time.perf_counter() - t0
  t0 = time.perf_counter()
  sample.lower(state, x, batch).compile()
  compile_sample = time.perf_counter() - t0
  for fn, args in ((velocity, (prepared, x, t, batch)), (velocity_unprepared, (state, x, t, batch)),
                   (sample, (state, x, batch))):
    jax.block_until_ready(fn(*args))  # warm-up
  v_times = timed(velocity, prepared, x, t, batch, repeats=_REPEATS.value)
  u_times = timed(velocity_unprepared, state, x, t, batch, repeats=_REPEATS.value)
  s_times = timed(sample, state, x, batch, repeats=_REPEATS.value)
  n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(state))
  tokens = batch["audio_latents"].shape[1] + 1
  result = {
    "benchmark": "vssflow_sample_speed", "variant": _VARIANT.value,
    "clip_seconds": 10.0, "latent_frames": int(batch["audio_latents"].shape[1]),
    "params_total_incl_duration_predictor": n_params,
    "cfg_scale": scale, "euler_steps": _STEPS.value, "cfg_batch": 2 if scale != 1.0 else 1,
    "approx_gflop_per_velocity_eval": 2 * 2 * n_params * tokens / 1e9,
    "compile_velocity_s": compile_velocity, "compile_sampler_s": compile_sample,
    "velocity_eval_s_median": statistics.median(v_times), "velocity_eval_s_all": v_times,
    "velocity_eval_unprepared_s_median": statistics.median(u_times),
    "velocity_eval_unprepared_s_all": u_times,
    "sample_25_steps_s_median": statistics.median(s_times), "sample_s_all": s_times,
    "machine": {"host": socket.gethostname(), "cpu": cpu_model(), "cores": os.cpu_count(),
                "jax": jax.__version__, "backend": jax.default_backend(),
                "devices": [str(d) for d in jax.devices()],
                "xla_flags": os.environ.get("XLA_FLAGS", ""), "host_malloc": host_memory.describe()},
    "date": time.strftime("%Y-%m-%d"),
  }
  out = pathlib.Path(_OUT.value or pathlib.Path(__file__).parent / "results" /
                     f"sample_speed_{_VARIANT.value}_{jax.default_backend()}{suffix}.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  app.run(main)
