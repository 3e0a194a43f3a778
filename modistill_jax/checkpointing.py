"""Orbax checkpoints of a stage: the latest (with the data iterator) and the best.

Layout of a stage folder `WORKDIR/<stage>/`:

* `checkpoints/latest/<step>/{state,data}`: train state plus the Grain iterator
  position, every `checkpoint_every_steps`, at the end, and on SIGTERM; a
  restarted job resumes from it and sees exactly the batches an uninterrupted
  run would have.
* `checkpoints/best/<step>/state`: the state with the best validation accuracy
  (or the final one when the protocol has no validation split). This is what
  the test evaluation, later stages and `predict`/`export` read.

The state is saved as a plain dict (`step`, `params`, `batch_stats`,
`opt_state`, `frozen`), so any later stage can read the streams it needs
without knowing the optimizer of the stage that wrote it.
"""

from __future__ import annotations

import os
from typing import Any

from etils import epath
import grain
import jax
import orbax.checkpoint as ocp

from modistill_jax import steps


def state_to_dict(state: steps.TrainState) -> dict[str, Any]:
  return {'step': state.step, 'params': state.params, 'batch_stats': state.batch_stats,
          'opt_state': state.opt_state, 'frozen': state.frozen}


def dict_to_state(d: dict[str, Any]) -> steps.TrainState:
  return steps.TrainState(**d)


class StageCheckpoints:
  """The latest and best checkpoint managers of one stage folder."""

  def __init__(self, stage_dir: str | os.PathLike, *, keep: int = 1,
               save_interval_steps: int = 1):
    root = _absolute(stage_dir) / 'checkpoints'
    # Both managers can save the same step at once (the last step is the best
    # too). With several processes their async saves meet at barriers named
    # after the step; distinct prefixes keep the two managers' barriers apart.
    self.latest = ocp.CheckpointManager(
        root / 'latest', item_names=('state', 'data'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, save_interval_steps=save_interval_steps,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix='latest')))
    self.best = ocp.CheckpointManager(
        root / 'best', item_names=('state',),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix='best')))

  def save_latest(self, step: int, state: steps.TrainState, data_iterator, *,
                  force: bool = False) -> bool:
    return self.latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state_to_dict(state)),
        data=grain.checkpoint.CheckpointSave(data_iterator)), force=force)

  def save_best(self, step: int, state: steps.TrainState) -> None:
    self.best.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state_to_dict(state))), force=True)

  def restore_latest(self, abstract_state: steps.TrainState, data_iterator
                     ) -> steps.TrainState:
    step = self.latest.latest_step()
    restored = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state_to_dict(abstract_state)),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
    return dict_to_state(restored['state'])

  def restore_best(self, abstract_state: steps.TrainState) -> steps.TrainState:
    restored = self.best.restore(self.best.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state_to_dict(abstract_state))))
    return dict_to_state(restored['state'])

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def _absolute(path: str | os.PathLike) -> epath.Path:
  """Orbax rejects relative paths; a local one is made absolute (URLs already are)."""
  path = str(path)
  return epath.Path(path if '://' in path else os.path.abspath(path))


def best_dir(stage_dir: str | os.PathLike) -> epath.Path:
  return _absolute(stage_dir) / 'checkpoints' / 'best'


def has_best(stage_dir: str | os.PathLike) -> bool:
  """Whether the stage finished a best checkpoint (a folder alone is not enough:
  a run that died early leaves one empty, and Orbax's unfinished saves carry a
  temporary suffix rather than a plain step number)."""
  directory = best_dir(stage_dir)
  return directory.exists() and any(p.name.isdigit() for p in directory.iterdir())


def read_best_state(stage_dir: str | os.PathLike) -> dict[str, Any]:
  """A finished stage's best state as nested numpy dicts (no target needed).

  Readable on any device topology: the arrays are restored onto one local
  device, not onto the mesh they were saved from, so a checkpoint written by
  a multi-device job opens on a machine with fewer devices (`predict` and
  `export` on a workstation, a later stage on other hardware).

  Raises:
    FileNotFoundError: the stage has no best checkpoint yet.
  """
  directory = best_dir(stage_dir)
  with ocp.CheckpointManager(directory, item_handlers={'state': ocp.StandardCheckpointHandler()},
                             options=ocp.CheckpointManagerOptions(create=False)) as mgr:
    step = mgr.latest_step()
    if step is None:
      raise FileNotFoundError(str(directory))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          mgr.item_metadata(step)['state'])
    restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  return jax.device_get(restored['state'])


def stream_variables(state: dict[str, Any], stream: str) -> dict[str, Any]:
  """`{'params', 'batch_stats'}` of one stream of a saved state, trainable or frozen."""
  for source in (state, state.get('frozen') or {}):
    params = source.get('params') or {}
    if stream in params:
      return {'params': params[stream], 'batch_stats': source['batch_stats'][stream]}
  available = sorted(set(state.get('params') or {})
                     | set((state.get('frozen') or {}).get('params') or {}))
  raise KeyError(f'No stream {stream!r} in checkpoint; it has {available}.')
