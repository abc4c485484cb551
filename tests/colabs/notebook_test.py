"""colabs/*.ipynb run top to bottom: every code cell, in order, in a fresh Python process.

The cell tagged "parameters" is replaced by tiny settings (the papermill convention), so the slow
test runs the whole notebook in about a minute; notebook shell lines (`!cmd`, `%magic`) are skipped.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "colabs").glob("*.ipynb"))
TINY = {"DEMO_SIZE": "tiny", "VARIANT": "tiny", "NUM_STEPS": 4, "MAX_MINUTES": 0.0, "NUM_CLIPS": 2}


def _code_cells(path: pathlib.Path) -> list[tuple[list[str], str]]:
  nb = json.loads(path.read_text())
  assert nb.get("nbformat") == 4, f"{path}: not an nbformat-4 notebook"
  return [(cell.get("metadata", {}).get("tags", []), "".join(cell["source"]))
          for cell in nb["cells"] if cell["cell_type"] == "code"]


def _python(source: str) -> str:
  return "\n".join(line for line in source.splitlines()
                   if not line.lstrip().startswith(("!", "%")))


def _script(path: pathlib.Path, workdir: pathlib.Path) -> str:
  parts = []
  for tags, source in _code_cells(path):
    if "parameters" in tags:
      names = {line.split("=")[0].strip() for line in source.splitlines() if "=" in line}
      missing = sorted(set(TINY) - names)
      assert not missing, f"{path}: the parameters cell lacks {missing}"
      source = "\n".join([f"WORKDIR = {str(workdir)!r}"] + [f"{k} = {v!r}" for k, v in TINY.items()])
    parts.append(_python(source))
  return "\n\n".join(parts) + "\n"


def test_there_is_a_notebook():
  assert NOTEBOOKS, "colabs/ has no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_one_parameters_cell_and_compiles(path):
  cells = _code_cells(path)
  assert sum("parameters" in tags for tags, _ in cells) == 1
  for i, (_, source) in enumerate(cells):
    compile(_python(source), f"{path.name} code cell {i}", "exec")  # raises SyntaxError


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, tmp_path):
  script = tmp_path / "notebook.py"
  script.write_text(_script(path, tmp_path / "run"))
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  res = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=900)
  assert res.returncode == 0, f"{path.name} failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
  # What the notebook promises to leave behind.
  result = json.loads((tmp_path / "run" / "eval.json").read_text())
  assert set(result["impacts"]) >= {"model", "control", "codec"}
  assert (tmp_path / "run" / "samples" / "manifest.json").exists()
  assert (tmp_path / "run" / "export" / "params.msgpack").exists()
  assert "impacts model" in res.stdout
