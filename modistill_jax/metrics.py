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
