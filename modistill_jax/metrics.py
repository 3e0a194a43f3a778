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

import dataclasses
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
    start_step: the step this run continues from; records of later steps are
      dropped (see the module docstring). None keeps every record.
    sync_every_s: for a remote `stage_dir`, the longest training records wait
      before the folder is updated.
  """

  def __init__(
      self,
      stage_dir: str | os.PathLike,
      *,
      start_step: int | None = None,
      sync_every_s: float = SYNC_EVERY_S,
  ):
    self.enabled = jax.process_index() == 0  # one writer per run
    self.stage_dir = epath.Path(stage_dir)
    self.path = self.stage_dir / runs.METRICS_FILE
    self.remote = runs.is_remote(self.stage_dir)
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
    self._tb = SummaryWriter(
        events,
        purge_step=None if start_step is None else start_step + 1,
        filename_suffix=f'.{time.time_ns()}',
    )

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


def first_non_finite(
    history: list[dict[str, Any]], first_step: int
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


def format_duration(seconds: float) -> str:
  """`m:ss`, or `h:mm:ss` from an hour on: short enough for a progress line."""
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}:{minutes:02d}:{secs:02d}' if hours else f'{minutes}:{secs:02d}'


@dataclasses.dataclass(frozen=True)
class StageTime:
  """A finished stage: where it wrote and how long it took, start to `results.json`."""

  name: str
  folder: str
  seconds: float


class RunClock:
  """The stages of one run (`train ...:all`, `make demo`) in order, for its time left and summary.

  A run says up front how many stages it will train, so that each stage's
  progress line can show its place (`2/4`) and the time left for the whole run.
  That estimate assumes a stage to come takes as long as the stages so far took
  on average (the current one counted at its projected length): stages of a run
  train the same number of epochs, though not the same streams.
  """

  def __init__(self, planned_stages: int):
    if planned_stages < 1:
      raise ValueError(f'A run trains at least one stage, got planned_stages={planned_stages}.')
    self.planned_stages = planned_stages
    self.finished: list[StageTime] = []

  def seconds_left(self, stage_elapsed: float, stage_left: float) -> float:
    """The run's time left, while the current stage has run `stage_elapsed` of its seconds."""
    stage_lengths = [s.seconds for s in self.finished] + [stage_elapsed + stage_left]
    stages_after = max(self.planned_stages - len(self.finished) - 1, 0)
    return stage_left + stages_after * sum(stage_lengths) / len(stage_lengths)

  def summary(self) -> str:
    """One line per finished stage: name, folder, wall time; then their total."""
    width = max((len(s.folder) for s in self.finished), default=0)
    lines = [
        f'  {s.name:<8} {s.folder:<{width}}  {format_duration(s.seconds):>8}' for s in self.finished
    ]
    total = sum(s.seconds for s in self.finished)
    lines.append(f'  {"total":<8} {"":<{width}}  {format_duration(total):>8}')
    return '\n'.join(lines)


class Progress:
  """A stage's console: progress lines while it trains, what it made and where at its end.

  On a terminal the progress is one line rewritten in place; on anything else
  (a log file, CI) it is one plain line per log interval. A line reads, e.g.

    [step2 2/4] step 120/252 (48%)  elapsed 1:12  left 1:19 (run 6:40)  41.3 clips/s
      best val 0.5312  loss=0.9853 accuracy/fused=0.625

  (one line on the console, which a terminal cuts at its width: what matters
  comes first). clips/s is the trainer's `clips_per_s` since the
  previous line (the first line's count from the start of the loop, so the
  compilation is in it). The time left is the remaining steps at the mean pace
  since the first line, which includes the validation passes and leaves the
  compilation out; the first line has only its own rate to go by.
  """

  def __init__(
      self,
      total_steps: int,
      label: str,
      *,
      clips_per_step: int,
      clock: RunClock | None = None,
      started: float | None = None,
  ):
    """`started`: the stage's start, a `time.time()`; the stage's wall time counts from it."""
    self.total, self.label, self.clips_per_step = total_steps, label, clips_per_step
    self.clock = clock or RunClock(1)
    self.position = len(self.clock.finished) + 1
    self.tty = sys.stdout.isatty()
    self._started = time.time() if started is None else started
    self._first_line: tuple[int, float] | None = None  # (step, time) of the first line
    self._line_open = False  # a terminal line waiting to be rewritten

  def _prefix(self) -> str:
    if self.clock.planned_stages == 1:
      return f'[{self.label}]'
    return f'[{self.label} {self.position}/{self.clock.planned_stages}]'

  def seconds_left(self, step: int, now: float, clips_per_s: float) -> float:
    """The stage's time left after `step`, at the mean pace since the first line."""
    if self._first_line is None or step == self._first_line[0]:
      steps_per_s = clips_per_s / self.clips_per_step
    else:
      first_step, first_time = self._first_line
      steps_per_s = (step - first_step) / max(now - first_time, 1e-9)
    return (self.total - step) / max(steps_per_s, 1e-9)

  def line(
      self, step: int, scalars: dict[str, float], best_validation: float | None, now: float
  ) -> str:
    """The progress line after `step`; `scalars` holds the trainer's `clips_per_s`."""
    if self._first_line is None:
      self._first_line = (step, now)
    clips_per_s = scalars['clips_per_s']
    elapsed = now - self._started
    left = self.seconds_left(step, now, clips_per_s)
    run = (
        f' (run {format_duration(self.clock.seconds_left(elapsed, left))})'
        if self.clock.planned_stages > 1
        else ''
    )
    parts = [
        f'{self._prefix()} step {step}/{self.total} ({100 * step // self.total}%)',
        f'elapsed {format_duration(elapsed)}',
        f'left {format_duration(left)}{run}',
        f'{clips_per_s:.1f} clips/s',
    ]
    if best_validation is not None:
      parts.append(f'best val {best_validation:.4f}')
    names = ['loss'] * ('loss' in scalars) + sorted(k for k in scalars if k.startswith('accuracy/'))
    if names:
      parts.append(' '.join(f'{k}={scalars[k]:.4g}' for k in names))
    return '  '.join(parts)

  def update(
      self, step: int, scalars: dict[str, float], best_validation: float | None = None
  ) -> None:
    """Shows the progress after `step`; `best_validation`: the best validation accuracy yet."""
    text = self.line(step, scalars, best_validation, time.time())
    if self.tty:
      width = shutil.get_terminal_size().columns - 1
      print('\r' + text[:width] + '\x1b[K', end='', flush=True)
      self._line_open = True
    else:
      print(text, flush=True)

  def message(self, text: str) -> None:
    print(('\n' if self._line_open else '') + f'[{self.label}] {text}', flush=True)
    self._line_open = False

  def finish(self, stage_dir: str, results_file: str) -> StageTime:
    """Says what the stage made and where, and enters its wall time into the run's clock."""
    done = StageTime(self.label, stage_dir, time.time() - self._started)
    self.clock.finished.append(done)
    self.message(f'finished in {format_duration(done.seconds)}: {stage_dir}')
    self.message(f'  results: {results_file}')
    self.message(f'  curves:  tensorboard --logdir {stage_dir}')
    return done
