r"""How far the sampler's weight layout moves a trained AudioGen-Omni's velocity.

For held-out clips of each flowav-demo subset, one velocity (t = 0.3, the same noise) from a run's
checkpoint in four forms, each against the float32 training layout: bfloat16 training layout,
and the layout `flowav.nn.prepare_for_sampling` gives (direct k3 convs, `winograd=False`, and
Winograd F(2, 3)) in the run's dtype. Reports RMS errors beside the velocity's RMS. Writes
benchmarks/results/omni_layout_error.json (or --out).

  python benchmarks/omni_layout_error.py --workdir=runs/omni-demo [--clips=4]
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from flowav import generate
from flowav.data import inputs
from flowav.eval import omni
from flowav.nn import prepare_for_sampling

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained AudioGen-Omni run.", required=True)
_CLIPS = flags.DEFINE_integer("clips", 4, "Held-out clips per subset.")
_OUT = flags.DEFINE_string("out", None, "Result JSON (default benchmarks/results/...).")


def velocity_fn(run: generate.Run, layout: str):
  """Jitted (params, rest, x, t, batch) -> float32 velocity of `run` in `layout`: 'training',
  'direct' or 'winograd'; built once per run and layout, so each batch shape compiles once."""

  @jax.jit
  def apply(params, rest, x, t, batch):
    model = nnx.merge(run.graphdef, params, rest)
    if layout != "training":
      model = prepare_for_sampling(model, winograd=layout == "winograd")
    return model(x, t, model.conditions(batch)).astype(jnp.float32)

  return lambda x, t, batch: np.asarray(apply(run.params, run.rest, x, t, batch))


def main(_):
  runs = {d: generate.load_run(_WORKDIR.value, dtype=d) for d in ("float32", "bfloat16")}
  rms = lambda v: float(np.sqrt(np.mean(np.square(v))))  # noqa: E731
  out = {"workdir": _WORKDIR.value, "step": runs["float32"].step, "t": 0.3, "subsets": {}}
  fns = {(d, layout): velocity_fn(run, layout) for d, run in runs.items()
         for layout in ("training", "direct", "winograd")}
  for subset, clips in sorted(omni.heldout_by_subset(runs["float32"], _CLIPS.value).items()):
    batch = dict(inputs.stack([c.prepared for c in clips]))
    x = jax.random.normal(jax.random.key(0), np.shape(batch["audio_latents"]))
    t = jnp.full((x.shape[0],), 0.3)
    exact = fns["float32", "training"](x, t, batch)
    row = {"velocity_rms": rms(exact), "clips": len(clips)}
    for (dtype, layout), fn in fns.items():
      if (dtype, layout) != ("float32", "training"):
        row[f"{dtype}_{layout}_error_rms"] = rms(fn(x, t, batch) - exact)
    out["subsets"][subset] = row
    print(subset, json.dumps(row), flush=True)
  path = pathlib.Path(_OUT.value or pathlib.Path(__file__).parent / "results" /
                      "omni_layout_error.json")
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(out, indent=1) + "\n")
  tmp.replace(path)


if __name__ == "__main__":
  app.run(main)
