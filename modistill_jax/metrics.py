"""Metric sinks of a stage: JSON lines for notebooks, TensorBoard events, progress.

Only process 0 writes files; every process may print progress. `metrics.jsonl`
has one object per record: `{"step": ..., "split": "train"|"validation"|...,
<name>: value, ...}`, appended, so a resumed run continues the same file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np


class MetricWriter:
  """Writes scalars to `metrics.jsonl` and TensorBoard under `stage_dir`."""

  def __init__(self, stage_dir: str | os.PathLike, *, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(stage_dir, 'metrics.jsonl')
    self._tb = None
    if self.enabled:
      os.makedirs(stage_dir, exist_ok=True)
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(stage_dir, 'events'))

  def write(self, step: int, split: str, scalars: dict[str, Any]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': int(step), 'split': split, **values}) + '\n')
    for k, v in values.items():
      self._tb.add_scalar(f'{split}/{k}', v, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of a `metrics.jsonl` file."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
  """Averages a list of fetched per-step metric dicts."""
  return {k: float(np.mean([h[k] for h in history])) for k in history[0]}


def first_non_finite(history: list[dict[str, Any]], first_step: int) -> int | None:
  """The step of the first non-finite loss in fetched metrics, or None."""
  for i, h in enumerate(history):
    if not math.isfinite(float(h['loss'])):
      return first_step + i
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
    lines = [f'  {s.name:<8} {s.folder:<{width}}  {format_duration(s.seconds):>8}'
             for s in self.finished]
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

  def __init__(self, total_steps: int, label: str, *, clips_per_step: int,
               clock: RunClock | None = None, started: float | None = None):
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

  def line(self, step: int, scalars: dict[str, float], best_validation: float | None,
           now: float) -> str:
    """The progress line after `step`; `scalars` holds the trainer's `clips_per_s`."""
    if self._first_line is None:
      self._first_line = (step, now)
    clips_per_s = scalars['clips_per_s']
    elapsed = now - self._started
    left = self.seconds_left(step, now, clips_per_s)
    run = (f' (run {format_duration(self.clock.seconds_left(elapsed, left))})'
           if self.clock.planned_stages > 1 else '')
    parts = [f'{self._prefix()} step {step}/{self.total} ({100 * step // self.total}%)',
             f'elapsed {format_duration(elapsed)}', f'left {format_duration(left)}{run}',
             f'{clips_per_s:.1f} clips/s']
    if best_validation is not None:
      parts.append(f'best val {best_validation:.4f}')
    names = ['loss'] * ('loss' in scalars) + sorted(k for k in scalars if k.startswith('accuracy/'))
    if names:
      parts.append(' '.join(f'{k}={scalars[k]:.4g}' for k in names))
    return '  '.join(parts)

  def update(self, step: int, scalars: dict[str, float],
             best_validation: float | None = None) -> None:
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
