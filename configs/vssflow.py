r"""VSSFlow (seed 000, specs/vssflow.md): video-to-sound and visual TTS, one cross-attention DiT.

Variants: `tiny` (unit tests), `demo` (flowav-demo on a 2-core CPU, `make demo`), `paper` (443 M).
  python -m flowav.main train --config=configs/vssflow.py:demo --workdir=runs/demo
  python -m flowav.main train --config=configs/vssflow.py:paper --config.data.dir=DATA --workdir=W

Expected (`demo`, 2-core CPU, ~6 min of training): see the closing numbers in runs/demo/report.md;
impacts onset F1 well above the wrong-video control.
"""

from __future__ import annotations

import ml_collections as mlc

from configs import common
from flowav.models import vssflow


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  arg = common.parse_arg(arg, variant="demo")
  c = common.base_config()
  c.model = common.model_section("vssflow", arg.variant, vssflow.VSSFlowConfig, vssflow.VARIANTS)
  # CFG dropout (spec §3): speaker alone with p, all conditions together with p.
  # p_timing (not in the spec, off): phone-timing dropout (flowav/train/timing_dropout.py).
  c.flow.dropout = dict(p_speaker=0.1, p_all=0.1, p_timing=0.0)
  if arg.variant == "paper":
    # Spec §3: AdamW, effective lr 1.152e-4 at effective batch 288, 2000 warmup steps, constant.
    c.data.clip_seconds = 10.0
    c.data.max_phones = 160
    c.data.batch_size = 144
    c.optim.update(lr=1.152e-4, warmup_steps=2000, grad_accum=2)
    c.train.update(num_steps=350_000, checkpoint_every=5000, eval_every=5000, log_every=100)
  elif arg.variant == "demo":
    c.data.update(batch_size=16, clip_seconds=2.0, random_crop=False)
    c.optim.update(lr=1e-3, warmup_steps=100, clip_norm=1.0, weight_decay=0.0)
    c.train.update(num_steps=1600, ema_decay=0.995, log_every=50, eval_every=400,
                   checkpoint_every=200, max_minutes=6.5)
    c.sample.update(method="euler", num_steps=25)
  elif arg.variant == "tiny":
    # The spec's tiny DiT (§6) on flowav-demo's streams: half-second windows (43 mel frames).
    c.model.update(audio_channels=80, audio_rate=22050 / 256, video_dim=256, video_rate=25.0,
                   speaker_dim=80, phone_vocab=64, max_phones=64, max_frames=64)
    c.data.update(batch_size=4, clip_seconds=0.5, max_phones=16, random_crop=True, num_threads=1)
    c.optim.update(lr=1e-3, warmup_steps=2)
    c.train.update(num_steps=4, log_every=1, eval_every=2, checkpoint_every=2, num_eval_batches=1)
    c.sample.update(num_steps=4, num_clips=4, batch_size=4)
  return c
