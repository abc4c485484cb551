"""Runs one model's train step on a fake 8-device CPU mesh under several layouts; writes JSON.

Run as a subprocess by tests/parallel/sharded_step_test.py, because the device count must be set
before jax starts (XLA_FLAGS=--xla_force_host_platform_device_count=8):

  python -m tests.parallel.sharded_run --model=vssflow --data=DIR --out=OUT.json \
      --case=init/fsdp:data=2,fsdp=4 --case=step/fsdp_tensor:data=2,fsdp=2,tensor=2

A case is `level/rules:mesh sizes[:model overrides]`, e.g. `step/fsdp:fsdp=8:width=60`. Level `layout`
records how the TrainState is planned to be sharded and which dims fell back to replication; `init`
adds the real arrays' shardings and per-device shard shapes; `step` adds how far one sharded train
step (loss, params, optimizer state, EMA) is from the same step on one device. The first step case
of a model (per overrides) initialises by the jitted sharded init; later ones place its values.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from flowav.parallel import sharding as shd  # noqa: E402
from flowav.train import loop, runtime  # noqa: E402
from flowav.train import step as step_lib  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


def tiny_config(model: str, data_dir: str, overrides: dict[str, Any]) -> Any:
  """The model's `tiny` config (configs/<model>.py), batch 8, no warmup, with EMA."""
  config = importlib.import_module(f"configs.{model}").get_config("tiny")
  assert config.model.name == model and config.model.variant == "tiny", config.model
  config.data.dir = data_dir
  config.data.batch_size = 8  # divides every batch layout of 8 devices
  config.optim.warmup_steps = 0  # the first step must move the parameters
  # Adam's first update is lr * g / (|g| + eps): with eps=1e-8, a 1e-8 rounding difference in a
  # near-zero gradient (summation order differs across layouts) moves a parameter by ~lr / 4.
  config.optim.eps = 1e-6
  config.train.ema_decay = 0.9
  for k, v in overrides.items():
    config.model[k] = type(config.model[k])(v)
  return config


def parse_case(case: str) -> tuple[str, dict[str, int], dict[str, str]]:
  parts = case.split(":")
  sizes = dict(kv.split("=") for kv in parts[1].split(",")) if len(parts) > 1 and parts[1] else {}
  over = dict(kv.split("=") for kv in parts[2].split(",")) if len(parts) > 2 else {}
  mesh = {"data": 1, "fsdp": 1, "tensor": 1, **{k: int(v) for k, v in sizes.items()}}
  return parts[0], mesh, over


def run_step(rt: runtime.Runtime, config: Any, state: Any, batch: dict) -> tuple[Any, dict]:
  """One train step jitted and called the way flowav/train/loop.py does."""
  cfg = step_lib.step_config(config)
  step = jax.jit(functools.partial(step_lib.train_step, graphdef=rt.graphdef, tx=rt.tx, cfg=cfg),
                 in_shardings=(rt.state_shardings, None), out_shardings=(rt.state_shardings, None),
                 donate_argnums=0)
  with jax.set_mesh(rt.mesh), shd.use_mesh(rt.mesh, rt.rules):
    new_state, metrics = step(state, loop.global_batch(batch, rt.mesh, rt.rules))
  return new_state, metrics


def leaves(tree: Any) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def distance(a: Any, b: Any) -> dict[str, float]:
  """Worst |a - b| / (ATOL + RTOL |b|) (<= 1 passes) and the largest absolute difference."""
  la, lb = leaves(a), leaves(b)
  assert len(la) == len(lb) and all(x.shape == y.shape for x, y in zip(la, lb))
  worst = max(float(np.max(np.abs(x - y) / (ATOL + RTOL * np.abs(y)), initial=0.0))
              for x, y in zip(la, lb))
  return {"worst": worst, "max_abs": max(float(np.max(np.abs(x - y), initial=0.0))
                                         for x, y in zip(la, lb))}


def layout_report(rt: runtime.Runtime, state: Any, planned: dict[str, list]) -> dict[str, Any]:
  """Whether the initialised arrays follow the plan, and how much of them each device holds."""
  params = jax.tree.leaves(state.params)
  shard_shapes = [tuple(p.addressable_shards[0].data.shape) for p in params]
  per_device = sum(int(np.prod(s)) for s in shard_shapes)
  return {
    "arrays_follow_plan": all(
      a.sharding.is_equivalent_to(s, a.ndim)
      for part in ("params", "opt_state", "ema")
      for a, s in zip(jax.tree.leaves(getattr(state, part)), planned[part], strict=True)),
    "finite": all(bool(np.isfinite(np.asarray(p)).all()) for p in params),
    "num_params": len(params),
    "num_split": sum(s != p.shape for s, p in zip(shard_shapes, params)),
    "per_device_fraction": per_device / sum(int(np.prod(p.shape)) for p in params),
  }


def host_copy(tree: Any) -> Any:
  return jax.tree.map(np.asarray, tree)


def run_case(level: str, case: str, args: argparse.Namespace, references: dict) -> dict[str, Any]:
  """level 'layout': planned shardings only; 'init': also real arrays; 'step': also one step."""
  t0 = time.time()
  rules, mesh, over = parse_case(case)
  config = tiny_config(args.model, args.data, over)
  config.mesh.update(rules=rules, **mesh)
  rt = runtime.make_runtime(config)
  planned = {part: jax.tree.leaves(getattr(rt.state_shardings, part))
             for part in ("params", "opt_state", "ema")}
  fallbacks: list[str] = []
  shd.state_shardings(rt.abstract_state.params, rt.mesh, rt.rules, fallbacks=fallbacks)
  out: dict[str, Any] = {
    "num_leaves": {k: len(v) for k, v in planned.items()},
    "all_named_on_mesh": all(isinstance(s, jax.sharding.NamedSharding) and s.mesh == rt.mesh
                             for v in planned.values() for s in v),
    "fallbacks": fallbacks,
  }
  key = json.dumps(over, sort_keys=True)
  if level == "step" and key in references:
    # A later layout of the same model starts from the first one's values, placed by device_put:
    # the jitted sharded init is checked by level 'init' and the first step case, and its compile
    # would cost each case ~30% more.
    state = jax.device_put(references[key]["initial"], rt.state_shardings)
    out.update(layout_report(rt, state, planned))
  elif level != "layout":
    state = rt.init_state()
    out.update(layout_report(rt, state, planned))
  if level == "step":
    if key not in references:
      # The same step on one device, from the same initial values (init is layout-independent:
      # the RNG is partitionable, and the 'init' levels check that the values are finite).
      config1 = tiny_config(args.model, args.data, over)
      config1.mesh.update(data=1, fsdp=1, tensor=1, rules="replicated")
      rt1 = runtime.make_runtime(config1, jax.devices()[:1])
      _, ds = loop.make_data(config1, config1.data.train_split, train=True)
      batch = ds[0]
      initial = host_copy(state)
      new1, metrics1 = run_step(rt1, config1, jax.device_put(initial, rt1.state_shardings), batch)
      references[key] = {"initial": initial, "batch": batch, "new": host_copy(new1),
                         "metrics": host_copy(metrics1)}
    ref = references[key]
    batch, new1, metrics1 = ref["batch"], ref["new"], ref["metrics"]
    new, metrics = run_step(rt, config, state, batch)
    out["after_step_follow_plan"] = all(
      a.sharding.is_equivalent_to(s, a.ndim)
      for a, s in zip(jax.tree.leaves(new.params), planned["params"]))
    out["loss"] = [float(metrics["loss"]), float(metrics1["loss"])]
    out["grad_norm"] = [float(metrics["grad_norm"]), float(metrics1["grad_norm"])]
    out["step"] = int(new.step)
    for part in ("params", "opt_state", "ema"):
      out[part] = distance(getattr(new, part), getattr(new1, part))
  out["seconds"] = time.time() - t0
  return out


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--model", required=True)
  ap.add_argument("--data", required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--case", action="append", default=[],
                  help="LEVEL/rules:mesh[:overrides], LEVEL one of layout, init, step")
  args = ap.parse_args()
  flags.FLAGS.mark_as_parsed()  # grain reads absl flags
  assert len(jax.devices()) == 8, jax.devices()
  results: dict[str, Any] = {}
  references: dict[str, Any] = {}
  for case in args.case:
    level, spec = case.split("/", 1)
    assert level in ("layout", "init", "step"), case
    results[case] = run_case(level, spec, args, references)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
