"""The run folder: every name in it and what "finished" means (`finished_stage` loads one whole).

A run folder (`--workdir`) holds one subfolder per stage, laid out as below.
This is the only module that knows these names; every other module asks it
for paths, so a file can be renamed or moved in one place.

    WORKDIR/<stage>/
      config.json            the stage's effective config (what trained it)
      dataset.json           dataset, protocol, class names, split sizes
      lock.json              the job that holds the folder (host, pid, token, heartbeat)
      train_time.json        seconds trained and runs so far, up to the last checkpoint
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
import sys
import threading
import time
from typing import Any
import uuid

from absl import logging
from etils import epath
import jax

CONFIG_FILE = 'config.json'
DATASET_FILE = 'dataset.json'
LOCK_FILE = 'lock.json'
TRAIN_TIME_FILE = 'train_time.json'
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
  def train_time_file(self) -> epath.Path:
    return self.path / TRAIN_TIME_FILE

  @property
  def metrics_file(self) -> epath.Path:
    return self.path / METRICS_FILE

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


# MARK: one job per folder


class LockHeldError(RuntimeError):
  """Another live job holds the lock."""


class StageLockedError(LockHeldError):
  """Another job holds the stage folder."""


# A holder's background thread rewrites its lock every `LOCK_BEAT_SECONDS`, through
# compiles, evaluation and saves alike; a lock silent for `LOCK_STALE_SECONDS` is taken
# for dead (a preempted TPU VM comes back with another host name and pid).
LOCK_BEAT_SECONDS = 30.0
LOCK_STALE_SECONDS = 15 * 60
# After taking over a stale lock, how long a job waits before reading it back: two
# jobs that took it over together each wrote their record, and the later one holds it.
LOCK_SETTLE_SECONDS = 1.0
# The exit status of a job whose lock another job took over (`JobLock`): a failure.
LOCK_LOST_EXIT_CODE = 1


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class _LocalLockFile:
  """A lock file on a local or shared (NFS) file system.

  Created by a hard link from a whole temporary file, which fails where the
  name exists (atomic, NFS included), so no reader ever sees a half-written
  lock (where links are not supported, by an exclusive create); rewritten whole
  by rename. A version is the file's bytes (each record carries its writer's
  token, so two writers never write the same bytes).
  """

  def __init__(self, path: epath.Path):
    self.path = path

  def create(self, data: bytes) -> bytes | None:
    """Writes the file if there is none; its version, or None where one exists."""
    tmp = self.path.parent / f'.{self.path.name}.new-{os.getpid()}'
    tmp.write_bytes(data)
    try:
      os.link(tmp, self.path)
    except FileExistsError:
      return None
    except OSError:  # no hard links here (some FUSE mounts): an exclusive create, then the bytes
      return self._create_exclusive(data)
    finally:
      tmp.unlink()
    return data

  def _create_exclusive(self, data: bytes) -> bytes | None:
    try:
      fd = os.open(os.fspath(self.path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return None
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    return data

  def read(self) -> tuple[bytes, bytes] | None:
    """`(content, version)`, or None where there is no file."""
    try:
      data = self.path.read_bytes()
    except FileNotFoundError:
      return None
    return data, data

  def replace(self, data: bytes, version: bytes) -> bytes | None:
    """Rewrites the file if it is still at `version`; the new version, or None."""
    current = self.read()
    if current is None or current[1] != version:
      return None
    tmp = self.path.parent / f'.{self.path.name}.tmp-{os.getpid()}'
    tmp.write_bytes(data)
    tmp.replace(self.path)
    return data

  def delete(self, version: bytes) -> None:
    current = self.read()
    if current is not None and current[1] == version:
      self.path.unlink(missing_ok=True)


class _GcsLockFile:
  """A lock object on Cloud Storage, changed only through generation preconditions.

  `ifGenerationMatch=0` creates it only if absent, and a rewrite or delete names
  the generation it replaces, so of several hosts racing for it exactly one wins.
  """

  def __init__(self, path: epath.Path):
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
    from google.cloud import storage  # pylint: disable=g-import-not-at-top

    bucket, _, name = os.fspath(path).removeprefix('gs://').partition('/')
    self.path = path
    self._lost = (exceptions.PreconditionFailed, exceptions.NotFound)
    self._blob = storage.Client(project=None).bucket(bucket).blob(name)

  def _upload(self, data: bytes, generation: int) -> int | None:
    try:
      self._blob.upload_from_string(
          data, content_type='application/json', if_generation_match=generation
      )
    except self._lost:
      return None
    return self._blob.generation

  def create(self, data: bytes) -> int | None:
    return self._upload(data, 0)

  def read(self) -> tuple[bytes, int] | None:
    blob = self._blob.bucket.get_blob(self._blob.name)
    if blob is None:
      return None
    try:
      return blob.download_as_bytes(if_generation_match=blob.generation), blob.generation
    except self._lost:  # rewritten between the two requests: read it again
      return self.read()

  def replace(self, data: bytes, version: int) -> int | None:
    return self._upload(data, version)

  def delete(self, version: int) -> None:
    try:
      self._blob.delete(if_generation_match=version)
    except self._lost:
      pass


class JobLock:
  """One job at a time on a folder, across processes and hosts sharing it (local or `gs://`).

  Held by process 0 of a job. The lock file records the holder's host, pid,
  a token of its own and the last heartbeat. Acquiring is atomic (create if
  absent); a lock whose process is gone from this host, or whose heartbeat is
  older than `LOCK_STALE_SECONDS`, is stale and taken over by compare-and-swap
  (a `gs://` generation precondition; locally a rewrite of the bytes read,
  confirmed after `LOCK_SETTLE_SECONDS`). While held, a background thread
  rewrites it every `beat_seconds`, whatever the job is doing (compiling,
  evaluating, saving), and calls `on_lost` with a message when the file no
  longer holds this job's record (another job took it over): the holder must
  stop writing into the folder. `release` removes only this job's own record.
  """

  def __init__(self, file: epath.Path, on_lost=None, beat_seconds: float = LOCK_BEAT_SECONDS):
    self.file = file
    self.host, self.pid, self.token = socket.gethostname(), os.getpid(), uuid.uuid4().hex
    self.held = False
    self._storage = _GcsLockFile(file) if is_remote(file) else _LocalLockFile(file)
    self._version = None
    self._on_lost = on_lost or _exit_on_lost
    self._beat_seconds = beat_seconds
    self._stop = threading.Event()
    self._thread = None

  def _record(self) -> bytes:
    return json.dumps(
        {'host': self.host, 'pid': self.pid, 'token': self.token, 'heartbeat': time.time()}
    ).encode()

  def acquire(self) -> str | None:
    """Takes the lock; returns a note when a stale one was taken over.

    Raises:
      LockHeldError: a live job holds it (`StageLockedError` for a stage folder).
    """
    if jax.process_index() != 0:
      return None
    self.file.parent.mkdir(parents=True, exist_ok=True)
    note = None
    while True:
      self._version = self._storage.create(self._record())
      if self._version is not None:
        break
      current = self._storage.read()
      if current is None:  # released between the two requests
        continue
      data, version = current
      holder = _parsed(data)
      if holder and holder.get('token') == self.token:  # a retried request of ours got it
        self._version = version
        break
      if holder is not None and not self._stale(holder):
        raise self.held_error(holder)
      self._version = self._storage.replace(self._record(), version)
      if self._version is None:  # another job changed it first: look again
        continue
      if not is_remote(self.file):
        time.sleep(LOCK_SETTLE_SECONDS)
        now = self._storage.read()
        if now is None or now[1] != self._version:
          raise self.held_error((now and _parsed(now[0])) or {})
      note = (
          f'took over the stale lock of pid {holder.get("pid")} on {holder.get("host")} '
          '(no longer running, or silent too long)'
          if holder
          else 'replaced an unreadable lock'
      )
      break
    self.held = True
    self._stop.clear()
    self._thread = threading.Thread(target=self._beat, name=f'heartbeat {self.file}', daemon=True)
    self._thread.start()
    return note

  def held_error(self, holder: dict[str, Any]) -> LockHeldError:
    """The error for a live holder: who, how recently, and how to clear a dead one's lock."""
    return LockHeldError(
        f'{self.file} is held by pid {holder.get("pid")} on {holder.get("host")} (heartbeat '
        f'{time.time() - float(holder.get("heartbeat", 0)):.0f} s ago). If that job is not '
        f'running (killed on another machine), remove the lock: rm {self.file}'
    )

  def _stale(self, holder: dict[str, Any]) -> bool:
    if holder.get('host') == self.host:
      pid = holder.get('pid')
      return pid == self.pid or not isinstance(pid, int) or not _pid_alive(pid)
    return time.time() - float(holder.get('heartbeat', 0)) > LOCK_STALE_SECONDS

  def _beat(self) -> None:
    while not self._stop.wait(self._beat_seconds):
      try:
        version = self._storage.replace(self._record(), self._version)
        current = None if version is not None else self._storage.read()
      except Exception as e:  # pylint: disable=broad-except  (a storage hiccup: beat again later)
        logging.warning('Cannot refresh the lock %s: %s', self.file, e)
        continue
      if version is not None:
        self._version = version
        continue
      if self._stop.is_set():  # released meanwhile
        return
      holder = (current and _parsed(current[0])) or {}
      if holder.get('token') == self.token:  # a retried request of ours had written it
        self._version = current[1]
        continue
      self.held = False
      what = (
          'it was removed'
          if current is None
          else f'pid {holder.get("pid")} on {holder.get("host")} took it over'
      )
      self._on_lost(
          f'Lost the lock {self.file}: {what} while this job (pid {self.pid} on {self.host}) '
          'was running. Stopped at once, so that two jobs never write into one folder.'
      )
      return

  def release(self) -> None:
    """Stops the heartbeat and removes the lock, if it is still this job's."""
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = None
    if self.held:
      self._storage.delete(self._version)
      self.held = False

  def __enter__(self) -> 'JobLock':
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _parsed(data: bytes) -> dict[str, Any] | None:
  """A lock's record, or None for bytes that are not one (written by hand, cut short)."""
  try:
    record = json.loads(data)
  except ValueError:
    return None
  return record if isinstance(record, dict) else None


def _exit_on_lost(message: str) -> None:
  """Ends the process at once, from the heartbeat thread: the folder is another job's now."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  os._exit(LOCK_LOST_EXIT_CODE)  # pylint: disable=protected-access


class StageLock(JobLock):
  """Refuses a second job on one stage folder (`JobLock` on its `lock.json`)."""

  def __init__(self, directory: StageDir, **kwargs):
    super().__init__(directory.lock_file, **kwargs)

  def held_error(self, holder: dict[str, Any]) -> LockHeldError:
    return StageLockedError(
        f'{self.file.parent} is in use by pid {holder.get("pid")} on {holder.get("host")} '
        f'(heartbeat {time.time() - float(holder.get("heartbeat", 0)):.0f} s ago). Two jobs '
        'on one stage would overwrite each other. If that job is not running (killed on '
        f'another machine), remove the lock: rm {self.file}'
    )
