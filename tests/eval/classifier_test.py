"""Tests of flowav.eval.classifier on a small flowav-demo build (48 impacts train clips, 24 test).

Measured on 2 shared CPU cores: build ~5-10 s, training 100 steps ~10-17 s (mostly compilation;
the shuffled control reuses the compiled step, ~3 s). Held-out accuracy of the material
classifier: 1.0 on real latents and 1.0 after MelCodec + Griffin-Lim + re-encoding; the
shuffled-label control 0.16-0.25 (chance 0.25). The bounds leave a wide margin.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from flowav.audio.codec import make_codec
from flowav.audio.io import read_audio
from flowav.data.demo import build
from flowav.eval import classifier, embedders

CFG = build.DemoConfig(impacts_train=48, impacts_validation=0, impacts_test=24, speech_train=0,
                       speech_validation=0, speech_test=0, num_train_shards=1, workers=1)
STEPS = 100


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  out = tmp_path_factory.mktemp("classifier") / "flowav-demo"
  build.build_demo(out, CFG, progress=False)
  return out


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
  cache = tmp_path_factory.mktemp("classifier") / "workdir" / classifier.CACHE_SUBDIR
  clf = classifier.train_classifier(demo, classifier.impact_material, cache_dir=cache, steps=STEPS)
  test = classifier.load_labelled(demo, "test", classifier.impact_material)
  return clf, cache, test


def contact_count(example, truth):
  """A second label over the same clips, read from the truth JSON: how many hits (1-4)."""
  del example
  return None if truth is None or truth.get("subset") != "impacts" else str(len(truth["contact_frames"]))


def test_load_labelled_reads_the_truth_and_skips_unlabelled_clips(demo):
  test = classifier.load_labelled(demo, "test", classifier.impact_material)
  assert len(test.labels) == 24 and test.latents.shape == (24, 172, 80) and test.mask.all()
  for clip_id, label in zip(test.clip_ids, test.labels):
    assert json.loads((demo / "raw" / "test" / f"{clip_id}.json").read_text())["material"] == label
  metal = classifier.load_labelled(demo, "test", lambda ex, t: "m" if t["material"] == "metal" else None)
  assert metal.clip_ids == [c for c, m in zip(test.clip_ids, test.labels) if m == "metal"]
  with pytest.raises(ValueError, match="no example of split 'test' has a label"):
    classifier.load_labelled(demo, "test", lambda ex, truth: None)


def test_held_out_accuracy_beats_chance_and_the_shuffled_control(demo, trained):
  clf, _, test = trained
  assert set(clf.labels) == {"glass", "metal", "stone", "wood"}
  real = classifier.class_accuracy(clf, test.latents, test.labels, test.mask)
  # The upper-bound arm: real audio through the codec and Griffin-Lim, re-encoded.
  codec = make_codec(clf.codec)
  reencoded = [codec.encode(codec.decode(x, vocoder="griffin_lim")) for x in test.latents[:12]]
  through_codec = classifier.class_accuracy(clf, reencoded, test.labels[:12])
  control = classifier.train_classifier(demo, cache_dir=None, steps=STEPS, shuffle_labels=True)
  shuffled = classifier.class_accuracy(control, test.latents, test.labels, test.mask)
  assert real >= 0.8 and through_codec >= 0.75
  assert shuffled <= 0.5 and real - shuffled >= 0.4


def test_cache_is_reused_then_invalidated_by_settings_and_labels(demo, trained, tmp_path):
  clf, cache, test = trained
  assert clf.meta["cache"] == "miss"
  saved = json.loads((cache / "impact_material" / "classifier.json").read_text())
  again = classifier.train_classifier(demo, classifier.impact_material, cache_dir=cache, steps=STEPS)
  assert again.meta["cache"] == "hit"
  np.testing.assert_array_equal(again.logits(test.latents[:4]), clf.logits(test.latents[:4]))
  assert json.loads((cache / "impact_material" / "classifier.json").read_text()) == saved

  copy = tmp_path / "eval_classifier"
  shutil.copytree(cache, copy)
  changed = classifier.train_classifier(demo, cache_dir=copy, steps=STEPS, shuffle_labels=True,
                                        label_name="impact_material")
  assert changed.meta["cache"] == "miss"
  replaced = json.loads((copy / "impact_material" / "classifier.json").read_text())
  assert replaced["key"] != saved["key"] and replaced["settings"]["shuffle_labels"]

  # Another label function under the same name: the label digest differs, so it retrains; the
  # classifier serves any label a callable reads from the truth (here the number of hits).
  counts = classifier.train_classifier(demo, contact_count, cache_dir=copy, steps=STEPS,
                                       label_name="impact_material")
  assert counts.meta["cache"] == "miss" and counts.labels == ("1", "2", "3", "4")
  held_out = classifier.load_labelled(demo, "test", contact_count)
  # Measured 0.5-0.71 with 48 training clips (1.0 on the 1200-clip default build); chance ~0.25.
  assert classifier.class_accuracy(counts, held_out.latents, held_out.labels, held_out.mask) >= 0.45

  # Weights that no longer match the digest in the JSON are not loaded.
  folder = copy / "impact_material"
  (folder / "classifier.safetensors").write_bytes(b"not the weights")
  meta = json.loads((folder / "classifier.json").read_text())
  assert classifier._load_cached(folder, meta, 80, clf.stats) is None


def test_predict_features_and_label_checks(trained):
  clf, _, test = trained
  clips = [test.latents[i, :100 + 10 * i] for i in range(4)]  # unequal lengths, padded inside
  pred = clf.predict(clips)
  assert pred.shape == (4,) and set(pred) <= set(range(4))
  assert clf.predict_labels(clips) == [clf.labels[i] for i in pred]
  ids = clf.label_ids(test.labels[:4])
  assert classifier.class_accuracy(clf, clips, ids) == classifier.class_accuracy(clf, clips, test.labels[:4])
  assert clf.features(clips).shape == (4, 64)
  with pytest.raises(ValueError, match="unknown class 'plastic'"):
    classifier.class_accuracy(clf, clips, ["plastic"] * 4)
  with pytest.raises(ValueError, match="4 clips but 3 labels"):
    classifier.class_accuracy(clf, clips, test.labels[:3])
  with pytest.raises(ValueError, match="trained on 80"):
    clf.predict(np.zeros((1, 10, 40), np.float32))


def test_demo_classifier_embedder(demo, trained):
  clf, cache, test = trained
  emb = embedders.get("demo_classifier", classifier=clf)
  wavs = [read_audio(demo / "raw" / "test" / f"{c}.wav", emb.sample_rate) for c in test.clip_ids[:3]]
  x = embedders.embed_audio(emb, wavs, emb.sample_rate)
  assert x.shape == (3, 64)
  np.testing.assert_allclose(x, clf.features([emb.codec.encode(w) for w in wavs]), rtol=1e-5, atol=1e-5)
  # Made from the dataset: trained once, here loaded from the cache.
  cached = embedders.get("demo_classifier", data_dir=str(demo), cache_dir=str(cache), steps=STEPS)
  assert cached.classifier.meta["cache"] == "hit"
  with pytest.raises(ValueError, match="classifier=... or data_dir"):
    embedders.get("demo_classifier")
