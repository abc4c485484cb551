"""The workdir's resolved config: saved on the first run, compared on every rerun.

A rerun of the same command resumes. A rerun with a changed config names the changed keys and
refuses, unless the change is to a key that cannot alter what was trained (`SAFE_TO_CHANGE`) or the
user passes `--allow_config_change`.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import ml_collections as mlc

CONFIG_FILE = "config.json"
# Keys whose change keeps a resumed run meaningful: run length, logging cadence, sampling, eval.
SAFE_TO_CHANGE = ("train.num_steps", "train.max_minutes", "train.log_every", "train.eval_every",
                  "train.summary_every", "train.checkpoint_every", "train.checkpoint_timeout_minutes",
                  "sample.", "eval.",
                  "data.num_threads", "data.prefetch", "data.dir")
# Keys added after runs were saved without them: absent from a saved config and at this value in
# the new one, they mean what the saved run did, so resuming such a run is not a change.
SAME_AS_ABSENT = {"data.task_weights.": 1}


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in dict(d).items():
    key = f"{prefix}{k}"
    if isinstance(v, (dict, mlc.ConfigDict)):
      out.update(flatten(v, key + "."))
    else:
      out[key] = list(v) if isinstance(v, tuple) else v
  return out


def config_to_dict(config: mlc.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def load_config(workdir: str | pathlib.Path) -> mlc.ConfigDict:
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: {workdir} holds no flowav run (train first)")
  return mlc.ConfigDict(json.loads(path.read_text()))


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  a, b = flatten(old), flatten(new)

  def same_as_absent(k: str) -> bool:
    return k not in a and any(k.startswith(p) and b.get(k) == v for p, v in SAME_AS_ABSENT.items())

  return sorted(k for k in set(a) | set(b)
                if a.get(k, "<absent>") != b.get(k, "<absent>") and not same_as_absent(k))


def check_config(workdir: str | pathlib.Path, config: mlc.ConfigDict, *,
                 allow_change: bool = False) -> list[str]:
  """Compares `config` with the workdir's saved one (if any); writes nothing.

  Returns the changed keys that are accepted. Raises ValueError naming the changed keys otherwise.
  """
  path = pathlib.Path(workdir) / CONFIG_FILE
  new = config_to_dict(config)
  changed: list[str] = []
  if path.exists():
    old = json.loads(path.read_text())
    changed = changed_keys(old, new)
    unsafe = [k for k in changed if not k.startswith(SAFE_TO_CHANGE)]
    if unsafe and not allow_change:
      a, b = flatten(old), flatten(new)
      lines = "\n".join(f"  {k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
                        for k in unsafe)
      raise ValueError(
        f"The config differs from the one this workdir was trained with ({path}):\n{lines}\n"
        "Refusing to resume with a different model or recipe. Use a new --workdir, or pass "
        "--allow_config_change to proceed anyway.")
  return changed


def write_config(workdir: str | pathlib.Path, config: mlc.ConfigDict) -> None:
  """Saves the resolved config atomically (after the run has proven it can use the workdir)."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(config_to_dict(config), indent=1, sort_keys=True) + "\n")
  os.replace(tmp, path)


def save_or_check_config(workdir: str | pathlib.Path, config: mlc.ConfigDict, *,
                         allow_change: bool = False) -> list[str]:
  """`check_config`, then `write_config`. Returns the accepted changed keys."""
  changed = check_config(workdir, config, allow_change=allow_change)
  write_config(workdir, config)
  return changed
