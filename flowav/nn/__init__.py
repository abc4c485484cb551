"""Shared neural-network blocks; every parameter carries one logical axis name per dimension."""

from __future__ import annotations

from flowav.nn.adaln import AdaLNModulation, FrameRows, gate, modulate
from flowav.nn.attention import (
  Attention,
  JointAttention,
  attention_weights,
  dot_product_attention,
)
from flowav.nn.conv import Conv1d, ConvSwiGLU, mask_frames
from flowav.nn.convnext import ConvNeXtV2Block, GlobalResponseNorm, depthwise_conv1d
from flowav.nn.embeddings import (
  Constant,
  Embed,
  FourierFeatures,
  TimestepEmbedder,
  timestep_sinusoidal,
)
from flowav.nn.frames import nearest_source_frames
from flowav.nn.inference import cast_kernels_to_compute_dtype, prepare_for_sampling
from flowav.nn.linear import Dense, torch_uniform_init
from flowav.nn.mlp import Mlp, SwiGLU
from flowav.nn.norm import FeatureNorm, LayerNorm, RMSNorm
from flowav.nn.rope import RopeConfig, apply_rope, rope_frequencies, time_positions
from flowav.nn.stack import Stack

__all__ = [
  "AdaLNModulation", "Attention", "Constant", "Conv1d", "ConvNeXtV2Block", "ConvSwiGLU", "Dense",
  "FrameRows",
  "Embed", "FeatureNorm", "FourierFeatures", "GlobalResponseNorm", "JointAttention", "LayerNorm",
  "Mlp", "RMSNorm",
  "RopeConfig", "Stack", "SwiGLU", "TimestepEmbedder", "apply_rope", "attention_weights",
  "cast_kernels_to_compute_dtype",
  "depthwise_conv1d", "dot_product_attention", "gate", "mask_frames", "modulate",
  "nearest_source_frames", "prepare_for_sampling", "rope_frequencies", "time_positions",
  "timestep_sinusoidal", "torch_uniform_init",
]
