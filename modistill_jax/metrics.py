"""Metric sinks of a stage: JSON lines for notebooks, TensorBoard events, progress.

Only process 0 writes files; every process may print progress. `metrics.jsonl`
has one object per record: `{"step": ..., "split": "train"|"validation"|...,
<name>: value, ...}`; a resumed run continues the same file.

The stage folder may be local or any `etils.epath` location (`gs://...`).
Cloud objects cannot be appended to, so there the writer keeps the file's
lines in memory and replaces the whole object, and writes TensorBoard events
to a local temporary folder whose files it copies over: both at most every
`SYNC_EVERY_S` seconds for training records, at once for validation and test
records, and at `close()`. Locally, lines are appended and events written in
place, as they come.

Each step once: a writer told the step a run starts from (`start_step`, the
restored checkpoint's step, 0 for a fresh start) first drops the records of
later steps, which an interrupted earlier session wrote and this one will write
again, and has TensorBoard hide that session's events from `start_step + 1` on
(tensorboardX's `purge_step`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from etils import epath
import jax
import numpy as np

from modistill_jax import runs

# Longest a remote stage folder lags behind the training records written.
SYNC_EVERY_S = 30.0
# Splits recorded during training; the others (test) are written once at the end.
TRAINING_SPLITS = ('train', 'validation')
# Per-step metrics whose non-finite value ends a stage (see `first_non_finite`).
DIVERGENCE_WATCH = ('loss', 'grad_norm', 'param_norm', 'batch_stats_norm')


def is_remote(path: str | os.PathLike) -> bool:
  """Whether `path` is a URI (`gs://...`), where files are objects that cannot be appended to."""
  return '://' in os.fspath(path)


def _kept(record: dict[str, Any], start_step: int) -> bool:
  """Whether a record of an earlier session stays when a run continues from `start_step`.

  Training records up to that step stay; the end-of-stage evaluations (test)
  are written again when the stage finishes.
  """
  return record['split'] in TRAINING_SPLITS and record['step'] <= start_step


class MetricWriter:
  """Writes scalars to `metrics.jsonl` and TensorBoard (`events/`) under `stage_dir`.

  Args:
    stage_dir: the stage folder, local or an `epath` URI such as `gs://bucket/run/step1`.
    enabled: whether this process writes; default: process 0 only.
    start_step: the step this run continues from; records of later steps are
      dropped (see the module docstring). None keeps every record.
    sync_every_s: for a remote `stage_dir`, the longest training records wait
      before the folder is updated.
  """

  def __init__(self, stage_dir: str | os.PathLike, *, enabled: bool | None = None,
               start_step: int | None = None, sync_every_s: float = SYNC_EVERY_S):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.stage_dir = epath.Path(stage_dir)
    self.path = self.stage_dir / runs.METRICS_FILE
    self.remote = is_remote(self.stage_dir)
    self._sync_every_s = sync_every_s
    self._tb = None
    self._lines: list[str] = []  # a remote file's whole content
    self._local_events: str | None = None  # where a remote folder's events are written first
    self._last_sync, self._unsynced = time.monotonic(), False
    if not self.enabled:
      return
    self.stage_dir.mkdir(parents=True, exist_ok=True)
    self._start(start_step)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    if self.remote:
      self._local_events = tempfile.mkdtemp(prefix='modistill_events_')
    events = self._local_events or os.fspath(self.stage_dir / runs.EVENTS_DIR)
    # tensorboardX names a file by the second it was opened and the host; the
    # suffix keeps two sessions of one second apart, in the order they ran.
    self._tb = SummaryWriter(events, purge_step=None if start_step is None else start_step + 1,
                             filename_suffix=f'.{time.time_ns()}')

  def _start(self, start_step: int | None) -> None:
    """Loads (remote) and trims (resumed runs) the existing `metrics.jsonl`."""
    if not self.path.exists():
      return
    lines = [line + '\n' for line in self.path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if start_step is None or _kept(json.loads(line), start_step)]
    if self.remote:
      self._lines = kept
      if len(kept) < len(lines):
        self.path.write_text(''.join(kept))
    elif len(kept) < len(lines):
      # Replaced in one rename, so an interruption leaves the old file or the new one.
      partial = self.path.with_name(self.path.name + '.partial')
      partial.write_text(''.join(kept))
      partial.replace(self.path)

  def write(self, step: int, split: str, scalars: dict[str, Any]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    line = json.dumps({'step': int(step), 'split': split, **values}) + '\n'
    for k, v in values.items():
      self._tb.add_scalar(f'{split}/{k}', v, int(step))
    if not self.remote:
      with self.path.open('a') as f:
        f.write(line)
      self._tb.flush()
      return
    self._lines.append(line)
    self._unsynced = True
    if split != 'train' or time.monotonic() - self._last_sync >= self._sync_every_s:
      self.sync()

  def sync(self) -> None:
    """Brings a remote stage folder up to date: `metrics.jsonl` and the event files."""
    if not (self.enabled and self.remote and self._unsynced):
      return
    self._tb.flush()
    self.path.write_text(''.join(self._lines))
    events = self.stage_dir / runs.EVENTS_DIR
    events.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(self._local_events):
      (events / name).write_bytes(epath.Path(self._local_events, name).read_bytes())
    self._last_sync, self._unsynced = time.monotonic(), False

  def close(self) -> None:
    if self._tb is None:
      return
    self._tb.close()
    self._unsynced = True  # the events closed since the last sync
    self.sync()
    if self._local_events:
      shutil.rmtree(self._local_events)
    self._tb = None


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of a `metrics.jsonl` file (local or an `epath` URI)."""
  return [json.loads(line) for line in epath.Path(path).read_text().splitlines() if line.strip()]


def mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
  """Averages a list of fetched per-step metric dicts."""
  return {k: float(np.mean([h[k] for h in history])) for k in history[0]}


def first_non_finite(history: list[dict[str, Any]], first_step: int
                     ) -> tuple[int, str, float] | None:
  """`(step, name, value)` of the first non-finite watched metric, or None.

  The loss alone is not enough: a diverged step can keep a finite loss while its
  gradients and the updated parameters are already NaN.
  """
  for i, h in enumerate(history):
    for name in DIVERGENCE_WATCH:
      if name in h and not math.isfinite(float(h[name])):
        return first_step + i, name, float(h[name])
  return None


class Progress:
  """One self-overwriting line on a terminal; a plain line per report otherwise."""

  def __init__(self, total_steps: int, label: str):
    self.total, self.label = total_steps, label
    self.tty = sys.stdout.isatty()
    self._t0, self._s0 = time.time(), None

  def update(self, step: int, scalars: dict[str, float]) -> None:
    if self._s0 is None:
      self._s0, self._t0 = step, time.time()
      rate = float('nan')
    else:
      rate = (step - self._s0) / max(time.time() - self._t0, 1e-9)
    shown = ' '.join(f'{k}={v:.4g}' for k, v in scalars.items()
                     if k in ('loss', 'accuracy/fused') or k.startswith('accuracy/'))
    line = f'[{self.label}] step {step}/{self.total} {rate:.2f} steps/s {shown}'
    if self.tty:
      print('\r' + line[:200].ljust(120), end='', flush=True)
    else:
      print(line, flush=True)

  def message(self, text: str) -> None:
    print(('\n' if self.tty else '') + f'[{self.label}] {text}', flush=True)
