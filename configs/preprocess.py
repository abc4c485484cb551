r"""`preprocess`: a folder of user media -> ArrayRecord shards of flowav examples.

  python -m flowav.main preprocess --input=DIR --out=DATA [--config=configs/preprocess.py]
      [--config.clip_seconds=10 --config.num_workers=4 ...]
  several hosts (shared file system): add --process_id=I --num_processes=N on each
  python -m flowav.main train --config=configs/vssflow.py:demo --config.data.dir=DATA --workdir=W

Overrides (`--config.KEY=...`) need `--config=configs/preprocess.py` before them; unknown keys fail.
Variants: `default`; `tiny` (short windows, one worker: tests).
"""

from __future__ import annotations

import ml_collections as mlc

from configs import common


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  arg = common.parse_arg(arg, variant="default")
  c = mlc.ConfigDict()
  c.name = "user-data"  # dataset name in dataset_info.json
  # Windows: each record covers at most clip_seconds of its source; longer sources are cut into
  # consecutive windows ("split") or keep only the first one ("crop"). A trailing window shorter
  # than min_seconds is dropped, and so is a source shorter than min_seconds.
  c.clip_seconds = 10.0
  c.long_clips = "split"  # split | crop
  c.min_seconds = 0.5
  # A clip with a transcript or lyrics is one utterance and never split; up to this long it is one
  # record (the training pipeline crops a window and shifts the phone timing), longer ones are
  # skipped (reason text_clip_too_long).
  c.max_text_seconds = 30.0
  # Video: frames resampled to video_fps, centre-cropped square and resized to frame_size (0 = the
  # encoder's own size; 64 for builtin), then encoded per frame.
  c.video_encoder = "builtin"  # builtin | mobilenet_v2 | clip (flowav/encoders/frame_encoders.py)
  c.video_encoder_weights = ""  # local weights file for pretrained encoders ("" = their default)
  c.video_fps = 25.0
  c.frame_size = 0
  # Phone timing of transcripts: "estimate" = flite's synthetic phone timing stretched over the
  # clip's voiced span (an approximation, not a forced alignment); "none" = phone ids with zero
  # durations (the training pipeline then drops the phones: transcripts become unused by VSSFlow).
  c.phone_durations = "estimate"  # estimate | none
  # Manifests (CSV / JSONL with path or id, caption, transcript, lyrics), comma-separated paths
  # relative to the input folder; "" = every *.csv and *.jsonl in the input folder's root.
  c.manifests = ""
  # Splits by a stable hash of (split_salt, source path): adding files never moves a clip.
  c.splits = dict(train=0.9, validation=0.05, test=0.05)
  c.split_salt = "flowav"
  c.examples_per_shard = 512
  c.num_workers = 2  # worker processes per host (0 or 1: in this process)
  c.wait_timeout_s = 86400.0  # process 0 waits this long for other hosts' clips
  if arg.variant == "tiny":
    c.update(clip_seconds=1.0, min_seconds=0.25, max_text_seconds=4.0, num_workers=1,
             examples_per_shard=4)
  elif arg.variant != "default":
    raise ValueError(f"Unknown variant {arg.variant!r} for configs/preprocess.py; valid: "
                     "['default', 'tiny']")
  return c
