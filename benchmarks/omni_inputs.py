"""AudioGen-Omni at MMAudio S-16k's shapes: one 8 s input and the prepared velocity (no flags,
shared by omni_sample_speed.py and host_malloc.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowav import models
from flowav.nn import prepare_for_sampling

SECONDS = 8.0


def batch_for(cfg) -> dict[str, jax.Array]:
  """One 8 s clip at `cfg`'s rates: every condition but lyrics, random features."""
  rng = np.random.default_rng(0)
  t_a = int(round(SECONDS * cfg.audio_rate))
  t_v, t_s = int(round(SECONDS * cfg.video_rate)), int(round(SECONDS * cfg.sync_rate))

  def feats(n, d):
    return rng.standard_normal((1, n, d)).astype(np.float32)

  b = {"audio_latents": np.zeros((1, t_a, cfg.audio_channels), np.float32),
       "audio_mask": np.ones((1, t_a), bool),
       "video_features": feats(t_v, cfg.video_dim), "video_mask": np.ones((1, t_v), bool),
       "sync_features": feats(t_s, cfg.sync_dim), "sync_mask": np.ones((1, t_s), bool),
       "text_embeddings": feats(77, cfg.text_dim), "text_mask": np.ones((1, 77), bool),
       "start_s": np.zeros((1,), np.float32), "duration_s": np.full((1,), SECONDS, np.float32),
       "task_id": np.zeros((1,), np.int32)}
  return {k: jnp.asarray(v) for k, v in b.items()}


def random_model(dtype: str):
  """(graphdef, state) of `mmaudio_s` with random weights; bfloat16 matmul inputs unless float32."""
  spec = {"name": "audiogen_omni", "variant": "mmaudio_s",
          "dtype": None if dtype == "float32" else jnp.bfloat16}
  graphdef = nnx.split(nnx.eval_shape(lambda: models.build_model(spec, rngs=nnx.Rngs(0))))[0]
  state = jax.jit(lambda: nnx.split(models.build_model(spec, rngs=nnx.Rngs(0)))[1])()
  return graphdef, state


def preparer(graphdef, *, winograd: bool = True):
  """A jitted state -> state laid out by `prepare_for_sampling(winograd=)`, and a list that
  receives the prepared graphdef when it is first traced (merge the prepared state with it)."""
  prepared_graphdef = []

  @jax.jit
  def prepare(state):
    graph, prepared = nnx.split(prepare_for_sampling(nnx.merge(graphdef, state),
                                                     winograd=winograd))
    prepared_graphdef.append(graph)
    return prepared

  return prepare, prepared_graphdef


def prepared_velocity(dtype: str):
  """(jitted velocity, its arguments): one `mmaudio_s` evaluation at batch 1 (no CFG), random
  weights laid out as the sampler lays them out (`prepare_for_sampling`), conditions precomputed."""
  graphdef, state = random_model(dtype)
  batch = batch_for(models.model_config({"name": "audiogen_omni", "variant": "mmaudio_s"}))
  cond = jax.jit(lambda s, b: nnx.merge(graphdef, s).conditions(b))(state, batch)
  prepare, prepared_graphdef = preparer(graphdef)
  prepared = prepare(state)
  velocity = jax.jit(lambda p, x, t, c: nnx.merge(prepared_graphdef[0], p)(x, t, c))
  x = jax.random.normal(jax.random.key(0), batch["audio_latents"].shape)
  return velocity, (prepared, x, jnp.full((1,), 0.5), cond)
