"""Blocks under a mesh with logical rules: parameter and activation names resolve to shardings."""

from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav import nn
from flowav.parallel.mesh import make_mesh
from flowav.parallel.sharding import state_shardings, use_mesh

# A tensor/fsdp layout: every sharded name maps to a mesh axis, so a kernel that named the same
# logical axis twice, or a constraint with a wrong rank, would fail here.
RULES = (
  ("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("kv_heads", "tensor"),
  ("kv", None), ("head_dim", None), ("vocab", "tensor"), ("layers", None), ("norm", None),
  ("conv_window", None), ("channels", None), ("freq", None),
  ("act_batch", ("data", "fsdp")), ("act_len", None), ("act_embed", None),
  ("act_heads", "tensor"), ("act_kv_len", None), ("act_mlp", "tensor"),
)


class _Model(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.blocks = nn.Stack(_Block, 2, rngs=rngs, remat_policy="dots_saveable")
    self.joint = nn.JointAttention([16, 8], 2, 8, rngs=rngs)

  def __call__(self, x, ctx):
    a, c = self.joint([self.blocks(x, ctx), ctx])
    return a.sum() + c.sum()


class _Block(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.mod = nn.AdaLNModulation(16, 16, 2, zero_init=False, rngs=rngs)
    self.norm = nn.LayerNorm(16, use_scale=False, use_bias=False)
    self.attn = nn.Attention(16, 2, 8, kv_dim=8, num_kv_heads=1, qk_norm="rms", rngs=rngs)
    self.ff = nn.Mlp(16, 32, rngs=rngs)

  def __call__(self, x, ctx):
    shift, scale = self.mod(x.mean(axis=1))
    h = nn.modulate(self.norm(x), shift, scale)
    return x + self.ff(h + self.attn(h, ctx, rope=nn.RopeConfig(4), q_positions=jnp.arange(3.0)))


def test_model_builds_and_runs_sharded():
  devices = jax.devices()
  sizes = {"data": 2, "fsdp": 2, "tensor": 2} if len(devices) >= 8 else {
    "data": 1, "fsdp": 1, "tensor": 1}
  mesh = make_mesh(sizes, devices[:8] if len(devices) >= 8 else devices[:1])
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3, 16)), jnp.float32)
  ctx = jnp.asarray(np.random.default_rng(1).standard_normal((4, 5, 8)), jnp.float32)
  graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: _Model(nnx.Rngs(0))))
  # Outside use_mesh: inside it, nnx.get_partition_spec already applies the rules, and
  # state_shardings would then look mesh axes up as logical names (see the nn report).
  shardings = state_shardings(abstract_state, mesh, RULES)
  with use_mesh(mesh, RULES):
    @jax.jit
    def init():
      return nnx.state(_Model(nnx.Rngs(0)))

    state = jax.jit(init, out_shardings=shardings)()
    kernel = state["blocks"]["layers"]["ff"]["fc1"]["kernel"].get_value()
    if mesh.size == 8:
      assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")

    loss = jax.jit(lambda state, x, ctx: nnx.merge(graphdef, state)(x, ctx))(state, x, ctx)
  assert np.isfinite(loss)
