"""Every registered tiny model on a fake 8-device CPU mesh, under every rules table.

The device count must be set before jax starts, so `sharded_run.py` does the work in a subprocess
(one per model and tier) and writes JSON that these tests check. The fast tier checks the planned
shardings of every table on three meshes for every model, and for the foundation model (VSSFlow)
real sharded arrays under fsdp; the slow tier runs those for the other models (AudioGen-Omni's
compiles cost ~2 min on 2 cores), and for every model a train step under every rules table
against the single-device step (a step costs ~1 min of compiles, so none is in the fast tier; the
foundation model on every distinct layout) and one whose dims do not divide the mesh.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys

import pytest

from flowav import models
from flowav.parallel import rules as rules_lib
from tests.conftest import REPO

MODELS = sorted(models.MODELS)
TABLES = sorted(rules_lib.TABLES)
MESHES = ["data=8", "data=2,fsdp=4", "data=2,fsdp=2,tensor=2"]
FAST_INIT = "fsdp:data=2,fsdp=4"
# The step of every model under every table, on a mesh that uses all three axes where the table
# does, plus fsdp alone split 4 ways and tensor=4 > KV heads.
STEPS_EVERY_MODEL = [
  "replicated:data=8", "data_parallel:data=2,fsdp=2,tensor=2", "fsdp:data=2,fsdp=4",
  "fsdp_tensor:data=2,fsdp=2,tensor=2", "fsdp_tensor:fsdp=2,tensor=4"]
# And for the foundation model, every other mesh where a table's layout differs from the cases
# above (e.g. fsdp rules on data=8 hold every parameter whole, the same layout as data_parallel).
# The rules act on logical names shared by all models, so the other models skip these (each step
# case costs ~1 min of compiles on 2 cores).
STEPS_FOUNDATION_ONLY = [
  "data_parallel:data=8", "fsdp:data=2,fsdp=2,tensor=2", "fsdp_tensor:data=2,fsdp=4"]
FOUNDATION = "vssflow"
# Per model, a tiny variant whose dims do not divide the mesh (vssflow: width 50 on fsdp=4, and a
# single 12-wide KV head whose activations cannot split over tensor=2); they must stay whole.
INDIVISIBLE = {
  "vssflow": "fsdp_tensor:fsdp=4,tensor=2:width=50,num_kv_heads=1,head_dim=12,ff_hidden=100",
  # audiogen_omni: width 50 on fsdp=4 and 5 heads on tensor=2.
  "audiogen_omni": "fsdp_tensor:fsdp=4,tensor=2:width=50,num_heads=5"}

LAYOUT_CASES = [f"layout/{t}:{m}" for t in TABLES for m in MESHES]
INIT_CASE = f"init/{FAST_INIT}"  # real sharded arrays from `init_state`
# Models whose INIT_CASE runs in the fast tier; the others' runs in the slow tier.
FAST_INIT_MODELS = (FOUNDATION,)


def _step_cases(model: str) -> list[str]:
  return STEPS_EVERY_MODEL + STEPS_FOUNDATION_ONLY * (model == FOUNDATION)


def _init_case_param(model: str):
  return pytest.param(model, marks=() if model in FAST_INIT_MODELS else pytest.mark.slow)


def _start(model: str, data: pathlib.Path, out: pathlib.Path,
           cases: tuple[str, ...]) -> subprocess.Popen:
  env = {**os.environ, "PYTHONPATH": str(REPO),
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  cmd = [sys.executable, "-m", "tests.parallel.sharded_run", f"--model={model}",
         f"--data={data}", f"--out={out}", *(f"--case={c}" for c in cases)]
  # stdout to a file, not a pipe: nobody reads it while the other models' runs are waited on.
  with out.with_suffix(".log").open("w") as log:  # the child keeps its own copy of the handle
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, out: pathlib.Path) -> dict:
  try:
    proc.wait(timeout=1800)
  finally:
    if proc.returncode is None:
      proc.kill()
  assert proc.returncode == 0, out.with_suffix(".log").read_text()[-4000:]
  return json.loads(out.read_text())


@functools.cache
def _run(model: str, data: pathlib.Path, out: pathlib.Path, cases: tuple[str, ...]) -> dict:
  return _finish(_start(model, data, out, cases), out)


@pytest.fixture(scope="module")
def fast(tiny_demo, tmp_path_factory):
  out = tmp_path_factory.mktemp("sharded")
  return lambda model: _run(model, tiny_demo, out / f"{model}-fast.json", tuple(
    LAYOUT_CASES + [INIT_CASE] * (model in FAST_INIT_MODELS)))


@pytest.fixture(scope="module")
def slow(tiny_demo, tmp_path_factory):
  """Every model's slow run, started together on first use: each run mostly compiles, on about one
  core, so on 2 cores the models overlap (CI's slow tier: 335 s + 601 s one after the other)."""
  out = tmp_path_factory.mktemp("sharded")
  procs: dict[str, subprocess.Popen] = {}
  results: dict[str, dict] = {}

  def get(model: str) -> dict:
    if not procs:
      for m in MODELS:
        procs[m] = _start(m, tiny_demo, out / f"{m}-slow.json", tuple(
          [INIT_CASE] * (m not in FAST_INIT_MODELS) + [f"step/{c}" for c in _step_cases(m)]
          + [f"step/{INDIVISIBLE[m]}"] * (m in INDIVISIBLE)))
    if model not in results:
      results[model] = _finish(procs[model], out / f"{model}-slow.json")
    return results[model]

  yield get
  for proc in procs.values():  # a failed test must not leave the other runs going
    if proc.poll() is None:
      proc.kill()


@pytest.fixture
def init_results(request, model):
  """The tier's results that hold `model`'s INIT_CASE."""
  return request.getfixturevalue("fast" if model in FAST_INIT_MODELS else "slow")(model)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("mesh", MESHES)
def test_every_state_leaf_gets_a_named_sharding_on_the_mesh(fast, model, table, mesh):
  r = fast(model)[f"layout/{table}:{mesh}"]
  assert r["all_named_on_mesh"]
  n = r["num_leaves"]
  assert n["params"] > 0 and n["ema"] == n["params"]
  assert n["opt_state"] >= 2 * n["params"]  # Adam's two moments, plus counters
  if table in ("replicated", "data_parallel"):
    assert r["fallbacks"] == []


@pytest.mark.parametrize("model", [_init_case_param(m) for m in MODELS])
def test_parameters_are_really_split(init_results, model):
  """Real arrays after `init_state` follow the plan and most parameters are split across devices."""
  r = init_results[INIT_CASE]
  assert r["arrays_follow_plan"] and r["finite"]
  assert r["num_split"] >= r["num_params"] // 2, r
  assert r["per_device_fraction"] < 0.5, r


def _split_ways(case: str) -> int:
  """How many ways the case's rules table splits a large parameter: fsdp, times tensor for
  fsdp_tensor; 1 for the tables that keep parameters whole."""
  table, mesh = case.split(":")
  sizes = dict(axis.split("=") for axis in mesh.split(","))
  ways = {"fsdp": ["fsdp"], "fsdp_tensor": ["fsdp", "tensor"]}.get(table, [])
  return functools.reduce(lambda n, axis: n * int(sizes.get(axis, 1)), ways, 1)


def _check_step(r: dict) -> None:
  assert r["step"] == 1 and r["after_step_follow_plan"]
  loss, loss1 = r["loss"]
  assert abs(loss - loss1) <= 1e-5 + 1e-4 * abs(loss1), r["loss"]
  norm, norm1 = r["grad_norm"]
  assert abs(norm - norm1) <= 1e-5 + 1e-4 * abs(norm1), r["grad_norm"]
  for part in ("params", "opt_state", "ema"):  # |a - b| <= 1e-5 + 1e-4 |b| everywhere
    assert r[part]["worst"] <= 1.0, (part, r[part])


@pytest.mark.slow
@pytest.mark.parametrize(("model", "case"), [(m, c) for m in MODELS for c in _step_cases(m)])
def test_sharded_step_equals_single_device_step_every_layout(slow, model, case):
  r = slow(model)[f"step/{case}"]
  _check_step(r)
  if _split_ways(case) >= 4:  # parameters split 4 or 8 ways: most of them, each device < half
    assert r["num_split"] >= r["num_params"] // 2 and r["per_device_fraction"] < 0.5, r


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_indivisible_dims_fall_back_and_the_step_still_matches(slow, model):
  if model not in INDIVISIBLE:
    pytest.skip(f"no indivisible variant of {model} listed in INDIVISIBLE")
  r = slow(model)[f"step/{INDIVISIBLE[model]}"]
  assert r["fallbacks"], "width 50 on fsdp=4 should leave some dims whole"
  assert any("embed (dim" in f and "does not divide fsdp" in f for f in r["fallbacks"])
  assert r["arrays_follow_plan"] and r["num_split"] > 0
  _check_step(r)


def test_every_table_has_a_step_case():
  assert set(FAST_INIT_MODELS) <= set(MODELS)
  assert FOUNDATION in MODELS and {c.split(":")[0] for c in STEPS_EVERY_MODEL} == set(TABLES)
  assert _split_ways("fsdp_tensor:fsdp=2,tensor=4") == 8 and _split_ways("fsdp:data=2,fsdp=2,tensor=2") == 2
