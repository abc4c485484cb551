r"""Host allocators side by side: glibc, glibc with flowav.host_memory's settings, tcmalloc.

The allocator is chosen per process, so each round starts one child process per allocator, in
turn (interleaved rounds spread the VM's drift over all three). Each child times, as the other
benchmarks do:
  * block_f32_ms / block_bf16_ms: forward + backward of the MMAudio-S-shaped DiT block
    (benchmarks/train_speed.py's `jax/block`), and torch_* the same block in PyTorch when installed;
  * tiny_steps_per_s: the VSSFlow `tiny` train step (optimizer and EMA included);
  * omni_f32_s / omni_bf16_s: one AudioGen-Omni `mmaudio_s` velocity evaluation, prepared for
    sampling (benchmarks/omni_sample_speed.py's `velocity_eval_s`).
Medians over rounds go to benchmarks/results/host_malloc_<backend>.json with the machine.

  python benchmarks/host_malloc.py [--rounds=2] [--repeats=20]
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import machine  # this folder
import omni_inputs  # this folder
import train_speed  # this folder (and its flags: --repeats)
from absl import app, flags

from flowav import host_memory

_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds of one child process per allocator.")
_CHILD = flags.DEFINE_enum("child", None, ["glibc", "glibc_reuse", "tcmalloc"],
                           "Internal: time everything under this allocator and print JSON.")
_RESULT = flags.DEFINE_string("result_json", None, "Result JSON (default benchmarks/results/...).")

ALLOCATORS = ("glibc", "glibc_reuse", "tcmalloc")


def omni_velocity_s(dtype: str, repeats: int) -> float:
  """Median seconds of one prepared mmaudio_s velocity evaluation, batch 1 (no CFG)."""
  velocity, args = omni_inputs.prepared_velocity(dtype)
  for _ in range(3):
    jax.block_until_ready(velocity(*args))
  return statistics.median(machine.timed(velocity, *args, repeats=repeats))


def child(allocator: str) -> dict:
  repeats = flags.FLAGS.repeats
  devices = jax.devices("cpu")[:1]
  out = {"host_malloc": host_memory.describe()}
  for name, dtype in (("f32", None), ("bf16", jnp.bfloat16)):
    out[f"block_{name}_ms"] = 1e3 * train_speed.time_jax(dtype, devices, None, 0)["step_s"]
    torch_arm = train_speed.time_torch(name == "bf16", 0)
    if torch_arm is not None:
      out[f"torch_block_{name}_ms"] = 1e3 * torch_arm["step_s"]
  out["tiny_steps_per_s"] = train_speed.time_tiny(devices)["steps_per_s"]
  out["omni_f32_s"] = omni_velocity_s("float32", repeats)
  out["omni_bf16_s"] = omni_velocity_s("bfloat16", repeats)
  expected = {"glibc": "glibc defaults", "glibc_reuse": "glibc mallopt", "tcmalloc": "tcmalloc"}
  if not out["host_malloc"].startswith(expected[allocator]):
    raise RuntimeError(f"asked for {allocator}, running under {out['host_malloc']}")
  return out


def run_child(allocator: str, repeats: int) -> dict:
  env = {k: v for k, v in os.environ.items() if k != host_memory.TCMALLOC_ENV}
  if allocator != "tcmalloc":  # a clean glibc process, whatever this one was started with
    env.pop("LD_PRELOAD", None)
  args = [sys.executable, __file__, f"--child={allocator}", f"--repeats={repeats}"]
  if allocator == "glibc":
    args.append("--notcmalloc")
  elif allocator == "glibc_reuse":
    args.append("--reuse_host_memory")
  proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"{allocator} child failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(_):
  if _CHILD.value:
    machine.set_host_malloc()  # may re-execute this child under tcmalloc
    print(json.dumps(child(_CHILD.value)), flush=True)
    return
  if host_memory.tcmalloc_library() is None:
    raise app.UsageError("tcmalloc is not installed: apt-get install libtcmalloc-minimal4")
  runs: dict[str, list[dict]] = {a: [] for a in ALLOCATORS}
  for r in range(_ROUNDS.value):
    for allocator in ALLOCATORS:
      runs[allocator].append(run_child(allocator, flags.FLAGS.repeats))
      print(f"round {r} {allocator}: {json.dumps(runs[allocator][-1])}", flush=True)
  keys = [k for k in runs["glibc"][0] if k != "host_malloc"]
  result = {
    "benchmark": "host_malloc", "rounds": _ROUNDS.value, "repeats": flags.FLAGS.repeats,
    "median": {a: {k: statistics.median(run[k] for run in runs[a]) for k in keys}
               for a in ALLOCATORS},
    "runs": runs,
    "machine": {"host": socket.gethostname(), "cpu": machine.cpu_model(), "cores": os.cpu_count(),
                "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                "tcmalloc": host_memory.tcmalloc_library()},
    "date": time.strftime("%Y-%m-%d"),
  }
  out = pathlib.Path(_RESULT.value or pathlib.Path(__file__).parent / "results" /
                     f"host_malloc_{jax.default_backend()}.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(json.dumps(result["median"], indent=1))
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
