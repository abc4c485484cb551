r"""Training throughput: DiT blocks at MMAudio-S shapes, flowav (JAX) vs PyTorch, and `tiny`.

The block is adaLN-Zero DiT (Peebles & Xie 2023, §3.2: modulated LayerNorm → self-attention →
modulated LayerNorm → 4x GELU MLP, gated residuals), built from flowav.nn's Attention, Mlp,
LayerNorm and AdaLNModulation. Shapes: width 448 (7 heads x 64), 391 tokens, batch 2. One timed
iteration is forward + backward (gradients of every parameter and of the input) of mean(out²),
for one block and for a stack of --depth blocks applied by `flowav.nn.Stack` (a `lax.scan`, how
every flowav model runs its blocks).

Model FLOPs, counted analytically per block forward: 24·B·S·D² (q, k, v, out and the 4x MLP)
+ 4·B·S²·D (scores and weighted values) + 12·B·D² (adaLN); forward + backward = 3x forward.

Measured side by side in one process, for float32 and for bfloat16 matmul inputs (float32
parameters and accumulation; PyTorch: autocast to bfloat16):
  * jax/block, jax/stack: the jitted step on one device; jax/stack/unrolled: the stack with
    `unroll=depth` (the models' `scan_unroll`: one straight-line body, no while loop);
  * jax/stack/<rules> on --devices fake CPU devices (one mesh per rules table; the cores are
    shared, so this shows the cost of sharding, not a speed-up);
  * torch/block, torch/stack: the same blocks in PyTorch (`pip install -e '.[bench]'`);
  * paired_with_torch: jax/block vs torch/block and jax/stack/unrolled vs torch/stack again, in
    --paired_rounds alternating rounds, the median JAX / PyTorch ratio: the arms above run minutes
    apart, and this VM's speed drifts by up to ~40 % over minutes.
Also `tiny`: steps/s of the real VSSFlow train step (configs/vssflow.py:tiny, optimizer and EMA
included) on one device, FLOPs as counted by XLA's cost analysis.

  python benchmarks/train_speed.py [--devices=2] [--repeats=20] [--depth=4] [--paired_rounds=12]
                                   [--notcmalloc | --reuse_host_memory]
Like `python -m flowav.main`, it runs under tcmalloc by default (flowav.host_memory; both libraries
in the process use it). With glibc's defaults XLA:CPU page-faults each step's temporary buffer
(> 32 MiB here) in again: --notcmalloc measures that (results/train_speed_cpu_glibc.json),
--reuse_host_memory glibc's tuned settings (..._reuse_host_memory.json); benchmarks/host_malloc.py
compares the allocators side by side. Writes benchmarks/results/train_speed_<backend>.json with
the CPU model, flags and allocator (machine.host_malloc).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import machine  # this folder
import numpy as np
from absl import app, flags
from flax import nnx

from flowav import host_memory
from flowav import nn as fnn
from flowav.parallel import mesh as mesh_lib
from flowav.parallel import rules as rules_lib
from flowav.parallel import sharding as shd

_DEVICES = flags.DEFINE_integer("devices", 2, "Fake CPU devices for the rules-table runs.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed iterations (median reported).")
_OUT = flags.DEFINE_string("out", None, "Result JSON (default benchmarks/results/...).")
_DEPTH = flags.DEFINE_integer("depth", 4, "Blocks in the scanned stack arms.")
_PAIRED_ROUNDS = flags.DEFINE_integer(
  "paired_rounds", 12, "Alternating JAX / PyTorch rounds for the block and the (unrolled) stack "
  "(0: skip).")

WIDTH, HEADS, TOKENS, BATCH, MLP_RATIO = 448, 7, 391, 2, 4


class DiTBlock(nnx.Module):
  """adaLN-Zero DiT block: x `[B, S, D]`, c `[B, D]` -> `[B, S, D]`."""

  def __init__(self, width: int, heads: int, mlp_ratio: int, *, dtype=None, rngs: nnx.Rngs):
    self.norm1 = fnn.LayerNorm(width, use_scale=False, use_bias=False)
    self.attn = fnn.Attention(width, heads, width // heads, use_bias=True, dtype=dtype, rngs=rngs)
    self.norm2 = fnn.LayerNorm(width, use_scale=False, use_bias=False)
    self.mlp = fnn.Mlp(width, mlp_ratio * width, dtype=dtype, rngs=rngs)
    # Not zero-initialised: with zero gates the backward pass would skip most of its work.
    self.mod = fnn.AdaLNModulation(width, width, 6, zero_init=False, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
    shift1, scale1, gate1, shift2, scale2, gate2 = self.mod(c)
    x = x + fnn.gate(self.attn(fnn.modulate(self.norm1(x), shift1, scale1)), gate1)
    return x + fnn.gate(self.mlp(fnn.modulate(self.norm2(x), shift2, scale2)), gate2)


class DiTStack(nnx.Module):
  """`depth` DiTBlocks in one `flowav.nn.Stack` (stacked parameters, lax.scan)."""

  def __init__(self, depth: int, *, dtype=None, unroll: int = 1, rngs: nnx.Rngs):
    self.blocks = fnn.Stack(lambda r: DiTBlock(WIDTH, HEADS, MLP_RATIO, dtype=dtype, rngs=r),
                            depth, rngs=rngs, unroll=unroll)

  def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
    return self.blocks(x, c)


def model_flops(b: int = BATCH, s: int = TOKENS, d: int = WIDTH) -> float:
  """Forward + backward FLOPs of one block (see the module docstring)."""
  return 3.0 * (24 * b * s * d * d + 4 * b * s * s * d + 12 * b * d * d)


def _median_time(fn, repeats: int) -> float:
  fn()  # compile / warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def time_jax(dtype, devices: list, table: str | None, depth: int, unroll: int = 1) -> dict:
  """Median seconds of one jitted forward+backward, on `devices` under rules `table`.

  depth 0: one DiTBlock; depth > 0: a DiTStack of `depth` blocks, `unroll` per scan iteration.
  """
  model = (DiTBlock(WIDTH, HEADS, MLP_RATIO, dtype=dtype, rngs=nnx.Rngs(0)) if depth == 0 else
           DiTStack(depth, dtype=dtype, unroll=unroll, rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(model)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((BATCH, TOKENS, WIDTH)), jnp.float32)
  c = jnp.asarray(rng.standard_normal((BATCH, WIDTH)), jnp.float32)

  def loss(p, x, c):
    return jnp.mean(nnx.merge(graphdef, p)(x, c).astype(jnp.float32) ** 2)

  grad = jax.grad(loss, argnums=(0, 1))
  if table is None:
    step = jax.jit(grad)
    params, x, c = jax.device_put((params, x, c), devices[0])
    run = lambda: jax.block_until_ready(step(params, x, c))
    return {"step_s": _median_time(run, _REPEATS.value), "run": run}
  sizes = mesh_lib.mesh_for_rules(table, len(devices))
  mesh = mesh_lib.make_mesh(sizes, devices)
  rules = rules_lib.get_rules(table)
  shd.check_batch_divides(BATCH, mesh, rules)
  with shd.use_mesh(mesh, rules):
    p_sh = shd.state_shardings(params, mesh, rules)
    params = jax.device_put(params, p_sh)
    x = jax.device_put(x, shd.batch_sharding(mesh, rules, 3))
    c = jax.device_put(c, shd.batch_sharding(mesh, rules, 2))
    step = jax.jit(grad)
    run = lambda: jax.block_until_ready(step(params, x, c))
    return {"mesh": sizes, "step_s": _median_time(run, _REPEATS.value)}


def time_torch(bf16: bool, depth: int) -> dict | None:
  """The same block (depth 0) or `depth` blocks in PyTorch (None if torch is not installed)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  d, h = WIDTH, HEADS
  lin = lambda i, o: torch.nn.Linear(i, o)
  stack = torch.nn.ModuleList([
    torch.nn.ModuleDict({"q": lin(d, d), "k": lin(d, d), "v": lin(d, d), "o": lin(d, d),
                         "fc1": lin(d, 4 * d), "fc2": lin(4 * d, d), "mod": lin(d, 6 * d)})
    for _ in range(max(depth, 1))])
  x = torch.randn(BATCH, TOKENS, d, requires_grad=True)
  c = torch.randn(BATCH, d)

  def block(x, layers):
    s1, sc1, g1, s2, sc2, g2 = layers["mod"](F.silu(c))[:, None].chunk(6, dim=-1)
    y = F.layer_norm(x, (d,)) * (1 + sc1) + s1
    split = lambda t: t.view(BATCH, TOKENS, h, d // h).transpose(1, 2)
    a = F.scaled_dot_product_attention(split(layers["q"](y)), split(layers["k"](y)),
                                       split(layers["v"](y)))
    x = x + g1 * layers["o"](a.transpose(1, 2).reshape(BATCH, TOKENS, d))
    y = F.layer_norm(x, (d,)) * (1 + sc2) + s2
    return x + g2 * layers["fc2"](F.gelu(layers["fc1"](y), approximate="tanh"))

  def run():
    stack.zero_grad(set_to_none=True)
    x.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
      out = x
      for layers in stack:
        out = block(out, layers)
    (out.float() ** 2).mean().backward()

  return {"step_s": _median_time(run, _REPEATS.value), "torch": torch.__version__,
          "threads": torch.get_num_threads(), "run": run}


def paired_rounds(jax_run, torch_run, rounds: int, repeats: int = 5) -> dict:
  """JAX and PyTorch timed in alternating rounds (ABBA order), so the VM's drift over minutes
  (up to ~40 % here) hits both arms alike: per round the median of `repeats` steps each, then
  the median over rounds of the JAX / PyTorch time ratio (< 1: JAX is faster)."""
  jax_s, torch_s = [], []
  for r in range(rounds):
    order = ((jax_run, jax_s), (torch_run, torch_s))
    for fn, times in (order if r % 2 == 0 else order[::-1]):
      times.append(_median_time(fn, repeats))
  ratios = sorted(j / t for j, t in zip(jax_s, torch_s))
  return {"rounds": rounds, "repeats_per_round": repeats,
          "jax_ms": round(1e3 * statistics.median(jax_s), 1),
          "torch_ms": round(1e3 * statistics.median(torch_s), 1),
          "jax_over_torch_median": round(statistics.median(ratios), 3),
          "jax_over_torch_range": [round(ratios[0], 3), round(ratios[-1], 3)],
          "rounds_jax_faster": sum(x < 1 for x in ratios)}


def time_tiny(devices: list) -> dict:
  """Steps/s of the real VSSFlow `tiny` train step on one device (optimizer and EMA included)."""

  from configs import vssflow as vssflow_config  # pylint: disable=g-import-not-at-top
  from flowav.train import runtime  # pylint: disable=g-import-not-at-top
  from flowav.train import step as step_lib  # pylint: disable=g-import-not-at-top
  config = vssflow_config.get_config("tiny")
  rt = runtime.make_runtime(config, devices=devices[:1])
  state = rt.init_state()
  rng = np.random.default_rng(0)
  batch = {}
  for k, spec in runtime.abstract_batch(config, int(config.data.batch_size)).items():
    if spec.dtype == np.bool_:
      batch[k] = np.ones(spec.shape, bool)
    elif np.issubdtype(spec.dtype, np.floating):
      batch[k] = rng.standard_normal(spec.shape).astype(spec.dtype)
    else:
      batch[k] = np.ones(spec.shape, spec.dtype)
  step = jax.jit(functools.partial(step_lib.train_step, graphdef=rt.graphdef, tx=rt.tx,
                                   cfg=step_lib.step_config(config)), donate_argnums=0)
  compiled = step.lower(state, batch).compile()
  flops = float((compiled.cost_analysis() or {}).get("flops", 0.0))
  holder = [state]

  def run():
    holder[0], metrics = step(holder[0], batch)
    jax.block_until_ready(metrics)

  seconds = _median_time(run, max(_REPEATS.value, 50))
  return {"config": "configs/vssflow.py:tiny", "batch": int(config.data.batch_size),
          "step_s": seconds, "steps_per_s": round(1.0 / seconds, 1),
          "xla_flops_per_step": flops, "gflop_per_s_xla_counted": round(flops / seconds / 1e9, 2)}


def matmul_calibration(n: int = 2048) -> dict:
  """Float32 GFLOP/s of an n³ matmul in JAX and in torch now: the machine's state at this run
  (the VM's speed varies between days; both libraries' block numbers above scale with it)."""
  a = jnp.ones((n, n), jnp.float32)
  mm = jax.jit(lambda a: a @ a)
  out = {"jax_f32_gflop_per_s": round(2 * n**3 / _median_time(
    lambda: jax.block_until_ready(mm(a)), _REPEATS.value) / 1e9, 1)}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return out
  t = torch.ones(n, n)
  out["torch_f32_gflop_per_s"] = round(2 * n**3 / _median_time(lambda: t @ t, _REPEATS.value) / 1e9, 1)
  return out


def main(argv):
  del argv
  suffix = machine.set_host_malloc()  # before anything large is allocated
  devices = jax.devices("cpu")
  if len(devices) < _DEVICES.value:
    raise app.UsageError(f"--devices={_DEVICES.value} but jax sees {len(devices)}: run with "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={_DEVICES.value}")
  depth = _DEPTH.value
  rows = []
  for name, dtype in (("float32", None), ("bfloat16", jnp.bfloat16)):
    bf16 = name == "bfloat16"
    arms = {"jax/block": time_jax(dtype, devices[:1], None, 0) | {"blocks": 1},
            "jax/stack": time_jax(dtype, devices[:1], None, depth) | {"blocks": depth},
            "jax/stack/unrolled": (time_jax(dtype, devices[:1], None, depth, unroll=depth)
                                   | {"blocks": depth})}
    for table in rules_lib.TABLES:
      try:
        arms[f"jax/stack/{table}"] = (time_jax(dtype, devices[:_DEVICES.value], table, depth)
                                      | {"blocks": depth})
      except ValueError as e:  # e.g. a batch of 2 that a mesh cannot split
        arms[f"jax/stack/{table}"] = {"error": str(e)}
    for label, d in (("torch/block", 0), ("torch/stack", depth)):
      torch_arm = time_torch(bf16, d)
      if torch_arm is not None:
        arms[label] = torch_arm | {"blocks": max(d, 1)}
    paired = {}
    if "torch/block" in arms and _PAIRED_ROUNDS.value:
      for what, jax_arm in (("block", "jax/block"), ("stack", "jax/stack/unrolled")):
        paired[what] = paired_rounds(arms[jax_arm]["run"], arms[f"torch/{what}"]["run"],
                                     _PAIRED_ROUNDS.value)
    for arm in arms.values():
      arm.pop("run", None)
      if "step_s" in arm:
        arm["ms_per_block"] = round(1e3 * arm["step_s"] / arm["blocks"], 1)
        arm["gflop_per_s"] = round(model_flops() * arm["blocks"] / arm["step_s"] / 1e9, 1)
    print(name, json.dumps(arms), json.dumps(paired), flush=True)
    rows.append({"dtype": name, "arms": arms, "paired_with_torch": paired})
  tiny = time_tiny(devices)
  print("tiny", json.dumps(tiny), flush=True)
  result = {
    "benchmark": "dit_block_train_speed", "shapes": {"width": WIDTH, "heads": HEADS,
                                                     "tokens": TOKENS, "batch": BATCH,
                                                     "mlp_ratio": MLP_RATIO, "stack_depth": depth},
    "model_gflop_fwd_bwd_per_block": model_flops() / 1e9, "repeats": _REPEATS.value,
    "results": rows, "tiny_vssflow_train_step": tiny,
    "matmul_2048_calibration": matmul_calibration(),
    "machine": {"cpu": machine.cpu_model(), "cores": os.cpu_count(), "jax": jax.__version__,
                "python": sys.version.split()[0], "xla_flags": os.environ.get("XLA_FLAGS", ""),
                "host_malloc": host_memory.describe()},
    "date": time.strftime("%Y-%m-%d"),
  }
  out = pathlib.Path(_OUT.value or pathlib.Path(__file__).parent / "results" /
                     f"train_speed_{jax.default_backend()}"
                     f"{suffix}.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
