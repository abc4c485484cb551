"""Checks shared by the block and model tests: logical axis names and golden parameter paths."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import flax.nnx as nnx

from flowav.parallel.rules import PARAM_AXES


def check_param_names(module: nnx.Module, variables: Any = nnx.Param) -> int:
  """Asserts each variable of type `variables` has `len(names) == ndim`, known names, no name twice;
  returns how many there are."""
  flat = nnx.to_flat_state(nnx.state(module, variables))
  for path, var in flat:
    where = "/".join(map(str, path))
    names = var.get_metadata().get("out_sharding")
    assert names is not None, f"{where}: no sharding names"
    assert len(names) == len(var.shape), f"{where}: names {names} for shape {var.shape}"
    assert all(n is None or n in PARAM_AXES for n in names), f"{where}: unknown name in {names}"
    used = [n for n in names if n is not None]
    assert len(used) == len(set(used)), f"{where}: a name repeats in {names}"
  return len(flat)


def check_golden_paths(paths: list[str], golden: pathlib.Path, model: str) -> None:
  """Asserts `paths` (the checkpoint format) equal the golden file's, in order; with
  FLOWAV_UPDATE_GOLDEN=1 rewrites the file first."""
  if os.environ.get("FLOWAV_UPDATE_GOLDEN"):
    golden.write_text("\n".join(paths) + "\n")
  expected = golden.read_text().split()
  added, removed = sorted(set(paths) - set(expected)), sorted(set(expected) - set(paths))
  assert not added and not removed, (
    f"{model} parameter paths (checkpoint format) changed: added {added}, removed {removed}. "
    f"If intended, regenerate {golden} with FLOWAV_UPDATE_GOLDEN=1.")
  assert paths == expected
