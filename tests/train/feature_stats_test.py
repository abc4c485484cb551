"""A new run fits the model's FeatureNorms to its training split; checkpoints keep them."""

from __future__ import annotations

import numpy as np
from flax import nnx

from configs import audiogen_omni as omni_config
from configs import vssflow as vssflow_config
from flowav.data import pipeline
from flowav.train import runtime
from flowav.train.checkpoint import Checkpointer


def test_new_run_sets_video_statistics_and_a_checkpoint_keeps_them(tiny_demo, tmp_path):
  config = omni_config.get_config("tiny")
  config.data.dir = str(tiny_demo)
  config.model.video_norm = True
  assert runtime.feature_norm_keys(config) == ("video_features",)
  rt = runtime.make_runtime(config)
  stats = runtime.data_feature_stats(config)
  mean, std, _ = pipeline.feature_stats(str(tiny_demo), "train", "video_features")
  state = rt.init_state(stats)
  model = nnx.merge(rt.graphdef, state.params, state.rest)
  np.testing.assert_allclose(model.video_norm.mean[...], mean, atol=1e-6)
  np.testing.assert_allclose(model.video_norm.std[...], np.maximum(std, 1e-3), atol=1e-6)
  assert float(np.abs(mean).max()) > 0.01  # the check above is not trivially met by the defaults
  ckpt = Checkpointer(tmp_path, async_save=False)
  ckpt.save(state, None, rt.meta, force=True)
  restored, _ = ckpt.restore(0, rt.abstract_state, rt.meta)
  ckpt.close()
  again = nnx.merge(rt.graphdef, restored.params, restored.rest)
  np.testing.assert_array_equal(again.video_norm.mean[...], model.video_norm.mean[...])
  plain = nnx.merge(rt.graphdef, *(lambda s: (s.params, s.rest))(rt.init_state()))
  np.testing.assert_array_equal(plain.video_norm.mean[...], 0.0)  # no statistics: identity


def test_models_without_feature_norms_need_no_statistics(tiny_demo):
  config = vssflow_config.get_config("tiny")
  config.data.dir = str(tiny_demo)
  assert runtime.feature_norm_keys(config) == () and runtime.data_feature_stats(config) == {}
  config = omni_config.get_config("tiny")
  assert not config.model.video_norm and runtime.feature_norm_keys(config) == ()


def test_export_records_the_statistics():
  from flowav.models import audiogen_omni as ag  # pylint: disable=g-import-not-at-top
  from flowav.train import export  # pylint: disable=g-import-not-at-top
  cfg = ag.AudioGenOmniConfig(**{**ag.VARIANTS["tiny"], "video_norm": True})
  model = ag.AudioGenOmni(cfg, rngs=nnx.Rngs(0))
  model.video_norm.set_stats(np.arange(32.0), np.full(32, 2.0))
  out = export.feature_stats(model)
  assert list(out) == ["video_features"] and out["video_features"]["mean"][3] == 3.0
  assert out["video_features"]["std"] == [2.0] * 32
  assert export.feature_stats(ag.AudioGenOmni(ag.AudioGenOmniConfig(**ag.VARIANTS["tiny"]),
                                              rngs=nnx.Rngs(0))) == {}
