r"""Ahead-of-time memory check: compile a `paper` train step for a target topology, no hardware.

For each rules table, the train step (forward, backward, optimizer, EMA; the config's grad_accum)
is lowered on abstract inputs that carry the table's shardings and compiled for the target; the
compiler's `memory_analysis()` gives the per-device bytes of arguments (train state + batch shard),
outputs, temporaries and generated code.

Targets:
  * `tpu:v5p-32` (or v5p-8/16/64/128, v5e-N, v4-N): compiled by libtpu for a TPU topology through
    `jax.experimental.topologies`, as MaxText's train_compile does. Needs libtpu
    (`pip install -e '.[tpu]'`, or TPU_LIBRARY_PATH=/path/libtpu.so); no TPU is touched.
  * `cpu:8`: the same program for N fake CPU devices. XLA:CPU plans memory differently from XLA:GPU,
    so the figure is labelled an *estimate* of one device's share on an N-GPU host (H100, 80 GB).

  python benchmarks/aot_memory.py --target=tpu:v5p-32
  python benchmarks/aot_memory.py --target=cpu:8 --config=configs/vssflow.py:paper
Writes benchmarks/results/aot_memory_<model>_<target>.json.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import sys
import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from jax.experimental import topologies
from ml_collections import config_flags

from flowav.parallel import mesh as mesh_lib
from flowav.parallel import rules as rules_lib
from flowav.parallel import sharding as shd
from flowav.train import runtime
from flowav.train import state as state_lib
from flowav.train import step as step_lib

_CONFIG = config_flags.DEFINE_config_file("config", "configs/vssflow.py:paper", "Experiment config.")
_TARGET = flags.DEFINE_string("target", "tpu:v5p-32", "tpu:<type>-<cores> or cpu:<devices>.")
_TABLES = flags.DEFINE_list("rules", None, "Rules tables to try (default: every table but "
                            "'replicated').")
_TENSOR = flags.DEFINE_integer("tensor", 2, "Size of the 'tensor' mesh axis for tables that use it.")
_OUT = flags.DEFINE_string("out", None, "Result JSON (default benchmarks/results/...).")

GIB = 2**30
# HBM per chip (bytes) and chips per "-N" (TPU names count TensorCores; v5e has one per chip).
TPU_HBM = {"v5p": 95 * 10**9, "v5e": 16 * 10**9, "v4": 32 * 10**9}
CORES_PER_CHIP = {"v5p": 2, "v5e": 1, "v4": 2}
H100_BYTES = 80 * 10**9
# Chips -> physical topology string for get_topology_desc (3-D tori for v4/v5p, 2-D for v5e).
TOPOLOGIES = {
  "v5p": {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4"},
  "v4": {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4"},
  "v5e": {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 256: "16x16"},
}


def parse_target(target: str) -> tuple[str, str, int]:
  """'tpu:v5p-32' -> ('tpu', 'v5p', 16 chips); 'cpu:8' -> ('cpu', 'cpu', 8)."""
  kind, _, spec = target.partition(":")
  if kind == "cpu":
    return "cpu", "cpu", int(spec or 8)
  if kind == "tpu":
    gen, _, cores = spec.partition("-")
    if gen not in TOPOLOGIES:
      raise ValueError(f"--target={target}: unknown TPU generation {gen!r}; known {sorted(TOPOLOGIES)}")
    chips = int(cores) // CORES_PER_CHIP[gen]
    if chips not in TOPOLOGIES[gen]:
      raise ValueError(f"--target={target}: no topology for {chips} chips; known "
                       f"{sorted(TOPOLOGIES[gen])}")
    return "tpu", gen, chips
  raise ValueError(f"--target={target}: expected tpu:<type>-<cores> or cpu:<devices>")


def compile_one(config, devices, table: str, mesh_sizes: dict[str, int]) -> dict:
  """Compiles the train step under `table` on `devices`; per-device bytes from memory_analysis."""
  config = config.copy_and_resolve_references()
  config.mesh.update(rules=table, **mesh_sizes)
  rt = runtime.make_runtime(config, devices=list(devices))
  batch = {k: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                   sharding=shd.batch_sharding(rt.mesh, rt.rules, len(s.shape)))
           for k, s in runtime.abstract_batch(config, int(config.data.batch_size)).items()}
  step = jax.jit(functools.partial(step_lib.train_step, graphdef=rt.graphdef, tx=rt.tx,
                                   cfg=step_lib.step_config(config)),
                 in_shardings=(rt.state_shardings, None), out_shardings=(rt.state_shardings, None),
                 donate_argnums=0)
  t0 = time.perf_counter()
  with jax.set_mesh(rt.mesh), shd.use_mesh(rt.mesh, rt.rules):
    compiled = step.lower(rt.abstract_state, batch).compile()
  seconds = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
            "temp_size_in_bytes", "generated_code_size_in_bytes")
  out = {f: int(getattr(mem, f)) for f in fields}
  # Donated state aliases its output buffers, so the peak is arguments + temporaries + the
  # outputs that do not alias an argument.
  peak = (out["argument_size_in_bytes"] + out["temp_size_in_bytes"] + out["output_size_in_bytes"]
          - out["alias_size_in_bytes"] + out["generated_code_size_in_bytes"])
  shard_bytes = sum(int(np.prod(a.sharding.shard_shape(a.shape))) * a.dtype.itemsize
                    for a in jax.tree.leaves(rt.abstract_state))
  return {"rules": table, "mesh": mesh_sizes, "compile_s": round(seconds, 1), **out,
          "train_state_bytes_per_device": shard_bytes,
          "peak_bytes_per_device": peak, "peak_gib_per_device": round(peak / GIB, 2)}


def main(argv):
  del argv
  kind, gen, n = parse_target(_TARGET.value)
  if kind == "cpu":  # read when the CPU backend starts (first jax.devices()), so not too late here
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={n}").strip()
  if kind == "tpu":
    try:
      topo = topologies.get_topology_desc(topology_name=f"{gen}:{TOPOLOGIES[gen][n]}",
                                          platform="tpu")
    except Exception as e:  # noqa: BLE001 - re-raised with the fix
      raise SystemExit(f"Cannot compile for {_TARGET.value}: libtpu is not usable here ({e}). "
                       "Install it with pip install -e '.[tpu]' (or set TPU_LIBRARY_PATH), or use "
                       "--target=cpu:8 for an estimate.") from e
    devices, capacity = list(topo.devices), TPU_HBM[gen]
  else:
    devices, capacity = jax.devices("cpu")[:n], H100_BYTES
  config = _CONFIG.value
  tables = _TABLES.value or [t for t in rules_lib.TABLES if t != "replicated"]
  params = state_lib.count_params(
    nnx.state(nnx.eval_shape(lambda: runtime.build_model(config)), nnx.Param))
  results = []
  for table in tables:
    sizes = mesh_lib.mesh_for_rules(table, len(devices), _TENSOR.value)
    print(f"compiling {config.model.name}/{config.model.variant} for {_TARGET.value} "
          f"rules={table} mesh={sizes} ...", flush=True)
    try:
      r = compile_one(config, devices, table, sizes)
      r["fits"] = r["peak_bytes_per_device"] <= capacity
    except Exception as e:  # noqa: BLE001 - a table that cannot shard this model is a result too
      r = {"rules": table, "mesh": sizes, "error": f"{type(e).__name__}: {e}"[:500]}
    print(json.dumps(r), flush=True)
    results.append(r)
  result = {
    "benchmark": "aot_memory", "model": config.model.name, "variant": config.model.variant,
    "params": params, "global_batch": int(config.data.batch_size),
    "grad_accum": int(config.optim.grad_accum), "clip_seconds": float(config.data.clip_seconds),
    "compute_dtype": config.train.compute_dtype,
    "target": _TARGET.value, "devices": len(devices),
    "device_kind": str(getattr(devices[0], "device_kind", devices[0].platform)),
    "capacity_bytes_per_device": capacity,
    "capacity_of": f"TPU {gen} HBM per chip" if kind == "tpu" else "H100 80 GB (per GPU)",
    "estimate": kind == "cpu",
    "note": ("compiled by libtpu for the TPU topology" if kind == "tpu" else
             "XLA:CPU memory plan on fake devices: an estimate of the per-GPU share, not XLA:GPU's"),
    "results": results,
    "machine": {"jax": jax.__version__, "python": sys.version.split()[0]},
    "date": time.strftime("%Y-%m-%d"),
  }
  out = pathlib.Path(_OUT.value or pathlib.Path(__file__).parent / "results" /
                     f"aot_memory_{config.model.name}_{config.model.variant}_"
                     f"{_TARGET.value.replace(':', '_')}.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
