"""The run folder: every name in it, what "finished" means, and a finished stage loaded whole.

A run folder (`--workdir`) holds one subfolder per stage, laid out as below.
This is the only module that knows these names; every other module asks it
for paths, so a file can be renamed or moved in one place.

    WORKDIR/<stage>/
      config.json            the stage's effective config (what trained it)
      dataset.json           dataset, protocol, class names, split sizes
      lock.json              the job that holds the folder (host, pid, heartbeat)
      metrics.jsonl          one record per (split, step); TensorBoard in events/
      checkpoints/latest/    train state + data iterator position, for resuming
      checkpoints/best/      the selected state and how it was selected
      predictions_<split>.npz
      results.json           written last: a stage is finished when it exists
      noise_sweep.json       Table 2 (evaluate --sweep)
    WORKDIR/report.md (+ PNGs), WORKDIR/no_connections/ (the demo's ablation run)

"Finished" is one definition for the trainer (skip and chain), `evaluate`,
`predict`, `export`, `report` and the notebook: `results.json` exists. The
trainer writes it only after the best checkpoint is committed and the test
evaluation is done, atomically, so an interrupted stage is never finished.

Paths are `etils.epath` paths, so a work folder may be local or `gs://...`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from typing import Any

from etils import epath
import jax
import ml_collections

CONFIG_FILE = 'config.json'
DATASET_FILE = 'dataset.json'
LOCK_FILE = 'lock.json'
METRICS_FILE = 'metrics.jsonl'
EVENTS_DIR = 'events'
CHECKPOINTS_DIR = 'checkpoints'
LATEST_DIR = 'latest'
BEST_DIR = 'best'
RESULTS_FILE = 'results.json'
NOISE_SWEEP_FILE = 'noise_sweep.json'
REPORT_FILE = 'report.md'
ABLATION_DIR = 'no_connections'

PathLike = str | os.PathLike


class StageNotFinishedError(FileNotFoundError):
  """A stage that another stage or command needs has not finished in the run folder."""


def is_remote(path: PathLike) -> bool:
  """Whether `path` is a URI (`gs://...`): objects that cannot be appended to, renamed or linked."""
  return '://' in os.fspath(path)


def as_path(path: PathLike) -> epath.Path:
  """An epath path; a local one is made absolute (Orbax and locks need absolute paths)."""
  return epath.Path(path if is_remote(path) else os.path.abspath(path))


@dataclasses.dataclass(frozen=True)
class StageDir:
  """The files of one stage of a run folder."""

  workdir: epath.Path
  name: str

  @property
  def path(self) -> epath.Path:
    return self.workdir / self.name

  @property
  def config_file(self) -> epath.Path:
    return self.path / CONFIG_FILE

  @property
  def dataset_file(self) -> epath.Path:
    return self.path / DATASET_FILE

  @property
  def lock_file(self) -> epath.Path:
    return self.path / LOCK_FILE

  @property
  def metrics_file(self) -> epath.Path:
    return self.path / METRICS_FILE

  @property
  def events_dir(self) -> epath.Path:
    return self.path / EVENTS_DIR

  @property
  def latest_dir(self) -> epath.Path:
    return self.path / CHECKPOINTS_DIR / LATEST_DIR

  @property
  def best_dir(self) -> epath.Path:
    return self.path / CHECKPOINTS_DIR / BEST_DIR

  @property
  def results_file(self) -> epath.Path:
    return self.path / RESULTS_FILE

  @property
  def noise_sweep_file(self) -> epath.Path:
    return self.path / NOISE_SWEEP_FILE

  def predictions_file(self, split: str) -> epath.Path:
    return self.path / f'predictions_{split}.npz'

  def finished(self) -> bool:
    """The one definition: the stage wrote its results (after its best checkpoint and test)."""
    return self.results_file.exists()


def stage_dir(workdir: PathLike, stage: str) -> StageDir:
  return StageDir(as_path(workdir), stage)


def report_file(workdir: PathLike) -> epath.Path:
  return as_path(workdir) / REPORT_FILE


def report_asset(workdir: PathLike, name: str) -> epath.Path:
  """A file the report writes beside `report.md` (a plot)."""
  return as_path(workdir) / name


def ablation_workdir(workdir: PathLike) -> epath.Path:
  """The no-connections ablation run kept inside a run folder (the demo's Table 1 row 9/14)."""
  return as_path(workdir) / ABLATION_DIR


def share_stage(workdir: PathLike, stage: str, from_workdir: PathLike) -> None:
  """Makes `from_workdir`'s stage folder appear in `workdir` too, as a relative symbolic link.

  Runs that start from the same earlier stage (the demo's no-connection ablation,
  every variant of a claims seed) train it once and find it through the link where
  chaining, evaluation and the report look for it. The link is relative, so the
  folders holding both can be moved or copied whole. Sharing again the same way is
  a no-op (a resumed run); a different stage already in its place is an error.

  Raises:
    ValueError: either folder is not local (object stores have no links).
    FileExistsError: `workdir` already holds that stage, trained there or linked elsewhere.
  """
  for path in (workdir, from_workdir):
    if is_remote(path):
      raise ValueError(
          f'{path}: a stage can be shared only between local folders (shared stages are '
          'symbolic links, which object stores do not have).'
      )
  link = os.fspath(stage_dir(workdir, stage).path)
  target = os.path.relpath(os.fspath(stage_dir(from_workdir, stage).path), os.path.dirname(link))
  if os.path.lexists(link):
    if os.path.islink(link) and os.readlink(link) == target:
      return
    held = f'a link to {os.readlink(link)}' if os.path.islink(link) else 'trained there'
    raise FileExistsError(
        f'{link}: cannot share {stage} from {from_workdir}, the folder already holds another '
        f'{stage} ({held}).'
    )
  os.makedirs(os.fspath(workdir), exist_ok=True)
  os.symlink(target, link)


def stages_with_metrics(workdir: PathLike) -> list[str]:
  """Stage folders of a run that have written metrics, sorted."""
  root = as_path(workdir)
  if not root.exists():
    return []
  return sorted(p.name for p in root.iterdir() if (p / METRICS_FILE).exists())


# MARK: JSON files


def read_json(path: PathLike) -> Any:
  return json.loads(epath.Path(path).read_text())


def write_whole(path: PathLike, data: bytes) -> None:
  """Writes a file whole or not at all, so an interrupted job never leaves half of one.

  Locally: a temporary file renamed over the target. On object stores
  (`gs://`): one upload, which is atomic already (a rename there is a copy
  and a delete). Only process 0 writes, so multi-host jobs write each file once.
  """
  if jax.process_index() != 0:
    return
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(path):
    path.write_bytes(data)
    return
  tmp = path.parent / f'.{path.name}.tmp-{os.getpid()}'
  tmp.write_bytes(data)
  tmp.replace(path)


def write_json(path: PathLike, obj: Any) -> None:
  write_whole(path, json.dumps(obj, indent=2).encode())


# MARK: a finished stage


@dataclasses.dataclass
class FinishedStage:
  """A finished stage as it was trained: config, dataset, results and best state."""

  dir: StageDir
  config: ml_collections.ConfigDict
  dataset: dict[str, Any]
  results: dict[str, Any]

  @property
  def name(self) -> str:
    return self.dir.name

  @property
  def class_names(self) -> tuple[str, ...]:
    return tuple(self.dataset['class_names'])

  def best_state(self) -> dict[str, Any]:
    """The best checkpoint's `{step, params, batch_stats, frozen}` (no optimizer state)."""
    from modistill_jax import checkpointing  # pylint: disable=g-import-not-at-top (Orbax is heavy)

    return checkpointing.read_best_state(self.dir.best_dir)


def train_command(
    config_file: str | None, stage: str, workdir: PathLike, overrides: tuple[str, ...] = ()
) -> str:
  """The command that trains `stage`, runnable as printed when the config file is known.

  `config_file` may carry the config's options after a colon (`configs/demo.py:tiny`,
  see `config_lib.parse_config_arg`); they follow the stage in the command.
  """
  path, _, options = (config_file or '<config.py>').partition(':')
  config_arg = f'{path}:{stage}' + (f',{options}' if options else '')
  return ' '.join(
      (
          'python -m modistill_jax.train',
          f'--config={config_arg}',
          f'--workdir={workdir}',
          *overrides,
      )
  )


def not_finished_error(
    workdir: PathLike,
    candidates: tuple[str, ...],
    config_file: str | None = None,
    overrides: tuple[str, ...] = (),
) -> StageNotFinishedError:
  """The error for a missing prerequisite: where it was looked for and how to make it."""
  dirs = [stage_dir(workdir, n) for n in candidates]
  where = ' or '.join(str(d.path) for d in dirs)
  started = [d for d in dirs if d.path.exists()]
  state = (
      f' ({started[0].path} exists but has no {RESULTS_FILE}: interrupted, rerun its '
      'command to resume it)'
      if started
      else ''
  )
  return StageNotFinishedError(
      f'Stage {candidates[0]} has not finished in {where}{state}. Produce it with:\n  '
      + train_command(config_file, candidates[0], workdir, overrides)
  )


def find_finished(
    workdir: PathLike,
    candidates: tuple[str, ...],
    config_file: str | None = None,
    overrides: tuple[str, ...] = (),
) -> StageDir:
  """The first finished stage among `candidates` (e.g. step1, step1_rgb)."""
  for name in candidates:
    directory = stage_dir(workdir, name)
    if directory.finished():
      return directory
  raise not_finished_error(workdir, candidates, config_file, overrides)


def load_stage(workdir: PathLike, stage: str) -> FinishedStage:
  """A finished stage: its saved config, dataset info and results; its best state on demand.

  Raises:
    StageNotFinishedError: the stage has no results in `workdir`.
  """
  from modistill_jax import config_lib  # pylint: disable=g-import-not-at-top (models, losses)

  directory = find_finished(workdir, (stage,))
  return FinishedStage(
      dir=directory,
      config=config_lib.with_defaults(read_json(directory.config_file)),
      dataset=read_json(directory.dataset_file),
      results=read_json(directory.results_file),
  )


# MARK: one job per stage folder


class StageLockedError(RuntimeError):
  """Another job holds the stage folder."""


# A job refreshes its lock at every log line and checkpoint; one silent this long is
# taken for dead (a preempted TPU VM comes back with another host name and pid).
LOCK_STALE_SECONDS = 15 * 60


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class StageLock:
  """Refuses a second job on one stage folder; held by process 0 of a job.

  The lock file records the holder's host, pid and last heartbeat. It is stale
  (taken over, with a message) when its process is gone from this host or its
  heartbeat is older than `LOCK_STALE_SECONDS`; otherwise a second job stops
  with the holder's identity and how to clear the lock.
  """

  def __init__(self, directory: StageDir):
    self.file = directory.lock_file
    self.host, self.pid = socket.gethostname(), os.getpid()
    self.held = False

  def _record(self) -> dict[str, Any]:
    return {'host': self.host, 'pid': self.pid, 'heartbeat': time.time()}

  def acquire(self) -> str | None:
    """Takes the lock; returns a note when a stale one was taken over."""
    if jax.process_index() != 0:
      return None
    note = None
    if self.file.exists():
      try:
        holder = read_json(self.file)
      except (OSError, ValueError):
        holder = None
      if holder is not None and not self._stale(holder):
        raise StageLockedError(
            f'{self.file.parent} is in use by pid {holder["pid"]} on {holder["host"]} '
            f'(heartbeat {time.time() - holder["heartbeat"]:.0f} s ago). Two jobs on one stage '
            'would overwrite each other. If that job is not running (killed on another '
            f'machine), remove the lock: rm {self.file}'
        )
      note = (
          f'took over the stale lock of pid {holder.get("pid")} on {holder.get("host")} '
          '(no longer running, or silent too long)'
          if holder
          else 'replaced an unreadable lock'
      )
    write_json(self.file, self._record())
    self.held = True
    return note

  def _stale(self, holder: dict[str, Any]) -> bool:
    if holder.get('host') == self.host:
      return holder.get('pid') == self.pid or not _pid_alive(int(holder['pid']))
    return time.time() - float(holder.get('heartbeat', 0)) > LOCK_STALE_SECONDS

  def heartbeat(self) -> None:
    if self.held:
      write_json(self.file, self._record())

  def release(self) -> None:
    if self.held:
      self.file.unlink(missing_ok=True)
      self.held = False

  def __enter__(self) -> 'StageLock':
    return self

  def __exit__(self, *exc) -> None:
    self.release()
