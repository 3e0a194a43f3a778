"""A `jax.profiler` trace of chosen training steps, for TensorBoard's profile tab.

`config.profile_steps = (first, last)` (`--config.profile_steps=20,25`) traces
steps `first` to `last` of a stage, both included, into the stage folder:
`<stage dir>/plugins/profile/<timestamp>/<host>.xplane.pb`, where
`tensorboard --logdir <stage dir>` (the `tensorboard` extra, with its profile
plugin) lists it under Profile. `()` traces nothing.

Each step is a `jax.profiler.StepTraceAnnotation` that opens before the
trainer takes the batch from the input pipeline and closes after the step is
dispatched, so the profile's step-time breakdown splits every step into input
wait, host-to-device transfer and device compute. The trace stops after the
last step's state is ready, so it holds that step's device work; a stage that
ends or fails earlier stops it where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
import os

import jax


def check_steps(profile_steps: Sequence[int]) -> None:
  """Raises `ValueError` unless `profile_steps` is `()` or `(first, last)`, 1 <= first <= last."""
  steps = tuple(profile_steps)
  if steps and (len(steps) != 2 or not 1 <= steps[0] <= steps[1]):
    raise ValueError(
        'config.profile_steps must be FIRST,LAST with 1 <= FIRST <= LAST (steps traced, '
        f'both included), or () for none; got {steps}.'
    )


class StepProfiler:
  """Starts and stops the trace around the configured steps; does nothing without them.

  The trainer calls `begin(step)` before taking a step's batch, `end(step,
  state)` after dispatching the step, and `close()` when its loop exits.
  """

  def __init__(self, profile_steps: Sequence[int], directory: str | os.PathLike):
    check_steps(profile_steps)
    self._steps = tuple(profile_steps)
    self._directory = os.fspath(directory)
    self._tracing = False
    self._annotation = None

  def begin(self, step: int) -> None:
    if not self._steps or not self._steps[0] <= step <= self._steps[1]:
      return
    if not self._tracing:
      jax.profiler.start_trace(self._directory)
      self._tracing = True
    self._annotation = jax.profiler.StepTraceAnnotation('train', step_num=step)
    self._annotation.__enter__()

  def end(self, step: int, state) -> None:
    if self._annotation is not None:
      self._annotation.__exit__(None, None, None)
      self._annotation = None
    if self._tracing and step >= self._steps[1]:
      jax.block_until_ready(state)
      self.close()

  def close(self) -> None:
    if self._annotation is not None:
      self._annotation.__exit__(None, None, None)
      self._annotation = None
    if self._tracing:
      jax.profiler.stop_trace()
      self._tracing = False
