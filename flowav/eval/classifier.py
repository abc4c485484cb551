"""A small audio-latent classifier for evaluation: does generated audio sound like its class?

Trained on a dataset's REAL audio latents (codec frames `[T, C]`) to predict a label that
`label_fn(example, truth)` reads from each example and its ground-truth JSON
(`raw/{split}/{clip_id}.json`); `impact_material` is flowav-demo's surface material (4 classes).
Generated audio (re-encoded with the dataset's codec) is then scored with `class_accuracy`, and
`Classifier.features` are the penultimate activations (the `demo_classifier` embedder).

Inputs are latents in codec units (`MelCodec.encode`, or `generate.Run.sample`, which returns
them denormalised) with a frame mask.

Model (flowav.nn blocks): Dense(C -> width) on the dataset-normalised latents, a masked mean over
windows of `pool` frames (4: 86 -> 21.5 frames/s, 4x less compute), `num_blocks` padding-aware
ConvNeXt-V2 1-D blocks over time, LayerNorm, masked mean and max pooling over the
valid frames (concatenated), Dense(2 width -> width) + GELU (the features), Dense(width -> K).
Trained with AdamW for a few hundred steps (seconds on CPU) with two augmentations that keep the
label: a random gain per clip (a constant added to the log-mel) and Gaussian noise on the
normalised latents, so the decision does not rest on level or fine detail a vocoder round trip
changes.

Measured on flowav-demo's default build (1200 impacts train clips, 300 steps, 2 busy CPU cores:
~20 s of training, ~1 s to load from the cache): material accuracy on the 80 test clips 1.0 on
real latents, 1.0 after MelCodec + Griffin-Lim + re-encoding, 0.075 for the shuffled-label control
(chance 0.25); the number of hits (`contact_frames`, 4 classes) 1.0.

Cache: `train_classifier(..., cache_dir=workdir / "eval_classifier")` keeps
`{label_name}/classifier.safetensors` + `classifier.json` (settings, labels, the dataset and label
fingerprints, the weights' digest; written last, both atomically). A later call with the same
dataset, labels and settings loads it; anything else retrains and replaces it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowav import nn
from flowav.audio.codec import LatentStats
from flowav.data import records
from flowav.encoders import weights as weights_lib

LabelFn = Callable[[dict[str, Any], dict[str, Any] | None], str | None]
CACHE_SUBDIR = "eval_classifier"
_FORMAT = 1  # bump when the model or the cache layout changes


def impact_material(example: dict[str, Any], truth: dict[str, Any] | None) -> str | None:
  """flowav-demo impacts clips -> their surface material ("glass", "metal", "stone", "wood")."""
  del example
  if truth is None or truth.get("subset") != "impacts":
    return None
  return str(truth["material"])


@dataclasses.dataclass(frozen=True)
class ClassifierSettings:
  """Model size and training recipe; any change retrains a cached classifier."""
  width: int = 64
  hidden: int = 128
  num_blocks: int = 2
  kernel_size: int = 5
  pool: int = 4  # frames averaged before the conv blocks (86 -> 21.5 frames/s): 4x less compute
  steps: int = 300
  batch_size: int = 32
  learning_rate: float = 3e-3
  weight_decay: float = 1e-4
  gain_jitter: float = 0.7  # log-mel units (natural log of magnitude; 0.7 ~ +-6 dB)
  noise_std: float = 0.1  # on the normalised latents
  seed: int = 0
  shuffle_labels: bool = False  # the control: train labels permuted, so test accuracy ~ chance


@dataclasses.dataclass
class LabelledLatents:
  """A split's labelled clips, padded: latents `[N, T, C]` (raw codec units), mask `[N, T]`."""
  latents: np.ndarray
  mask: np.ndarray
  labels: list[str]
  clip_ids: list[str]


def load_labelled(data_dir: str | os.PathLike, split: str, label_fn: LabelFn) -> LabelledLatents:
  """Every example of `split` for which `label_fn(example, truth)` is not None, in record order.

  `truth` is `raw/{split}/{clip_id}.json` when the dataset keeps one, else None.
  """
  info = records.DatasetInfo.load(data_dir)
  raw = pathlib.Path(data_dir) / str(info.extra.get("raw_dir", "raw")) / split
  rows, labels, ids = [], [], []
  for path in info.shard_paths(data_dir, split):
    for i, data in enumerate(records.read_shard(path)):
      ex = records.decode_example(data, source=f"{path} record {i}")
      truth_path = raw / f"{ex.get('clip_id')}.json"
      try:
        truth = json.loads(truth_path.read_text()) if truth_path.is_file() else None
      except json.JSONDecodeError as e:
        raise ValueError(f"{truth_path} is not valid JSON: {e}") from e
      label = label_fn(ex, truth)
      if label is None:
        continue
      lat = np.asarray(ex["audio_latents"], np.float32)
      mask = np.asarray(ex.get("audio_mask", np.ones(len(lat), bool)), bool)
      rows.append((lat, mask))
      labels.append(str(label))
      ids.append(str(ex.get("clip_id", f"{path}:{i}")))
  if not rows:
    raise ValueError(f"{data_dir}: no example of split {split!r} has a label under {_fn_name(label_fn)}")
  latents, mask = pad_batch([r[0] for r in rows], [r[1] for r in rows])
  return LabelledLatents(latents, mask, labels, ids)


def pad_batch(latents: Sequence[np.ndarray] | np.ndarray, masks: Sequence[np.ndarray] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
  """Clips `[T_i, C]` (or an array `[B, T, C]`) -> zero-padded `[B, max T, C]` and mask `[B, T]`."""
  if isinstance(latents, np.ndarray) and latents.ndim == 3:
    latents = list(latents)
  clips = [np.asarray(x, np.float32) for x in latents]
  if not clips:
    raise ValueError("pad_batch: no clips")
  for i, x in enumerate(clips):
    if x.ndim != 2 or x.shape[1] != clips[0].shape[1] or x.shape[0] == 0:
      raise ValueError(f"pad_batch: clip {i} has shape {x.shape}; every clip must be [T > 0, "
                       f"{clips[0].shape[-1]}]")
  length = max(x.shape[0] for x in clips)
  out = np.zeros((len(clips), length, clips[0].shape[1]), np.float32)
  mask = np.zeros((len(clips), length), bool)
  for i, x in enumerate(clips):
    out[i, :len(x)] = x
    mask[i, :len(x)] = True if masks is None else np.asarray(masks[i], bool)[:len(x)]
  if not np.all(mask.any(axis=1)):
    raise ValueError(f"pad_batch: clips {np.flatnonzero(~mask.any(axis=1))[:5].tolist()} have no "
                     "valid frame")
  return out, mask


class LatentClassifier(nnx.Module):
  """`[B, T, C]` normalised latents + mask `[B, T]` -> (logits `[B, K]`, features `[B, width]`)."""

  def __init__(self, in_dim: int, num_classes: int, s: ClassifierSettings, *, rngs: nnx.Rngs):
    self.pool = int(s.pool)
    self.proj = nn.Dense(in_dim, s.width, axes=("channels", "embed"), use_bias=True, rngs=rngs)
    self.blocks = nnx.List([nn.ConvNeXtV2Block(s.width, s.hidden, kernel_size=s.kernel_size, rngs=rngs)
                            for _ in range(s.num_blocks)])
    self.norm = nn.LayerNorm(s.width)
    self.fc = nn.Dense(2 * s.width, s.width, axes=(None, "embed"), use_bias=True, rngs=rngs)
    self.head = nn.Dense(s.width, num_classes, axes=("embed", None), use_bias=True, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    h, mask = _pool_time(self.proj(x), mask, self.pool)
    for block in self.blocks:
      h = block(h, mask)
    h = self.norm(h)
    m = mask[..., None].astype(h.dtype)
    mean = (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    peak = jnp.where(mask[..., None], h, -1e4).max(1)
    feats = jax.nn.gelu(self.fc(jnp.concatenate([mean, peak], axis=-1)), approximate=False)
    return self.head(feats), feats


def _pool_time(h: jax.Array, mask: jax.Array, pool: int) -> tuple[jax.Array, jax.Array]:
  """Masked mean over windows of `pool` frames: `[B, T, W]`, `[B, T]` -> `[B, ceil(T / pool), W]`."""
  if pool <= 1:
    return h, mask
  b, t, w = h.shape
  pad = -t % pool
  h = jnp.pad(h, ((0, 0), (0, pad), (0, 0))).reshape(b, -1, pool, w)
  m = jnp.pad(mask, ((0, 0), (0, pad))).reshape(b, -1, pool)
  count = m.sum(-1, keepdims=True).astype(h.dtype)
  h = (h * m[..., None]).sum(2) / jnp.maximum(count, 1.0)
  return h, m.any(-1)


@jax.jit
def _forward(graphdef, params, x, mask):
  return nnx.merge(graphdef, params)(x, mask)


class Classifier:
  """A trained `LatentClassifier` with its class names and the dataset's latent statistics.

  Inputs are raw codec latents (what `MelCodec.encode` returns): an array `[B, T, C]` or a list
  of clips `[T_i, C]`, with an optional mask `[B, T]` (True = valid frame).
  """

  def __init__(self, model: LatentClassifier, labels: Sequence[str], stats: LatentStats,
               meta: dict[str, Any]):
    self.labels = tuple(labels)
    self.stats = stats
    self.meta = meta  # settings, codec, fingerprints, training metrics (the cache JSON)
    self.codec = meta.get("codec")
    self._graphdef, self._params = nnx.split(model, nnx.Param)

  def _run(self, latents, mask, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    x, m = pad_batch(latents) if mask is None else (np.asarray(latents, np.float32), np.asarray(mask, bool))
    if x.ndim != 3 or m.shape != x.shape[:2]:
      raise ValueError(f"Classifier: latents {x.shape} must be [B, T, C] with mask [B, T], got {m.shape}")
    if x.shape[-1] != self.stats.mean.shape[0]:
      raise ValueError(f"Classifier: latents have {x.shape[-1]} channels, trained on "
                       f"{self.stats.mean.shape[0]}")
    x = self.stats.normalize(x) * m[..., None]
    outs = [_forward(self._graphdef, self._params, jnp.asarray(x[i:i + batch]), jnp.asarray(m[i:i + batch]))
            for i in range(0, len(x), batch)]
    return (np.concatenate([np.asarray(o[0]) for o in outs]),
            np.concatenate([np.asarray(o[1]) for o in outs]))

  def logits(self, latents, mask: np.ndarray | None = None) -> np.ndarray:
    """Class logits `[B, K]` (classes in `self.labels` order)."""
    return self._run(latents, mask)[0]

  def predict(self, latents, mask: np.ndarray | None = None) -> np.ndarray:
    """Predicted class indices `[B]` into `self.labels`."""
    return self.logits(latents, mask).argmax(-1)

  def predict_labels(self, latents, mask: np.ndarray | None = None) -> list[str]:
    return [self.labels[i] for i in self.predict(latents, mask)]

  def features(self, latents, mask: np.ndarray | None = None) -> np.ndarray:
    """Penultimate activations `[B, width]` (pooled over time): clip embeddings."""
    return self._run(latents, mask)[1]

  def label_ids(self, labels: Sequence[str | int]) -> np.ndarray:
    """Class names (or indices) -> indices `[B]`; an unknown name is an error naming it."""
    out = []
    for label in labels:
      if isinstance(label, (int, np.integer)):
        if not 0 <= int(label) < len(self.labels):
          raise ValueError(f"Classifier: class index {label} out of range [0, {len(self.labels)})")
        out.append(int(label))
      elif label in self.labels:
        out.append(self.labels.index(label))
      else:
        raise ValueError(f"Classifier: unknown class {label!r} (classes: {list(self.labels)})")
    return np.asarray(out, np.int64)


def class_accuracy(classifier: Classifier, latents, labels: Sequence[str | int],
                   mask: np.ndarray | None = None) -> float:
  """Fraction of clips (raw latents, as for `Classifier.predict`) classified as `labels`."""
  want = classifier.label_ids(labels)
  pred = classifier.predict(latents, mask)
  if len(pred) != len(want):
    raise ValueError(f"class_accuracy: {len(pred)} clips but {len(want)} labels")
  return float(np.mean(pred == want))


def _fn_name(fn: Callable) -> str:
  return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _digest(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _dataset_fingerprint(data_dir: str | os.PathLike, info: records.DatasetInfo, split: str) -> str:
  sizes = [os.path.getsize(p) for p in info.shard_paths(data_dir, split)]
  return _digest({"info": dataclasses.asdict(info), "split": split, "shard_bytes": sizes})


@functools.lru_cache(maxsize=8)
def _train_step(graphdef: Any, learning_rate: float, steps: int, weight_decay: float, noise_std: float):
  """The optimizer and a jitted AdamW step, cached so that trainings of the same model and recipe
  (e.g. the shuffled-label control next to the real one) compile once."""
  tx = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps), weight_decay=weight_decay)

  @jax.jit
  def step(params, opt_state, xb, mb, yb, key, gain_scale):
    k_gain, k_noise = jax.random.split(key)
    gain = jax.random.uniform(k_gain, (xb.shape[0], 1, 1), minval=-1.0, maxval=1.0) * gain_scale
    xb = (xb + gain + noise_std * jax.random.normal(k_noise, xb.shape)) * mb[..., None]

    def loss_fn(p):
      logits, _ = nnx.merge(graphdef, p)(xb, mb)
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return tx, step


def _train(data: LabelledLatents, classes: list[str], stats: LatentStats, s: ClassifierSettings
           ) -> tuple[LatentClassifier, dict[str, float]]:
  rng = np.random.default_rng(s.seed)
  y = np.asarray([classes.index(label) for label in data.labels], np.int32)
  if s.shuffle_labels:
    y = rng.permutation(y)
  x = stats.normalize(data.latents).astype(np.float32) * data.mask[..., None]
  model = LatentClassifier(x.shape[-1], len(classes), s, rngs=nnx.Rngs(s.seed))
  graphdef, params = nnx.split(model, nnx.Param)
  tx, step = _train_step(graphdef, s.learning_rate, s.steps, s.weight_decay, s.noise_std)
  opt_state = tx.init(params)
  gain_scale = jnp.asarray(s.gain_jitter / stats.std)  # a log-mel gain, in normalised units
  start, key, losses = time.perf_counter(), jax.random.key(s.seed), []
  batch = min(s.batch_size, len(y))
  for i in range(s.steps):
    idx = rng.choice(len(y), batch, replace=False)
    params, opt_state, loss = step(params, opt_state, x[idx], data.mask[idx], y[idx],
                                   jax.random.fold_in(key, i), gain_scale)
    losses.append(loss)
  losses = [float(v) for v in losses[-20:]]
  nnx.update(model, params)
  return model, {"train_seconds": time.perf_counter() - start, "final_loss": float(np.mean(losses))}


def _load_cached(folder: pathlib.Path, meta: dict[str, Any], in_dim: int, stats: LatentStats
                 ) -> Classifier | None:
  json_path, weights_path = folder / "classifier.json", folder / "classifier.safetensors"
  if not (json_path.is_file() and weights_path.is_file()):
    return None
  try:
    saved = json.loads(json_path.read_text())
  except json.JSONDecodeError:
    return None  # unreadable cache: retrain and replace it
  if saved.get("key") != meta["key"] or saved.get("weights_sha256") != weights_lib.file_digest(weights_path):
    return None
  s = ClassifierSettings(**saved["settings"])
  model = LatentClassifier(in_dim, len(saved["labels"]), s, rngs=nnx.Rngs(0))
  weights_lib.assign(model, weights_lib.load_safetensors(weights_path), source=str(weights_path))
  return Classifier(model, saved["labels"], stats, saved)


def train_classifier(data_dir: str | os.PathLike, label_fn: LabelFn = impact_material, *,
                     cache_dir: str | os.PathLike | None = None, label_name: str | None = None,
                     settings: ClassifierSettings | None = None, split: str = "train",
                     **overrides: Any) -> Classifier:
  """Trains (or loads from `cache_dir`) a classifier of `label_fn`'s labels on `split`'s latents.

  Args:
    data_dir: a flowav dataset (dataset_info.json, shards, raw/ ground truth).
    label_fn: `(example, truth JSON or None) -> label str`, or None to leave the example out.
    cache_dir: where to keep it (e.g. `workdir / CACHE_SUBDIR`); None trains every time.
    label_name: the cache subfolder; default the label function's `__name__` (+ "-shuffled" for
      the shuffled-label control). One classifier per subfolder: a different key replaces it.
    settings / overrides: `ClassifierSettings`, or its fields as keywords.
  """
  s = dataclasses.replace(settings or ClassifierSettings(), **overrides)
  info = records.DatasetInfo.load(data_dir)
  stats = LatentStats.from_dict(info.latent_stats)
  data = load_labelled(data_dir, split, label_fn)
  classes = sorted(set(data.labels))
  if len(classes) < 2:
    raise ValueError(f"train_classifier: {data_dir} split {split!r} has a single class {classes} "
                     f"under {_fn_name(label_fn)}")
  name = label_name or re.sub(r"[^A-Za-z0-9_.-]", "_", getattr(label_fn, "__name__", "labels"))
  name = name + ("-shuffled" if s.shuffle_labels and label_name is None else "")
  meta = {"format": _FORMAT, "settings": dataclasses.asdict(s), "labels": classes,
          "label_fn": _fn_name(label_fn), "data_dir": str(data_dir), "split": split,
          "dataset": _dataset_fingerprint(data_dir, info, split),
          "label_digest": _digest(list(zip(data.clip_ids, data.labels))),
          "num_train": len(data.labels), "codec": info.codec,
          "class_counts": {c: data.labels.count(c) for c in classes}}
  meta["key"] = _digest({k: meta[k] for k in ("format", "settings", "labels", "split", "dataset",
                                               "label_digest")})
  folder = pathlib.Path(cache_dir) / name if cache_dir is not None else None
  if folder is not None:
    cached = _load_cached(folder, meta, data.latents.shape[-1], stats)
    if cached is not None:
      cached.meta["cache"] = "hit"
      return cached
  model, metrics = _train(data, classes, stats, s)
  meta.update(metrics)
  if folder is not None:
    weights_path = folder / "classifier.safetensors"
    flat = {"/".join(str(p) for p in path): np.asarray(v[...])
            for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    weights_lib.save_safetensors(flat, weights_path)  # atomic; the JSON naming it comes last
    meta["weights_sha256"] = weights_lib.file_digest(weights_path)
    tmp = folder / "classifier.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, folder / "classifier.json")
  meta["cache"] = "miss" if folder is not None else "none"
  return Classifier(model, classes, stats, meta)
