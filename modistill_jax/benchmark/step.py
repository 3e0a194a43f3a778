"""One stage's training step, compiled ahead of time, costed and timed on synthetic batches.

The step is the trainer's own (`trainer.make_train_fn`), built from the config
as `run_stage` builds it, with freshly initialised weights; XLA compilations
and persistent-cache reads are counted while it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
import statistics
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from modistill_jax import initialization
from modistill_jax import modalities as modalities_lib
from modistill_jax import optim
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax import trainer
from modistill_jax.benchmark import costs
from modistill_jax.data import feeding
from modistill_jax.models import stage_network

BACKEND_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'

CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'


class CompileCounter:
  """Counts XLA backend compilations in this process while installed."""

  def __init__(self):
    self.count = 0

  def _on_event(self, event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    if event == BACKEND_COMPILE_EVENT:
      self.count += 1

  def __enter__(self) -> CompileCounter:
    jax.monitoring.register_event_duration_secs_listener(self._on_event)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_duration_listener(self._on_event)


class CacheHitCounter:
  """Counts programs read from the persistent compilation cache in this process while installed."""

  def __init__(self):
    self.count = 0

  def _on_event(self, event: str, **kwargs) -> None:
    del kwargs
    if event == CACHE_HIT_EVENT:
      self.count += 1

  def __enter__(self) -> CacheHitCounter:
    jax.monitoring.register_event_listener(self._on_event)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_listener(self._on_event)


def timed_repeats(
    step, state, batches: Sequence[Any], *, num_steps: int, repeats: int
) -> tuple[Any, Any, list[float]]:
  """Runs `repeats` x `num_steps` steps; returns the state, last metrics and each repeat's seconds.

  One `block_until_ready` closes each repeat, so its seconds are device time
  plus dispatch, as a training loop that does not wait on every step sees.
  """
  seconds, step_metrics = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    for i in range(num_steps):
      state, step_metrics = step(state, batches[i % len(batches)])
    jax.block_until_ready((state, step_metrics))
    seconds.append(time.perf_counter() - start)
  return state, step_metrics, seconds


def synthetic_batch(
    config: ml_collections.ConfigDict, modalities: Sequence[str], num_classes: int, mesh, seed: int
) -> dict[str, jax.Array]:
  """A global batch shaped like the pipeline's (the stage's modalities, their dtypes), on the
  devices: uint8 images and codes, and float32 joint segments within the frame."""
  rng = np.random.default_rng(seed)
  batch_size = config.batch_size
  batch = {}
  for m in modalities:
    shape = feeding.input_shape(config, batch_size, m)
    if modalities_lib.get(m).batch_dtype == np.uint8:
      batch[m] = rng.integers(0, 256, shape, dtype=np.uint8)
    else:
      batch[m] = rng.uniform(0, config.input.image_size, shape).astype(np.float32)
  batch['label'] = rng.integers(0, num_classes, batch_size, dtype=np.int32)
  batch['mask'] = np.ones(batch_size, np.bool_)
  batch['index'] = np.arange(batch_size, dtype=np.int32)
  return sharding.to_global(batch, mesh)


def benchmark_stage(
    config: ml_collections.ConfigDict,
    stage_name: str,
    *,
    num_steps: int,
    warmup: int,
    num_classes: int,
    mesh,
    repeats: int = 1,
) -> dict[str, Any]:
  """Compiles the stage's train step, reads its costs, and times it (unless num_steps=0)."""
  stage = stages.for_config(stage_name, config)
  model = stage_network(stage, config.model, num_classes)
  tx, schedule = optim.make_optimizer(config.optimizer, warmup + num_steps * repeats)
  make_state = trainer.make_state_fn(stage, tx, mesh)
  train_fn = trainer.make_train_fn(model, config, tx, schedule, mesh)
  abstract_state = trainer.abstract_state(model, config, make_state, mesh)
  batches = [synthetic_batch(config, stage.inputs, num_classes, mesh, seed) for seed in range(2)]
  abstract_batch = sharding.abstract(batches[0], sharding.data_sharded(mesh))

  result = {
      'stage': stage_name,
      'streams': list(stage.streams),
      'trainable': list(stage.trainable),
      'frozen': list(stage.frozen),
      'inputs': list(stage.inputs),
      'batch_size': config.batch_size,
  }
  result.update(
      time_step(
          train_fn,
          lambda: make_state(initialization.init_model_variables(model, config)),
          abstract_state,
          batches,
          abstract_batch,
          num_steps=num_steps,
          warmup=warmup,
          repeats=repeats,
          mesh=mesh,
          clips_per_step=config.batch_size,
          num_frames=config.input.num_frames,
      )
  )
  return result


def time_step(
    train_fn,
    make_state,
    abstract_state,
    batches,
    abstract_batch,
    *,
    num_steps: int,
    warmup: int,
    repeats: int,
    mesh,
    clips_per_step: int,
    num_frames: int,
) -> dict[str, Any]:
  """Compiles a jitted train step ahead of time, reads its costs, then times it.

  Shared by our stages and the reference ResNet-50, so both are measured alike.
  `make_state` builds the initial (donated) state; nothing runs with
  `num_steps=0`.
  """
  start = time.perf_counter()
  with CacheHitCounter() as cache_hits:
    lowered = train_fn.lower(abstract_state, abstract_batch)
    compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  # The lowered analysis counts the whole program (every device's share); the
  # compiled one of an SPMD executable, one device's.
  lowered_flops = costs.flops(lowered)
  flops_per_device = costs.flops(compiled)
  compiled_flops = flops_per_device * mesh.devices.size
  memory, xla_peak = costs.peak_memory(compiled)
  del lowered, compiled

  result = {
      'flops_per_step': compiled_flops,
      'flops_per_step_per_device': flops_per_device,
      'lowered_flops_per_step': lowered_flops,
      'flop_disagreement': costs.flop_disagreement(lowered_flops, compiled_flops),
      'flops_disagree': costs.flops_disagree(lowered_flops, compiled_flops),
      'peak_memory_bytes': memory,
      'xla_peak_memory_in_bytes': xla_peak,
      'compile_s': compile_s,
      'compile_cached': cache_hits.count > 0,
      'steps': num_steps,
      'repeats': repeats,
      'clips_per_s': None,
      'frames_per_s': None,
      'step_s': None,
      'repeat_clips_per_s': None,
      'recompiles': None,
      'final_loss': None,
      'measured_peak_memory_bytes': None,
      'measured_peak_memory_at_most_bytes': None,
  }
  if num_steps <= 0:
    return result

  devices = list(mesh.devices.flat)
  peak_before = costs.peak_bytes_in_use(devices)
  state = make_state()
  with CompileCounter() as compiles:
    state, step_metrics = train_fn(state, batches[0])
    jax.block_until_ready(state)
    after_first = compiles.count
    for i in range(1, warmup):
      state, step_metrics = train_fn(state, batches[i % 2])
    jax.block_until_ready(state)
    state, step_metrics, seconds = timed_repeats(
        train_fn, state, batches, num_steps=num_steps, repeats=repeats
    )
    recompiles = compiles.count - after_first
  peak_after = costs.peak_bytes_in_use(devices)
  measured = costs.own_peak(peak_before, peak_after)
  repeat_clips_per_s = [num_steps * clips_per_step / s for s in seconds]
  clips_per_s = statistics.median(repeat_clips_per_s)
  result.update(
      {
          'clips_per_s': clips_per_s,
          'frames_per_s': clips_per_s * num_frames,
          'step_s': clips_per_step / clips_per_s,
          'repeat_clips_per_s': repeat_clips_per_s,
          'recompiles': recompiles,
          'final_loss': float(step_metrics['loss']),
          'measured_peak_memory_bytes': measured,
          'measured_peak_memory_at_most_bytes': peak_before if measured is None else None,
      }
  )
  return result
