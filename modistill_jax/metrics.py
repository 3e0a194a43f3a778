"""Metric sinks of a stage: JSON lines for notebooks, TensorBoard events, progress.

Only process 0 writes files; every process may print progress. `metrics.jsonl`
has one object per record: `{"step": ..., "split": "train"|"validation"|...,
<name>: value, ...}`, appended, so a resumed run continues the same file.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

from etils import epath
import jax
import numpy as np

from modistill_jax import runs

# Splits recorded during training; the others (test) are written once at the end.
TRAINING_SPLITS = ('train', 'validation')
# Per-step metrics whose non-finite value ends a stage (see `first_non_finite`).
DIVERGENCE_WATCH = ('loss', 'grad_norm', 'param_norm', 'batch_stats_norm')


class MetricWriter:
  """Writes scalars to a stage's `metrics.jsonl` and TensorBoard events.

  A stage that resumes at step S first drops every record after S (and any
  evaluation of a previous attempt's end), and TensorBoard purges its events
  after S, so each step appears once however often the stage was interrupted.
  """

  def __init__(self, directory: runs.StageDir, *, resume_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.path = directory.metrics_file
    self._tb = None
    if self.enabled:
      directory.path.mkdir(parents=True, exist_ok=True)
      kept = [r for r in (read_jsonl(self.path) if self.path.exists() else [])
              if r['split'] in TRAINING_SPLITS and r['step'] <= resume_step]
      self.path.write_text(''.join(json.dumps(r) + '\n' for r in kept))
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(directory.events_dir), purge_step=resume_step + 1)

  def write(self, step: int, split: str, scalars: dict[str, Any]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    with self.path.open('a') as f:
      f.write(json.dumps({'step': int(step), 'split': split, **values}) + '\n')
    for k, v in values.items():
      self._tb.add_scalar(f'{split}/{k}', v, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of a `metrics.jsonl` file."""
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
