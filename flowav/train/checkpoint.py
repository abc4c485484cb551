"""orbax checkpoints of the train state + the global data position + run metadata.

`workdir/checkpoints/<step>/` holds three items: `state` (TrainState), `data` (JSON
`pipeline.DataPosition`: step, global batch size, next global element, seed, record count; the same
whatever the process count, so a run can resume on another topology) and `meta` (JSON: model name
and variant, parameter paths digest, codec and latent statistics). orbax writes each step to a
temporary directory and renames it when complete, so a killed save never leaves a directory that
`latest_step` would pick up. Every process calls `save` (orbax writes each array shard from the
process that holds it, and the JSON items from process 0).
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from flowav.data.pipeline import DataPosition
from flowav.train.state import TrainState


def params_digest(params: Any) -> str:
  """Hash of every parameter's path and shape: equal digests mean a checkpoint fits the model.

  Shapes matter as well as paths: a deeper scanned stack keeps its paths but grows its 'layers' axis.
  """
  lines = sorted(f"{'/'.join(str(k) for k in path)} {tuple(jnp.shape(leaf))}"
                 for path, leaf in nnx.to_flat_state(params))
  return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


class Checkpointer:
  """Saves and restores (TrainState, data position, metadata) under `workdir/checkpoints`."""

  def __init__(self, workdir: str | pathlib.Path, *, keep: int = 3, async_save: bool = True,
               save_timeout_minutes: float = 60.0):
    """`save_timeout_minutes`: how long a background save may take before the run stops with an
    error (orbax's default is 20 min; a large sharded state on slow storage, or a process paused
    longer than that, would otherwise end a healthy run). The half-written step is never used."""
    if save_timeout_minutes <= 0:
      raise ValueError(f"train.checkpoint_timeout_minutes must be > 0, got {save_timeout_minutes}")
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        async_options=ocp.AsyncOptions(timeout_secs=max(1, round(save_timeout_minutes * 60)))),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, state: TrainState, data: DataPosition | None, meta: dict[str, Any], *,
           force: bool = False) -> None:
    step = int(jax.device_get(state.step))
    if data is not None and data.step != step:
      raise ValueError(f"data position is at step {data.step}, the state at step {step}")
    args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data is not None:
      args["data"] = ocp.args.JsonSave(data.to_json())
    self.manager.save(step, args=ocp.args.Composite(**args), force=force)

  def read_meta(self, step: int) -> dict[str, Any]:
    out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out.meta)

  def check_compatible(self, step: int, expected: dict[str, Any]) -> dict[str, Any]:
    """Raises a clear error if the checkpoint at `step` was written by another model."""
    meta = self.read_meta(step)
    where = self.directory / str(step)
    for key in ("model", "params_digest"):
      if meta.get(key) != expected.get(key):
        raise ValueError(
          f"Checkpoint {where} does not fit this config: its {key} is {meta.get(key)!r}, the "
          f"config builds {expected.get(key)!r} (model {expected.get('model')!r}, variant "
          f"{expected.get('variant')!r}). Use another --workdir, or the config it was trained with.")
    return meta

  def restore(self, step: int, abstract_state: TrainState,
              expected_meta: dict[str, Any]) -> tuple[TrainState, dict[str, Any]]:
    """Restores onto the shardings carried by `abstract_state` (ShapeDtypeStructs)."""
    meta = self.check_compatible(step, expected_meta)
    out = self.manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    return out.state, meta

  def read_data_position(self, step: int) -> DataPosition | None:
    """The data position saved at `step`; None for a checkpoint written before it was recorded."""
    where = self.directory / str(step)
    if not (where / "data").exists():
      return None
    out = self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
    pos = DataPosition.from_json(out.data, source=f"{where}/data")
    if pos.step != step:
      raise ValueError(f"Checkpoint {where} is inconsistent: its data position is for step "
                       f"{pos.step}. Remove this step directory to resume from an earlier one.")
    return pos

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
