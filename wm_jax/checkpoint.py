"""Orbax checkpoints of a run: a pytree of arrays (agent state, replay, RNG key) plus a JSON
dict of counters (exact Python ints and floats).

Orbax writes each step to a temporary folder and renames it when complete, so a run killed
mid-save keeps its previous checkpoint. An unreadable checkpoint is reported, never replaced.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from wm_jax.errors import CorruptCheckpointError


class Checkpointer:
  """Saves and restores (`tree`, `meta`) under `<workdir>/checkpoints/<step>`."""

  def __init__(self, workdir: str, keep: int = 2):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, tree, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()

  def restore(self, template):
    """(tree, meta) of the latest checkpoint, tree shaped like `template`; None if none exists."""
    step = self.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      return out["state"], out["meta"]
    except Exception as e:  # orbax raises many types for damaged files; report them all alike
      raise CorruptCheckpointError(
          f"Checkpoint {os.path.join(self.directory, str(step))} cannot be read "
          f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); move that "
          f"folder aside to resume from an older checkpoint, or use a new --workdir.") from None

  def restore_part(self, name: str, template):
    """(tree[name] of the latest checkpoint, shaped like `template`, its meta), reading no other
    part of the tree (a policy without its replay); None if there is no checkpoint."""
    step = self.latest_step()
    if step is None:
      return None
    abstract = {name: jax.tree.map(ocp.utils.to_shape_dtype_struct, template)}
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(abstract, partial_restore=True),
          meta=ocp.args.JsonRestore()))
      return out["state"][name], out["meta"]
    except Exception as e:  # as in `restore`
      raise CorruptCheckpointError(
          f"Checkpoint {os.path.join(self.directory, str(step))} cannot be read "
          f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); move that "
          f"folder aside to use an older checkpoint.") from None

  def close(self) -> None:
    self.manager.close()
