"""`generate.override_sample`: the sample.* settings a user may change after training."""

from __future__ import annotations

import pytest

from configs import common
from flowav import generate


def test_overrides_parse_as_the_type_they_replace():
  config = common.base_config()
  applied = generate.override_sample(config, ["sample.cfg_scale_speech=8", "sample.num_steps=10",
                                              "sample.use_ema=false", "sample.method=heun"])
  assert applied == {"sample.cfg_scale_speech": 8.0, "sample.num_steps": 10,
                     "sample.use_ema": False, "sample.method": "heun"}
  assert config.sample.cfg_scale_speech == 8.0 and isinstance(config.sample.cfg_scale_speech, float)
  assert config.sample.num_steps == 10 and config.sample.use_ema is False
  assert config.sample.method == "heun" and config.sample.cfg_scale == 3.0  # others unchanged


@pytest.mark.parametrize("item, named", [
  ("sample.cfg_scal=3", "'sample.cfg_scal': unknown key"),  # a typo lists the known keys
  ("optim.lr=1", "only the sample.* settings"),  # the weights fix every other section
  ("sample.cfg_scale", "expected sample.KEY=VALUE"),
  ("sample.num_steps=2.5", "'sample.num_steps'='2.5': not a int"),
  ("sample.use_ema=maybe", "'sample.use_ema'='maybe': not a bool"),
])
def test_bad_overrides_name_the_key(item, named):
  config = common.base_config()
  before = config.to_dict()
  with pytest.raises(ValueError, match="override") as err:
    generate.override_sample(config, [item])
  assert named in str(err.value)
  assert config.to_dict() == before


def test_override_suffix_names_the_overrides_for_file_names():
  assert generate.override_suffix([]) == ""
  assert generate.override_suffix(["sample.cfg_scale_speech=1.5", "sample.method=rk4 x"]) == (
    ".cfg_scale_speech=1.5.method=rk4_x")
  assert "/" not in generate.override_suffix(["sample.method=../x"])


def test_override_suffix_of_a_long_list_fits_a_file_name_and_stays_distinct():
  many = [f"sample.cfg_scale_{task}=1.{i}" for i in range(9) for task in ("speech", "song")]
  suffix = generate.override_suffix(many)
  assert len(f"eval_plots{suffix}") <= 255 and len(suffix) == 160
  assert suffix.startswith(".cfg_scale_speech=1.0.cfg_scale_song=1.0")
  assert suffix != generate.override_suffix(many[:-1] + ["sample.cfg_scale_song=9.9"])
