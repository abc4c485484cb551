"""The global data position: saved with every checkpoint, read back, and resumed under a config."""

from __future__ import annotations

import logging

import jax.numpy as jnp
import ml_collections as mlc
import pytest

from flowav.data import pipeline, records
from flowav.train import loop
from flowav.train.checkpoint import Checkpointer
from flowav.train.state import TrainState

POS = pipeline.DataPosition(step=3, next_element=12, global_batch=4, seed=0, num_records=16)


def _state(step: int) -> TrainState:
  return TrainState(step=jnp.asarray(step, jnp.int32), params={"w": jnp.ones(3)}, rest={},
                    opt_state={}, ema=None, rng=jnp.zeros(2, jnp.uint32))


def test_checkpoint_round_trip_and_mismatched_step(tmp_path):
  ckpt = Checkpointer(tmp_path, async_save=False)
  ckpt.save(_state(3), POS, {"model": "m"})
  assert ckpt.read_data_position(3) == POS
  with pytest.raises(ValueError, match="data position is at step 3, the state at step 5"):
    ckpt.save(_state(5), POS, {"model": "m"})
  ckpt.save(_state(4), None, {"model": "m"})  # e.g. an export: no data stream
  assert ckpt.read_data_position(4) is None
  ckpt.close()


class _Saved:
  """Stands in for a Checkpointer holding one data position."""
  directory = "W/checkpoints"

  def __init__(self, pos):
    self.pos = pos

  def read_data_position(self, step):
    del step
    return self.pos


def _config(batch_size: int) -> mlc.ConfigDict:
  return mlc.ConfigDict({"data": {"train_split": "train", "batch_size": batch_size},
                         "train": {"seed": 0}})


_INFO = records.DatasetInfo(name="t", codec={}, latent_stats={}, rates={}, dims={},
                            splits={"train": {"num_examples": 16, "shards": []}})


def test_resume_position_fresh_same_and_legacy():
  assert loop.resume_position(_config(4), _INFO, _Saved(None), None) == pipeline.DataPosition(
    0, 0, 4, 0, 16)
  assert loop.resume_position(_config(4), _INFO, _Saved(POS), 3) == POS
  # A checkpoint from before positions were saved: the position follows from the step.
  assert loop.resume_position(_config(4), _INFO, _Saved(None), 3) == POS


def test_changed_batch_size_continues_from_the_next_element(caplog):
  with caplog.at_level(logging.WARNING):
    pos = loop.resume_position(_config(8), _INFO, _Saved(POS), 3)
  assert (pos.next_element, pos.global_batch) == (12, 8)
  assert pos.advance(5).next_element == 12 + 2 * 8
  assert "W/checkpoints/3 was trained with global_batch=4, this run has 8" in caplog.text


def test_save_timeout_reaches_orbax_and_must_be_positive(tmp_path):
  # orbax's own 20 min limit ended a healthy run that had been paused (SIGSTOP) for 40 min.
  ckpt = Checkpointer(tmp_path, save_timeout_minutes=90.0)
  assert ckpt.manager._options.async_options.timeout_secs == 5400  # pylint: disable=protected-access
  ckpt.close()
  with pytest.raises(ValueError, match="checkpoint_timeout_minutes must be > 0"):
    Checkpointer(tmp_path, save_timeout_minutes=0.0)
