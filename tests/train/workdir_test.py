from __future__ import annotations

import json

import ml_collections as mlc
import pytest

from flowav.train import workdir


def _config(**train):
  return mlc.ConfigDict({"model": {"name": "vssflow", "depth": 2},
                         "train": {"num_steps": 10, "seed": 0, **train}, "sample": {"cfg_scale": 3.0}})


def test_first_run_writes_config_and_rerun_accepts_it(tmp_path):
  assert workdir.save_or_check_config(tmp_path, _config()) == []
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["model"]["depth"] == 2
  assert workdir.save_or_check_config(tmp_path, _config()) == []


def test_changed_model_key_is_refused_naming_the_key_and_config_kept(tmp_path):
  workdir.save_or_check_config(tmp_path, _config())
  before = (tmp_path / "config.json").read_text()
  changed = _config()
  changed.model.depth = 4
  with pytest.raises(ValueError, match=r"model\.depth: 2 -> 4"):
    workdir.save_or_check_config(tmp_path, changed)
  assert (tmp_path / "config.json").read_text() == before
  assert workdir.save_or_check_config(tmp_path, changed, allow_change=True) == ["model.depth"]


def test_extending_training_is_a_safe_change(tmp_path):
  workdir.save_or_check_config(tmp_path, _config())
  assert workdir.save_or_check_config(tmp_path, _config(num_steps=20)) == ["train.num_steps"]


def test_run_saved_before_task_weights_existed_resumes_unless_a_weight_differs(tmp_path):
  workdir.save_or_check_config(tmp_path, _config())  # no data.task_weights in the saved config
  weighted = _config()
  weighted.data = {"task_weights": {"speech": 1, "song": 1}}
  assert workdir.save_or_check_config(tmp_path, weighted) == []
  (tmp_path / "config.json").write_text(json.dumps(_config().to_dict()))
  weighted.data.task_weights.speech = 2
  with pytest.raises(ValueError, match=r"data\.task_weights\.speech: '<absent>' -> 2"):
    workdir.save_or_check_config(tmp_path, weighted)
