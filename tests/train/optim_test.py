from __future__ import annotations

import numpy as np
import pytest

from flowav.train import optim

BASE = dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, warmup_steps=10,
            schedule="constant", clip_norm=0.0, grad_accum=1)


def test_linear_warmup_reaches_full_rate_at_warmup_end():
  s = optim.make_schedule(BASE, 100)
  assert float(s(0)) == 0.0
  np.testing.assert_allclose(float(s(5)), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(float(s(10)), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(float(s(99)), 1e-3, rtol=1e-6)


def test_vssflow_paper_effective_lr():
  # Spec §3 / §7.14: base 4e-7 scaled by accum 2 x 4 GPUs x batch 36.
  assert abs(4e-7 * 2 * 4 * 36 - 1.152e-4) < 1e-12
  s = optim.make_schedule({**BASE, "lr": 1.152e-4, "warmup_steps": 2000}, 10_000)
  np.testing.assert_allclose(float(s(2000)), 1.152e-4, rtol=1e-6)
  np.testing.assert_allclose(float(s(1000)), 0.576e-4, rtol=1e-6)


def test_cosine_decays_to_zero_and_unknown_schedule_fails():
  s = optim.make_schedule({**BASE, "schedule": "cosine"}, 110)
  assert float(s(110)) < 1e-9
  with pytest.raises(ValueError, match="config.optim.schedule"):
    optim.make_schedule({**BASE, "schedule": "linear"}, 10)
