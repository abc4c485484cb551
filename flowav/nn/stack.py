"""A stack of identical layers with stacked parameters, applied by a scan (optionally remat'ed).

One compiled layer body instead of N unrolled copies: faster compiles and, with `jax.checkpoint`,
less activation memory (stack_notes §6: scan+remat compiled in 0.8 s vs 5.8 s unrolled).

Layout: the layers live in one attribute `layers`, a single module of the layer's type whose every
variable has a leading axis of size `num_layers`, named 'layers' in its sharding names. A stack held
as `self.blocks` therefore has parameter paths `blocks/layers/<path inside one layer>`, e.g.
`blocks/layers/attn/q/kernel` with shape `[num_layers, ...]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.nnx as nnx
import jax

LAYER_AXIS = "layers"

REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
  "full": None,  # Save nothing: recompute the whole layer in the backward pass.
  "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
  "dots_saveable": jax.checkpoint_policies.dots_saveable,
  "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Stack(nnx.Module):
  """`num_layers` layers made by `make_layer(rngs)`, applied in order: `x = layer(x, *args, **kw)`.

  The layers must be pure (they return the new carry and update no variables). The carry `x` may
  be any pytree (e.g. a tuple of streams) as long as every layer returns the same structure.
  `args`/`kwargs` are the same for every layer. `remat_policy` is 'none' or a key of
  `REMAT_POLICIES`; `unroll` is passed to the scan. `num_layers=0` is the identity.
  """

  def __init__(self, make_layer: Callable[[nnx.Rngs], nnx.Module], num_layers: int, *,
               rngs: nnx.Rngs, remat_policy: str = "none", unroll: int = 1):
    if num_layers < 0:
      raise ValueError(f"Stack: num_layers={num_layers} must be >= 0")
    if remat_policy != "none" and remat_policy not in REMAT_POLICIES:
      raise ValueError(
        f"Stack: remat_policy={remat_policy!r} must be 'none' or one of {sorted(REMAT_POLICIES)}")
    if unroll < 1:
      raise ValueError(f"Stack: unroll={unroll} must be >= 1")
    self.num_layers = num_layers
    self.remat_policy = remat_policy
    self.unroll = unroll

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, axis_size=num_layers,
              transform_metadata={nnx.PARTITION_NAME: LAYER_AXIS})
    def create(layer_rngs: nnx.Rngs) -> nnx.Module:
      return make_layer(layer_rngs)

    self.layers = create(rngs)

  @property
  def unstacked(self) -> bool:
    return isinstance(self.layers, nnx.List)

  def unstack(self) -> None:
    """Holds the layers as a list of separate modules, applied by a Python loop (sampling only).

    XLA:CPU slices a bfloat16 stack in float32 (its float normalisation has no bfloat16
    dynamic-slice), so a scan over bfloat16 kernels copies every layer's weights at every call;
    separate per-layer arrays are read in place. Parameter paths become `layers/<i>/...`: use on a
    merged copy of the weights (`flowav.nn.inference.prepare_for_sampling`), never on a training
    state or checkpoint. Remat, which only matters for gradients, is dropped.
    """
    if self.unstacked:
      return
    graphdef, state = nnx.split(self.layers)
    self.layers = nnx.List([
      nnx.merge(graphdef, _drop_layer_axis(jax.tree.map(lambda a, i=i: a[i], state)))
      for i in range(self.num_layers)])

  def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
    if self.unstacked:
      for layer in self.layers:
        x = layer(x, *args, **kwargs)
      return x
    # A plain lax.scan over the split state (not nnx.scan), so a stack also runs when a jax
    # transform closes over an eagerly built model, e.g. `jax.jit(lambda x: model(x))`.
    graphdef, state = nnx.split(self.layers)

    def apply_layer(carry: Any, layer_state: Any) -> tuple[Any, None]:
      layer = nnx.merge(graphdef, _drop_layer_axis(layer_state))
      return layer(carry, *args, **kwargs), None

    if self.remat_policy != "none":
      # prevent_cse=False is safe (and faster) inside a scan, see jax.checkpoint's docs.
      apply_layer = jax.checkpoint(apply_layer, policy=REMAT_POLICIES[self.remat_policy],
                                   prevent_cse=False)
    out, _ = jax.lax.scan(apply_layer, x, state, length=self.num_layers, unroll=self.unroll)
    return out


def _drop_layer_axis(layer_state: Any) -> Any:
  """Removes the leading 'layers' name from the sharding names of one layer's sliced variables."""

  def drop(var: Any) -> Any:
    names = var.get_metadata().get("out_sharding") if isinstance(var, nnx.Variable) else None
    if names and names[0] == LAYER_AXIS:
      var.set_metadata(out_sharding=tuple(names[1:]))
    return var

  return jax.tree.map(drop, layer_state, is_leaf=lambda v: isinstance(v, nnx.Variable))
