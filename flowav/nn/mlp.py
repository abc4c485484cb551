"""Feed-forward blocks: a two-layer MLP and the fused-projection SwiGLU."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from flowav.nn.linear import Dense
from flowav.parallel.sharding import constrain

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),
  "silu": jax.nn.silu,
  "relu": jax.nn.relu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in ACTIVATIONS:
    raise ValueError(f"activation={name!r} must be one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def _constrain_hidden(h: jax.Array) -> jax.Array:
  return constrain(h, ("act_batch", "act_len", "act_mlp")) if h.ndim == 3 else h


class Mlp(nnx.Module):
  """`fc2(act(fc1(x)))`: `[..., dim] -> [..., out_dim]`.

  Params: `fc1` Dense(dim -> hidden, ('embed','mlp')),
  `fc2` Dense(hidden -> out_dim, ('mlp','embed')).
  """

  def __init__(self, dim: int, hidden: int, *, out_dim: int | None = None,
               activation: str = "gelu_tanh", use_bias: bool = True, dtype: Any = None,
               rngs: nnx.Rngs):
    get_activation(activation)  # Fails early on an unknown name.
    self.activation = activation
    self.fc1 = Dense(dim, hidden, axes=("embed", "mlp"), use_bias=use_bias, dtype=dtype, rngs=rngs)
    self.fc2 = Dense(hidden, dim if out_dim is None else out_dim, axes=("mlp", "embed"),
                     use_bias=use_bias, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(_constrain_hidden(get_activation(self.activation)(self.fc1(x))))


class SwiGLU(nnx.Module):
  """diffusers-style SwiGLU (vssflow §2.2): `[a, b] = split(proj(x), 2)`, `y = out(a * silu(b))`.

  Params: `proj` Dense(dim -> 2*hidden, ('embed','mlp')), `out` Dense(hidden -> out_dim,
  ('mlp','embed')). dim=1536, hidden=6144 gives 18,886,656 + 9,438,720 parameters (vssflow §2.6).
  """

  def __init__(self, dim: int, hidden: int, *, out_dim: int | None = None, use_bias: bool = True,
               dtype: Any = None, rngs: nnx.Rngs):
    self.proj = Dense(dim, 2 * hidden, axes=("embed", "mlp"), use_bias=use_bias, dtype=dtype,
                      rngs=rngs)
    self.out = Dense(hidden, dim if out_dim is None else out_dim, axes=("mlp", "embed"),
                     use_bias=use_bias, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    a, b = jnp.split(self.proj(x), 2, axis=-1)
    return self.out(_constrain_hidden(a * jax.nn.silu(b)))
