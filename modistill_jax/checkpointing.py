"""Orbax checkpoints of a stage: the latest (for resuming) and the best (what the stage yields).

* `latest/<step>/{state,data}`: the whole train state plus the Grain iterator
  position, every `checkpoint_every_steps`, at the end and on SIGTERM. At least
  two are kept, so an unreadable newest one (a disk that filled up, a copy that
  was cut short) is reported and the one before it used.
* `best/<step>/{state,selection}`: the selected state (`step`, `params`,
  `batch_stats`, `frozen`: no optimizer state, which nothing downstream needs)
  and the record of how it was selected (metric values and the step each
  stream comes from). Both items are committed together by one Orbax save, so
  the bookkeeping and the checkpoint can never disagree, whenever the job dies.

Folder names come from `runs.StageDir`. The state is a plain dict, so any later
stage reads the streams it needs without knowing the optimizer that wrote it.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from absl import logging
from etils import epath
import grain
import jax
import orbax.checkpoint as ocp

from modistill_jax import runs
from modistill_jax import steps

BEST_KEYS = ('step', 'params', 'batch_stats', 'frozen')


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be written or read; the message names it and the way out."""


def state_to_dict(state: steps.TrainState) -> dict[str, Any]:
  return {
      'step': state.step,
      'params': state.params,
      'batch_stats': state.batch_stats,
      'opt_state': state.opt_state,
      'frozen': state.frozen,
  }


def dict_to_state(d: dict[str, Any]) -> steps.TrainState:
  return steps.TrainState(**d)


def best_dict(state: steps.TrainState) -> dict[str, Any]:
  """The part of a train state a best checkpoint keeps."""
  return {k: v for k, v in state_to_dict(state).items() if k in BEST_KEYS}


def reason(error: BaseException) -> str:
  """The OS-level reason of a storage error, whole, on one line.

  Orbax and TensorStore wrap the error of the write that failed (a
  `PermissionError` inside a background thread's error, a `ValueError` such as
  'OUT_OF_RANGE: Error writing local file "...": File too large [source
  locations=...]'); the innermost `OSError` names the file and the errno, and
  TensorStore's status text is kept up to its source locations.
  """
  seen, inner = set(), error
  while inner is not None and id(inner) not in seen:
    seen.add(id(inner))
    if isinstance(inner, OSError):
      return str(inner)
    inner = inner.__cause__ or inner.__context__
  text = ' '.join(str(error).split()) or type(error).__name__
  return text.split(' [source locations=')[0]


def failure(operation: str, path: epath.Path, error: BaseException) -> CheckpointError:
  """The error of a failed checkpoint operation: what was done to which path, and why."""
  return CheckpointError(f'Checkpoint {operation} {path} failed: {reason(error)}')


def check_writable(directory: epath.Path) -> None:
  """Fails at once, with the path and the OS error, where nothing can be written.

  A save that cannot write otherwise only fails in Orbax's background thread,
  after a step's worth of work or more.
  """
  probe = directory / f'.write-probe-{os.getpid()}'
  try:
    directory.mkdir(parents=True, exist_ok=True)
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise CheckpointError(f'Cannot write checkpoints to {directory}: {e}') from e


@functools.cache
def use_replica_parallel_saves_across_hosts_only() -> None:
  """Saves a replicated array from one replica unless the job spans several processes.

  Orbax's default on CPU and TPU ("replica-parallel" saving) has every replica
  write a slice of each replicated array, cut on its device by a small jitted
  program per shape and device: about 130 compilations at a stage's first save
  for the tiny stream on 4 CPU devices (5-25 s, the stage's largest cost after
  the train step's compilation), and again in every new process. Within one
  process the slices are written by the same host, so nothing is gained; across
  hosts (a pod) each host writes its part, which is what the slicing is for.
  The files are the same either way, so any checkpoint restores under either.
  Done once per process; Orbax's warning that a handler is replaced (every
  run would print it) is held back while it is.
  """
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array,
        ocp.type_handlers.ArrayHandler(use_replica_parallel=jax.process_count() > 1),
        override=True,
    )
  finally:
    logging.set_verbosity(verbosity)


class StageCheckpoints:
  """The latest and best checkpoint managers of one stage folder."""

  def __init__(self, directory: runs.StageDir, *, keep: int = 2):
    self.directory = directory
    use_replica_parallel_saves_across_hosts_only()
    for path in (directory.latest_dir, directory.best_dir):
      check_writable(path)
    # Both managers can save the same step at once (the last step is the best
    # too). With several processes their async saves meet at barriers named
    # after the step; distinct prefixes keep the two managers' barriers apart.
    self.latest = ocp.CheckpointManager(
        directory.latest_dir,
        item_names=('state', 'data'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max(keep, 2),
            create=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=runs.LATEST_DIR
            ),
        ),
    )
    self.best = ocp.CheckpointManager(
        directory.best_dir,
        item_names=('state', 'selection'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1,
            create=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=runs.BEST_DIR
            ),
        ),
    )

  def save_latest(self, step: int, state: steps.TrainState, data_iterator) -> None:
    self._checked(
        lambda: self.latest.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state_to_dict(state)),
                data=grain.checkpoint.CheckpointSave(data_iterator),
            ),
            force=True,
        ),
        self.directory.latest_dir,
    )

  def save_best(self, step: int, best: dict[str, Any], selection: dict[str, Any]) -> None:
    """Saves the selected state and its selection record as one checkpoint.

    A resumed stage validates again at steps it had already validated; where
    the best of such a step is already committed, it is kept as it is.
    """
    if step in self.best.all_steps():
      return
    self._checked(
        lambda: self.best.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(best), selection=ocp.args.JsonSave(selection)
            ),
            force=True,
        ),
        self.directory.best_dir,
    )

  def _checked(self, save, directory: epath.Path) -> None:
    """Runs a save after surfacing any error of the previous background save.

    Any error (OS, TensorStore, Orbax's) becomes one `CheckpointError` naming the
    folder and the reason; the checkpoints committed before stay as they are.
    """
    self.check_for_errors()
    try:
      save()
    except Exception as e:  # pylint: disable=broad-except  (whatever the storage layer raises)
      raise failure('save to', directory, e) from e

  def check_for_errors(self) -> None:
    """Raises the error of a failed background save now, not at the next save or the end.

    Orbax's own `check_for_errors` does not see a failed commit: its finalize
    thread takes the error (logs it and skips the step) and keeps it for
    `wait_until_finished`. So a manager whose save is over is waited for, which
    returns at once or raises that error; one still saving is left alone.
    """
    for manager, directory in (
        (self.latest, self.directory.latest_dir),
        (self.best, self.directory.best_dir),
    ):
      try:
        manager.check_for_errors()
        if not manager.is_saving_in_progress():
          manager.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        raise failure('save to', directory, e) from e

  def restore_latest(
      self, abstract_state: steps.TrainState, data_iterator
  ) -> tuple[steps.TrainState, list[str]] | None:
    """The newest readable latest checkpoint and notes on unreadable newer ones; None if none.

    Raises:
      CheckpointError: checkpoints exist and none of them can be read.
    """
    notes = []
    for step in sorted(self.latest.all_steps(), reverse=True):
      try:
        restored = self.latest.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(state_to_dict(abstract_state)),
                data=grain.checkpoint.CheckpointRestore(data_iterator),
            ),
        )
      except Exception as e:  # pylint: disable=broad-except  (TensorStore, OS and format errors)
        notes.append(
            f'checkpoint {self.directory.latest_dir / str(step)} is unreadable '
            f'({type(e).__name__}: {reason(e)}); removed it, using an older one'
        )
        # The resumed run saves this step again; the unreadable copy would be in its way.
        self.latest.delete(step)
        continue
      return dict_to_state(restored['state']), notes
    if notes:
      raise CheckpointError(
          f'No readable checkpoint in {self.directory.latest_dir}: '
          + '; '.join(notes)
          + f'. Remove the stage folder {self.directory.path} and train the stage again.'
      )
    return None

  def clear_best(self) -> None:
    for step in self.best.all_steps():
      self.best.delete(step)

  def best_selection(self) -> dict[str, Any] | None:
    """The selection record of the committed best checkpoint, or None before the first."""
    step = self.best.latest_step()
    if step is None:
      return None
    try:
      restored = self.best.restore(step, args=ocp.args.Composite(selection=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      raise corrupted_best(self.directory.best_dir / str(step), e) from e
    return restored['selection']

  def restore_best(self, abstract_best: dict[str, Any]) -> dict[str, Any]:
    step = self.best.latest_step()
    try:
      restored = self.best.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_best))
      )
    except Exception as e:  # pylint: disable=broad-except
      raise corrupted_best(self.directory.best_dir / str(step), e) from e
    return restored['state']

  def wait(self) -> None:
    for manager, directory in (
        (self.latest, self.directory.latest_dir),
        (self.best, self.directory.best_dir),
    ):
      try:
        manager.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        raise failure('save to', directory, e) from e

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def corrupted_best(path: epath.Path, error: Exception) -> CheckpointError:
  return CheckpointError(
      f'The best checkpoint {path} is unreadable ({type(error).__name__}: {reason(error)}). '
      f'Remove the stage folder {path.parent.parent.parent} and train the stage again (its '
      'prerequisites are untouched).'
  )


def read_best_state(best_dir: epath.Path) -> dict[str, Any]:
  """A best checkpoint's `{step, params, batch_stats, frozen}` as nested numpy dicts.

  Readable on any device topology: the arrays are restored onto one local
  device, not onto the mesh they were saved from, so a checkpoint written by
  a multi-device job opens on a machine with fewer devices (`predict` and
  `export` on a workstation, a later stage on other hardware).

  Raises:
    FileNotFoundError: no committed best checkpoint.
    CheckpointError: it cannot be read.
  """
  handlers = {'state': ocp.StandardCheckpointHandler(), 'selection': ocp.JsonCheckpointHandler()}
  with ocp.CheckpointManager(
      best_dir, item_handlers=handlers, options=ocp.CheckpointManagerOptions(create=False)
  ) as mgr:
    step = mgr.latest_step()
    if step is None:
      raise FileNotFoundError(f'No best checkpoint in {best_dir}.')
    try:
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree.map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
          mgr.item_metadata(step)['state'],
      )
      # Both items, so that Orbax has nothing to warn about leaving behind.
      restored = mgr.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(target), selection=ocp.args.JsonRestore()
          ),
      )
    except Exception as e:  # pylint: disable=broad-except
      raise corrupted_best(best_dir / str(step), e) from e
  return jax.device_get(restored['state'])


def stream_variables(state: dict[str, Any], stream: str) -> dict[str, Any]:
  """`{'params', 'batch_stats'}` of one stream of a saved state, trainable or frozen."""
  for source in (state, state.get('frozen') or {}):
    params = source.get('params') or {}
    if stream in params:
      return {'params': params[stream], 'batch_stats': source['batch_stats'][stream]}
  available = sorted(
      set(state.get('params') or {}) | set((state.get('frozen') or {}).get('params') or {})
  )
  raise KeyError(f'No stream {stream!r} in checkpoint; it has {available}.')
