"""Test setup: absl flags parsed (grain workers read them), a session-wide tiny demo dataset."""

from __future__ import annotations

import pathlib

import pytest
from absl import flags

flags.FLAGS.mark_as_parsed()

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> pathlib.Path:
  """A few-clip flowav-demo (both tasks, every split), built once per test session."""
  from flowav.data.demo import build  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("data") / "flowav-demo"
  build.build_demo(str(out), build.preset("tiny"))
  return out
