"""Speed of the real training step of a stage: throughput, FLOPs, MFU, memory, compile time.

  python -m modistill_jax.benchmark --config=configs/ntu_cs.py:step3 \
      --config.model.dtype=bfloat16 --config.batch_size=32 --json=step3.json
  python -m modistill_jax.benchmark --config=configs/ntu_cs.py --all_stages \
      --config.model.dtype=bfloat16 --config.batch_size=32 --json=stages.json
  python -m modistill_jax.benchmark --config=configs/ntu_cs.py --suite \
      [--data_dir=$TFDS_DATA_DIR] --json=suite.json --markdown=suite.md

The step is the trainer's own (`trainer.make_train_fn`: donated state, data-
parallel over every device), built from the config exactly as `run_stage`
builds it, with freshly initialised weights. Speed does not depend on the
weights, so no checkpoint and no dataset are needed; `--num_classes` sets the
classifier size (60, NTU RGB+D 60) that the dataset would.

What each reported number is:

* `clips_per_s`, `frames_per_s`: the step alone on synthetic uint8 batches
  already on the devices, the median of `--repeats` repeats of `--steps`
  steps (after `--warmup` steps), each repeat closed by one
  `block_until_ready` (`repeat_clips_per_s`: each repeat's). Frames are input frames (clips x
  `input.num_frames`), whatever the number of streams, so a two-stream stage
  at the same frames/s does twice the work of one stream.
* `pipeline_clips_per_s`: with `--data_dir`, the Grain input pipeline alone on
  the built dataset's training split (`pipeline.measure_clips_per_s`), at the
  config's batch size and `input.worker_count`, decoding the stage's `inputs`
  only, as the trainer does (so RGB-only stages read no depth); null otherwise.
* `flops_per_step`: XLA's cost analysis of the compiled step, over all devices
  (the analysis of an SPMD executable counts one device's share, which is
  `flops_per_step_per_device`).
* `forward_flops_per_frame`: one `Stream` in inference mode, compiled alone on
  one clip, divided by its frames. `flops_in_stream_forwards` expresses the
  step in those units: about 3 for one trained stream (forward and backward),
  4 for step 3 (a trained student plus the frozen teacher's forward only) and
  6 for steps 2 and 4 (two trained streams).
* `mfu`: `flops_per_step_per_device` x steps/s over the chip's peak dense bf16
  FLOP/s (`PEAK_BF16_FLOPS`); null where the device is not in that table (CPU).
* `lowered_flops_per_step`: XLA's cost analysis of the step as lowered (before
  optimisation and partitioning: the whole program once, so work replicated
  on every device, such as the optimizer update, counts once there and once
  per device in `flops_per_step`). `flop_disagreement` = |lowered - compiled|
  / the larger; `flops_disagree` when it is over 10% (the compiled count is
  known to misreport on GPU: jax#16008, #17912, #22249).
* `model_flops_per_step`, `model_flops_mfu`: model FLOPs = (3 x trained
  streams + frozen streams) x `forward_flops_per_frame` x frames per step,
  i.e. a forward and a backward (2 forwards) per trained stream and a forward
  per frozen one, counted from the one-stream forward, not from the step's
  program; MFU on them is comparable across implementations. `mfu` uses the
  compiled step count instead.
* `measured_peak_memory_bytes`: the device allocator's high-water mark
  (`device.memory_stats()['peak_bytes_in_use']`, the largest over the
  devices) after the timed steps, when they raised it; JAX cannot reset the
  mark, so a stage that stayed below an earlier one's peak gets null and
  `measured_peak_memory_at_most_bytes` (the mark before it). Null on backends
  without allocator statistics (CPU): the compile plan below is never
  reported as measured.
* `peak_memory_bytes`: per device, from the compiled memory analysis:
  arguments + outputs + temporaries - aliased (donated) bytes, what the
  executable reserves. `xla_peak_memory_in_bytes` is XLA's own
  `peak_memory_in_bytes` for comparison (the CPU backend leaves temporaries
  out of it).
* `compile_s`: tracing, lowering and compiling the step (ahead of time; the
  jitted function reuses that executable on its first call). Like every
  command, the benchmark keeps its programs in JAX's persistent compilation
  cache (`--compilation_cache`); `compile_cached` says the step was read from it,
  so `compile_s` is then the time to trace, lower and read it, not to compile.
* `recompiles`: XLA compilations (`jax.monitoring` backend-compile events)
  during every step after the first; anything but 0 means the step's input
  avals or shardings change between steps (null with `--steps=0`).

`--end_to_end` (one step-1 stage, with `--data_dir`) adds `end_to_end`: the
trainer's own loop (`trainer.run_stage` in a temporary workdir for
`--end_to_end_steps` steps: Grain pipeline, prefetch onto the devices,
host-to-device transfer, step, logging, validation at the config's cadence),
timed from the stage's `metrics.jsonl` with the compiles left out
(`loop_throughput`), beside the step alone and the pipeline alone of the same
run and its share of the lower of the two (`share_of_bound`).

`--suite` is the accelerator suite in one command: step 1 of the test-time
modality, step2, step3 and step4 at `--suite_image_size` (224) in bfloat16
at `--suite_batch` clips (default 64 per device), the plain ResNet v1.5
reference step (`reference_resnet`: same depth and width as the stream, so
ResNet-50 for the NTU configs, same frames, dtype, batch, optimizer and
sharding) and, with `--data_dir`, the end-to-end figure of step 1. Its
headline is step 1's frames/s over the reference's. JSON with `--json`, a
Markdown table printed and written with `--markdown`.

With several stages (`--all_stages`, `--stages`, or a config whose stage is
`all`), each stage also gets `flop_ratio` (its FLOPs over those of the
single-stream step 1 of the test-time modality, `step1_rgb` by default) and
`multi_stream_efficiency` = frames/s / (step-1 frames/s / flop_ratio): 1.0
when a stage with k times the FLOPs runs exactly k times slower than one stream.

`--lower_for=tpu,cuda` times nothing: it lowers each stage's train and eval
step for those platforms from this host (`lowering.py`: fails on host
callbacks, unstable custom calls and types the platform lacks) and prints
each program's StableHLO size and lowered FLOPs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import json
import os
import statistics
import tempfile
import time
from typing import Any

from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from modistill_jax import cli
from modistill_jax import config_lib
from modistill_jax import optim
from modistill_jax import reference_resnet
from modistill_jax import runs
from modistill_jax import sharding
from modistill_jax import initialization
from modistill_jax import lowering
from modistill_jax import stages
from modistill_jax import trainer
from modistill_jax.data import feeding
from modistill_jax.data import pipeline
from modistill_jax.models import resnet
from modistill_jax.models import stage_network

# The suite's default batch per device: 64 clips x 5 frames of 224x224 in bf16
# is ~40 GiB for a two-stream stage by the CPU backend's memory plan (20 GiB at
# 32 clips, docs/performance.md), within an H100's or H200's memory; pass
# --suite_batch on smaller chips.
SUITE_CLIPS_PER_DEVICE = 64
# `lowered` and `compiled` FLOP counts further apart than this are flagged.
FLOP_DISAGREEMENT_LIMIT = 0.10

_CONFIG = config_flags.DEFINE_config_file(
    'config',
    None,
    'Protocol config file and stage, e.g. configs/ntu_cs.py:step3.',
    lock_config=True,
)
_STEPS = flags.DEFINE_integer(
    'steps', 20, 'Timed steps after the warm-up; 0 compiles only (FLOPs, memory, compile time).'
)
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps first (the first one included).')
_JSON = flags.DEFINE_string('json', None, 'Also write the results to this JSON file.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'TFDS data_dir of the built dataset: also time the input pipeline alone.'
)
_PIPELINE_SECONDS = flags.DEFINE_float('pipeline_seconds', 20.0, 'How long to time the pipeline.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 60, 'Classifier size (60: NTU RGB+D 60).')
_ALL_STAGES = flags.DEFINE_bool(
    'all_stages', False, 'Benchmark step 1 of the test-time modality, step2, step3 and step4.'
)
_STAGES = flags.DEFINE_list(
    'stages', None, "Stages to benchmark in one run (instead of the config's stage)."
)
_REPEATS = flags.DEFINE_integer(
    'repeats', 3, 'Timed repeats of --steps steps each; clips/s and frames/s are their median.'
)
_SUITE = flags.DEFINE_bool(
    'suite',
    False,
    'The accelerator suite: every stage at --suite_image_size in bfloat16, the '
    'plain ResNet-50 reference on the same frames, and with --data_dir the end-to-end figure.',
)
_SUITE_BATCH = flags.DEFINE_integer(
    'suite_batch',
    None,
    'Global batch (clips) of every stage in --suite; default '
    f'{SUITE_CLIPS_PER_DEVICE} clips per device.',
)
_SUITE_IMAGE_SIZE = flags.DEFINE_integer('suite_image_size', 224, 'Frame size in --suite.')
_MARKDOWN = flags.DEFINE_string(
    'markdown', None, 'Also write the results as a Markdown table here (--suite prints it too).'
)
_END_TO_END = flags.DEFINE_bool(
    'end_to_end',
    False,
    "Also time the trainer's own loop (`trainer.run_stage` on --data_dir) "
    'for a step-1 stage; --suite does it with --data_dir.',
)
_END_TO_END_STEPS = flags.DEFINE_integer(
    'end_to_end_steps',
    200,
    'Training steps of the end-to-end run (its first log interval, '
    'which holds the compiles, is not timed).',
)
_LOWER_FOR = flags.DEFINE_list(
    'lower_for',
    [],
    "Lower the stages' train and eval steps for these platforms (tpu, cuda) on this host "
    'and print their sizes and FLOPs, instead of timing them.',
)

# Peak dense (no sparsity) bf16 FLOP/s per chip, from the vendors' pages:
#   TPU v4 275 T, v5e 197 T, v5p 459 T, v6e (Trillium) 918 T: the "Peak compute
#   per chip (bf16)" rows of cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e};
#   A100 312 T: NVIDIA A100 datasheet, "BFLOAT16 Tensor Core" (624 T is sparse);
#   H100 SXM 989 T, PCIe 756 T, NVL 835 T: NVIDIA H100 datasheet, "BFLOAT16
#   Tensor Core" halved (its 1,979 / 1,513 / 1,671 T are with sparsity);
#   H200 989 T: NVIDIA H200 datasheet (H200 SXM), 1,979 T with sparsity halved.
# Keys are `jax.Device.device_kind` ("TPU v5 lite" is v5e, "TPU v5" is v5p,
# "TPU v6 lite" is v6e); GPUs match by the substrings, first match wins.
PEAK_BF16_FLOPS = {
    'TPU v4': 275e12,
    'TPU v5 lite': 197e12,
    'TPU v5e': 197e12,
    'TPU v5': 459e12,
    'TPU v5p': 459e12,
    'TPU v6 lite': 918e12,
    'TPU v6e': 918e12,
}
_GPU_PEAK_BF16_FLOPS = (
    ('H100 PCIe', 756e12),
    ('H100 NVL', 835e12),
    ('H100', 989e12),
    ('H200', 989e12),
    ('A100', 312e12),
)

BACKEND_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'
CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'


def peak_flops(device_kind: str) -> float | None:
  """The chip's peak dense bf16 FLOP/s, or None when unknown (CPU, other chips)."""
  if device_kind in PEAK_BF16_FLOPS:
    return PEAK_BF16_FLOPS[device_kind]
  if device_kind.startswith('NVIDIA'):
    for name, peak in _GPU_PEAK_BF16_FLOPS:
      if name in device_kind:
        return peak
  return None


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


def _flops(stage: jax.stages.Compiled | jax.stages.Lowered) -> float:
  analysis = stage.cost_analysis()
  if isinstance(analysis, Sequence):  # one entry per executable in older JAX
    analysis = analysis[0]
  return float(analysis['flops'])


def flop_disagreement(lowered_flops: float, compiled_flops: float) -> float:
  """How far the compiled FLOP count is from the lowered one, relative to the larger.

  The lowered count is XLA's analysis of the program as JAX emitted it; the
  compiled one, of the optimised program, which on GPU is known to misreport
  (jax#16008, #17912, #22249). Neither is ground truth, so the difference is
  taken against the larger of the two: 0 when they agree, 1 when one is 0.
  """
  larger = max(lowered_flops, compiled_flops)
  return abs(lowered_flops - compiled_flops) / larger if larger > 0 else 0.0


def flops_disagree(lowered_flops: float, compiled_flops: float) -> bool:
  """Whether the two counts are further apart than `FLOP_DISAGREEMENT_LIMIT` (10%)."""
  return flop_disagreement(lowered_flops, compiled_flops) > FLOP_DISAGREEMENT_LIMIT


def peak_bytes_in_use(devices: Sequence[jax.Device]) -> int | None:
  """The devices' largest allocator high-water mark, or None where the backend keeps none (CPU)."""
  peaks = [(d.memory_stats() or {}).get('peak_bytes_in_use') for d in devices]
  return None if None in peaks else max(peaks)


def own_peak(before: int | None, after: int | None) -> int | None:
  """A measurement's own peak memory, from the high-water marks before and after it.

  JAX cannot reset the mark, so only a measurement that raised it knows its
  own peak (the new mark); one that did not stayed at or below `before`, and
  gets None.
  """
  return after if None not in (before, after) and after > before else None


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


def peak_memory(compiled: jax.stages.Compiled) -> tuple[int, int | None]:
  """Bytes one device reserves for the executable, and XLA's own peak estimate.

  The first is arguments + outputs + temporaries - aliased (donated) bytes, on
  every backend. The second is `peak_memory_in_bytes`, None where it is 0; the
  CPU backend leaves temporaries out of it, so it is not the headline number.
  """
  stats = compiled.memory_analysis()
  total = (
      stats.argument_size_in_bytes
      + stats.output_size_in_bytes
      + stats.temp_size_in_bytes
      - stats.alias_size_in_bytes
  )
  return int(total), int(getattr(stats, 'peak_memory_in_bytes', 0)) or None


def forward_flops_per_frame(config: ml_collections.ConfigDict, num_classes: int) -> float:
  """XLA's FLOPs of one stream in inference mode, per frame, on one clip.

  The stream is the one every stage runs (`resnet.stream_factory`), in the
  config's compute dtype.
  """
  num_frames, size = config.input.num_frames, config.input.image_size
  stream = resnet.stream_factory(config.model, num_classes)(name='stream')
  frames = jax.ShapeDtypeStruct((num_frames, size, size, 3), resnet.compute_dtype(config.model))
  variables = jax.eval_shape(
      functools.partial(stream.init, num_frames=num_frames, train=False), jax.random.key(0), frames
  )
  forward = jax.jit(functools.partial(stream.apply, num_frames=num_frames, train=False))
  return _flops(forward.lower(variables, frames).compile()) / num_frames


def synthetic_batch(
    config: ml_collections.ConfigDict, modalities: Sequence[str], num_classes: int, mesh, seed: int
) -> dict[str, jax.Array]:
  """A global batch shaped like the pipeline's (the stage's modalities, uint8), on the devices."""
  rng = np.random.default_rng(seed)
  batch_size = config.batch_size
  batch = {
      m: rng.integers(0, 256, feeding.input_shape(config, batch_size, m), dtype=np.uint8)
      for m in modalities
  }
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
  replicated = sharding.replicated(mesh)
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(lambda: make_state(initialization.init_model_variables(model, config))),
  )
  batches = [synthetic_batch(config, stage.inputs, num_classes, mesh, seed) for seed in range(2)]
  abstract_batch = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batches[0]
  )

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
  lowered_flops = _flops(lowered)
  flops_per_device = _flops(compiled)
  compiled_flops = flops_per_device * mesh.devices.size
  memory, xla_peak = peak_memory(compiled)
  del lowered, compiled

  result = {
      'flops_per_step': compiled_flops,
      'flops_per_step_per_device': flops_per_device,
      'lowered_flops_per_step': lowered_flops,
      'flop_disagreement': flop_disagreement(lowered_flops, compiled_flops),
      'flops_disagree': flops_disagree(lowered_flops, compiled_flops),
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
  peak_before = peak_bytes_in_use(devices)
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
  peak_after = peak_bytes_in_use(devices)
  measured = own_peak(peak_before, peak_after)
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


def measure_pipeline(
    config: ml_collections.ConfigDict, data_dir: str, seconds: float, modalities: Sequence[str]
) -> float:
  """The input pipeline's clips/s alone on the built dataset's training split.

  Decoding only `modalities`, as the trainer does for a stage reading them.
  """
  source = pipeline.load_source(
      config.dataset,
      config.protocol,
      'train',
      data_dir=data_dir,
      builder_config=config.builder_config or None,
  )
  if source is None:
    raise ValueError(f'{config.dataset}/{config.protocol} has no training split.')
  size = config.input.image_size
  return pipeline.measure_clips_per_s(
      source.records,
      num_frames=config.input.num_frames,
      image_size=(size, size),
      batch_size=config.batch_size,
      worker_count=config.input.worker_count,
      seconds=seconds,
      modalities=modalities,
      reduced_decoding=config.input.reduced_decoding,
  )


def single_stream_stage(config: ml_collections.ConfigDict) -> str:
  """The step-1 stage of the test-time modality: the reference for FLOP ratios."""
  return 'step1_rgb' if config.privileged == 'depth' else 'step1_depth'


def stage_names(
    config: ml_collections.ConfigDict, all_stages: bool, names: Sequence[str] | None
) -> tuple[str, ...]:
  """`--stages` if given; the four stages for `--all_stages` or stage `all`; else the config's."""
  if names:
    for name in names:
      stages.check_stage_name(name)
    return tuple(names)
  if all_stages or config.stage == stages.ALL:
    return (single_stream_stage(config), 'step2', 'step3', 'step4')
  return (config.stage,)


def add_comparisons(
    results: list[dict[str, Any]],
    reference: str,
    forward_flops: float,
    clips_per_step: int,
    num_frames: int,
) -> None:
  """Per stage: FLOPs in stream forwards, and ratio/efficiency against `reference`."""
  by_name = {r['stage']: r for r in results}
  base = by_name.get(reference)
  for r in results:
    r['flops_in_stream_forwards'] = r['flops_per_step'] / (
        forward_flops * clips_per_step * num_frames
    )
    r['reference_stage'] = reference if base else None
    r['flop_ratio'] = r['flops_per_step'] / base['flops_per_step'] if base else None
    speeds = (r['frames_per_s'], base['frames_per_s']) if base else (None, None)
    r['multi_stream_efficiency'] = (
        speeds[0] * r['flop_ratio'] / speeds[1] if None not in speeds else None
    )


def run(
    config: ml_collections.ConfigDict,
    names: Sequence[str],
    *,
    num_steps: int,
    warmup: int,
    num_classes: int,
    data_dir: str | None = None,
    pipeline_seconds: float = 20.0,
    repeats: int = 1,
) -> list[dict[str, Any]]:
  """Benchmarks the stages; every result carries the run's device and settings."""
  config_lib.check(config)
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  device = jax.devices()[0]
  load_before = os.getloadavg()[0]
  forward_flops = forward_flops_per_frame(config, num_classes)
  results = [
      benchmark_stage(
          config,
          name,
          num_steps=num_steps,
          warmup=warmup,
          num_classes=num_classes,
          mesh=mesh,
          repeats=repeats,
      )
      for name in names
  ]
  pipeline_clips = {}  # by the modalities decoded: RGB-only stages decode no depth
  for r in results:
    inputs = tuple(r['inputs'])
    if data_dir and inputs not in pipeline_clips:
      pipeline_clips[inputs] = measure_pipeline(config, data_dir, pipeline_seconds, inputs)
    r['pipeline_clips_per_s'] = pipeline_clips.get(inputs)
  peak = peak_flops(device.device_kind)
  add_comparisons(
      results,
      single_stream_stage(config),
      forward_flops,
      config.batch_size,
      config.input.num_frames,
  )
  common = {
      'device_kind': device.device_kind,
      'platform': device.platform,
      'num_devices': mesh.devices.size,
      'peak_bf16_flops_per_device': peak,
      'dtype': config.model.dtype,
      'batch_size': config.batch_size,
      'num_frames': config.input.num_frames,
      'image_size': config.input.image_size,
      'units_per_block': list(config.model.units_per_block),
      'width': config.model.width,
      'forward_flops_per_frame': forward_flops,
      'host_cpus': pipeline.usable_cores(),
      'host_load_avg_1m': [load_before, os.getloadavg()[0]],
  }
  for r in results:
    r.update(common)
    steps_per_s = 1 / r['step_s'] if r['step_s'] else None
    r['mfu'] = r['flops_per_step_per_device'] * steps_per_s / peak if peak and steps_per_s else None
    r['model_flops_per_step'] = model_flops_per_step(
        forward_flops,
        config.batch_size * config.input.num_frames,
        trained_streams=len(r['trainable']),
        frozen_streams=len(r['frozen']),
    )
    r['model_flops_mfu'] = model_flops_mfu(
        r['model_flops_per_step'], r['step_s'], peak, mesh.devices.size
    )
  return results


def model_flops_per_step(
    forward_flops_per_frame: float,
    frames_per_step: int,
    *,
    trained_streams: int,
    frozen_streams: int,
) -> float:
  """The model FLOPs of a step: 3 forwards per trained stream (forward, backward), 1 per frozen.

  Counted from the one-stream inference forward, not from the step's own
  program, so recomputation (remat), optimizer updates or a miscounted
  backward do not enter it; MFU on it compares across implementations.
  """
  return forward_flops_per_frame * frames_per_step * (3 * trained_streams + frozen_streams)


def model_flops_mfu(
    flops_per_step: float, step_s: float | None, peak_per_device: float | None, num_devices: int
) -> float | None:
  """`flops_per_step` per second over the devices' peak; None without a peak (CPU) or a timing."""
  if not (peak_per_device and step_s):
    return None
  return flops_per_step / step_s / (peak_per_device * num_devices)


def benchmark_reference(
    config: ml_collections.ConfigDict,
    *,
    num_steps: int,
    warmup: int,
    repeats: int,
    num_classes: int,
    mesh,
    dtype,
    modality: str = 'rgb',
) -> dict[str, Any]:
  """The plain ResNet v1.5 step (`reference_resnet`) on the frames step 1 reads (`modality`).

  Same depth and width as the config's stream (ResNet-50 for the NTU configs),
  same batch of clips, dtype, optimizer, sharding and donation as our step,
  and the same accounting: frames/s counts the input frames.
  """
  size, num_frames = config.input.image_size, config.input.num_frames
  model = reference_resnet.ResNet(
      num_classes=num_classes,
      units_per_block=tuple(config.model.units_per_block),
      width=config.model.width,
      dtype=dtype,
  )
  tx, _ = optim.make_optimizer(config.optimizer, warmup + num_steps * repeats)
  train_fn = reference_resnet.make_train_fn(model, tx, config.input, mesh, modality)
  replicated = sharding.replicated(mesh)
  make_state = jax.jit(
      lambda: reference_resnet.init_state(model, tx, size), out_shardings=replicated
  )
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(make_state),
  )
  batches = [synthetic_batch(config, (modality,), num_classes, mesh, seed) for seed in range(2)]
  abstract_batch = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batches[0]
  )
  # Its own forward FLOPs per frame, counted as `forward_flops_per_frame` counts a stream's.
  images = jax.ShapeDtypeStruct((num_frames, size, size, 3), dtype)
  forward = jax.jit(functools.partial(model.apply, train=False))
  variables = {'params': abstract_state.params, 'batch_stats': abstract_state.batch_stats}
  forward_flops = _flops(forward.lower(variables, images).compile()) / num_frames
  result = {
      'stage': 'reference',
      'model': 'plain ResNet v1.5 (reference_resnet)',
      'units_per_block': list(config.model.units_per_block),
      'width': config.model.width,
      'inputs': [modality],
      'batch_size': config.batch_size,
      'num_frames': num_frames,
      'forward_flops_per_frame': forward_flops,
  }
  result.update(
      time_step(
          train_fn,
          make_state,
          abstract_state,
          batches,
          abstract_batch,
          num_steps=num_steps,
          warmup=warmup,
          repeats=repeats,
          mesh=mesh,
          clips_per_step=config.batch_size,
          num_frames=num_frames,
      )
  )
  peak = peak_flops(jax.devices()[0].device_kind)
  result['model_flops_per_step'] = model_flops_per_step(
      forward_flops, config.batch_size * num_frames, trained_streams=1, frozen_streams=0
  )
  result['model_flops_mfu'] = model_flops_mfu(
      result['model_flops_per_step'], result['step_s'], peak, mesh.devices.size
  )
  result['mfu'] = model_flops_mfu(
      result['flops_per_step'], result['step_s'], peak, mesh.devices.size
  )
  return result


def loop_throughput(records: Sequence[Mapping[str, Any]], clips_per_step: int) -> dict[str, Any]:
  """The training loop's clips/s from a stage's `metrics.jsonl` records.

  Each train record's `clips_per_s` covers the steps since the previous
  record (wall clock, `time.time()` in `trainer.run_stage`). A validation pass
  runs right after the record of its step, so its time falls in the next
  interval. Not timed: the first interval (compiling the train step, filling
  the pipeline and the prefetch queue) and the one after the first validation
  (compiling the evaluation step). `clips_per_s` leaves out every interval
  holding a validation pass; `with_validation_clips_per_s` keeps the later
  ones, i.e. the loop at the config's validation cadence (None when no later
  pass was timed).
  """
  validated = {r['step'] for r in records if r['split'] == 'validation'}
  first_validation = min(validated, default=None)
  loop = {'clips': 0, 'seconds': 0.0, 'steps': 0}
  with_validation = {'clips': 0, 'seconds': 0.0}
  passes, previous = 0, 0
  for index, record in enumerate(r for r in records if r['split'] == 'train'):
    num_steps = record['step'] - previous
    clips = num_steps * clips_per_step
    seconds = clips / record['clips_per_s']
    if index > 0 and previous != first_validation:
      with_validation['clips'] += clips
      with_validation['seconds'] += seconds
      if previous in validated:
        passes += 1
      else:
        loop['clips'] += clips
        loop['seconds'] += seconds
        loop['steps'] += num_steps
    previous = record['step']
  if not loop['steps']:
    raise ValueError(
        f'No training interval was timed in {len(records)} metric records: run more steps '
        '(--end_to_end_steps) than 2 x config.log_every_steps and past the first validation.'
    )
  return {
      'clips_per_s': loop['clips'] / loop['seconds'],
      'steps_timed': loop['steps'],
      'seconds_timed': loop['seconds'],
      'with_validation_clips_per_s': (
          with_validation['clips'] / with_validation['seconds'] if passes else None
      ),
      'validation_passes_timed': passes,
  }


def measure_end_to_end(
    config: ml_collections.ConfigDict, stage_name: str, *, data_dir: str, num_steps: int
) -> dict[str, Any]:
  """The trainer's own loop: `trainer.run_stage` for `num_steps` steps in a temporary workdir.

  Pipeline, prefetch onto the devices, host-to-device transfer, step, logging
  and validation at the config's cadence, all as training runs them; the
  timing comes from the stage's own metric records (`loop_throughput`). The
  stage must start without earlier stages (a step-1 stage); weights do not
  change speed, so it starts from scratch.
  """
  stage = stages.for_config(stage_name, config)
  if stage.init:
    raise ValueError(
        f'The end-to-end run trains {stage_name!r} alone, but it starts from '
        f'{", ".join(sorted({s for i in stage.init for s in i.from_stages}))}; '
        'time a step-1 stage (step1_rgb, step1_depth or step1).'
    )
  run_config = ml_collections.ConfigDict(config.to_dict())
  run_config.stage = stage_name
  run_config.data_dir = data_dir
  run_config.build_if_missing = False
  run_config.num_train_steps = num_steps
  run_config.init.imagenet = ''
  run_config.init.from_workdir = ''
  # The one checkpoint is saved after the last record, outside the timed intervals.
  run_config.checkpoint_every_steps = num_steps
  with tempfile.TemporaryDirectory(prefix='modistill_end_to_end_') as workdir:
    trainer.run_stage(run_config, workdir, stage_name)
    lines = runs.stage_dir(workdir, stage_name).metrics_file.read_text().splitlines()
  timing = loop_throughput([json.loads(line) for line in lines], config.batch_size)
  return {
      'stage': stage_name,
      'steps': num_steps,
      'batch_size': config.batch_size,
      'log_every_steps': config.log_every_steps,
      'prefetch': config.input.prefetch,
      'worker_count': config.input.worker_count,
      **timing,
  }


def compare_end_to_end(end_to_end: dict[str, Any], stage_result: Mapping[str, Any]) -> None:
  """Adds the step alone and the pipeline alone (same run) and the loop's share of the lower."""
  alone = {
      'step_alone_clips_per_s': stage_result['clips_per_s'],
      'pipeline_alone_clips_per_s': stage_result.get('pipeline_clips_per_s'),
  }
  known = [v for v in alone.values() if v is not None]
  bound = min(known) if known else None
  end_to_end.update(alone)
  end_to_end['bound_clips_per_s'] = bound
  end_to_end['share_of_bound'] = end_to_end['clips_per_s'] / bound if bound else None


def suite_config(
    config: ml_collections.ConfigDict, *, image_size: int, batch_size: int | None, num_devices: int
) -> ml_collections.ConfigDict:
  """The config as the suite runs every stage: `image_size`, bfloat16, the suite's batch."""
  suite = ml_collections.ConfigDict(config.to_dict())
  suite.input.image_size = image_size
  suite.model.dtype = 'bfloat16'
  suite.batch_size = batch_size or SUITE_CLIPS_PER_DEVICE * num_devices
  return suite


def run_suite(
    config: ml_collections.ConfigDict,
    *,
    image_size: int,
    batch_size: int | None,
    num_steps: int,
    warmup: int,
    repeats: int,
    num_classes: int,
    data_dir: str | None,
    pipeline_seconds: float,
    end_to_end_steps: int,
) -> dict[str, Any]:
  """Every stage, the plain ResNet reference and (with `data_dir`) the end-to-end figure.

  The reference runs first and the stages in rising order of memory (one
  stream, step 3, then the two-stream stages), so that as many of them as
  possible raise the device's high-water mark and get their own measured peak
  (see `own_peak`); results are listed in the usual order.
  """
  mesh = sharding.make_mesh()
  config = suite_config(
      config, image_size=image_size, batch_size=batch_size, num_devices=mesh.devices.size
  )
  config_lib.check(config)
  sharding.check_batch_size(config.batch_size, mesh)
  single = single_stream_stage(config)
  reference = benchmark_reference(
      config,
      num_steps=num_steps,
      warmup=warmup,
      repeats=repeats,
      num_classes=num_classes,
      mesh=mesh,
      dtype=resnet.compute_dtype(config.model),
      modality=stages.for_config(single, config).inputs[0],
  )
  measured = run(
      config,
      (single, 'step3', 'step2', 'step4'),
      num_steps=num_steps,
      warmup=warmup,
      num_classes=num_classes,
      data_dir=data_dir,
      pipeline_seconds=pipeline_seconds,
      repeats=repeats,
  )
  by_name = {r['stage']: r for r in measured}
  results = [by_name[name] for name in (single, 'step2', 'step3', 'step4')]
  reference['pipeline_clips_per_s'] = by_name[single]['pipeline_clips_per_s']
  end_to_end = None
  if data_dir:
    end_to_end = measure_end_to_end(config, single, data_dir=data_dir, num_steps=end_to_end_steps)
    compare_end_to_end(end_to_end, by_name[single])
  speeds = (by_name[single]['frames_per_s'], reference['frames_per_s'])
  return {
      'stages': results,
      'reference': reference,
      'end_to_end': end_to_end,
      'headline': {
          'stage': single,
          'frames_per_s': speeds[0],
          'reference_frames_per_s': speeds[1],
          'over_reference': speeds[0] / speeds[1] if None not in speeds else None,
      },
      'model_flops': 'model FLOPs = (3 x trained streams + frozen streams) x forward FLOPs per '
      'frame x frames per step; forward FLOPs per frame: compiled cost analysis '
      'of one inference forward (forward_flops_per_frame, and the same for the '
      'reference)',
      'measured_memory': 'peak_bytes_in_use of device.memory_stats(), the allocator high-water '
      'mark; null where the backend has none (CPU) or where this measurement '
      'did not raise the mark (then measured_peak_memory_at_most_bytes)',
  }


def _memory(result: Mapping[str, Any]) -> str:
  if result.get('measured_peak_memory_bytes') is not None:
    return _fmt(result['measured_peak_memory_bytes'], 2**30, 2)
  if result.get('measured_peak_memory_at_most_bytes') is not None:
    return '<= ' + _fmt(result['measured_peak_memory_at_most_bytes'], 2**30, 2)
  return 'n/a'


def markdown(report: Mapping[str, Any]) -> str:
  """The report as Markdown: settings, a row per stage and the reference, headline, end to end."""
  first = report['stages'][0]
  lines = [
      f"{first['device_kind']} x {first['num_devices']} ({first['platform']}), {first['dtype']}, "
      f"{first['batch_size']} clips x {first['num_frames']} frames of "
      f"{first['image_size']}x{first['image_size']}, blocks {first['units_per_block']} width "
      f"{first['width']}, median of {first['repeats']} x {first['steps']} steps; host load "
      f"{first['host_load_avg_1m'][0]:.1f} on {first['host_cpus']} cores",
      '',
      '| stage | clips/s | frames/s | GFLOP/step lowered | GFLOP/step compiled | disagree '
      '| model GFLOP/step | model-FLOP MFU | MFU (compiled) | measured peak GiB | plan GiB '
      '| compile s | recompiles | multi-stream eff. | input clips/s |',
      '|---|' + '---:|' * 14,
  ]
  rows = list(report['stages']) + ([report['reference']] if report.get('reference') else [])

  def percent(r, key):
    return 'n/a' if r.get(key) is None else f'{100 * r[key]:.1f}%'

  for r in rows:
    flag = f"{100 * r['flop_disagreement']:.1f}%" + (' **>10%**' if r['flops_disagree'] else '')
    lines.append(
        f"| {r['stage']} | {_fmt(r['clips_per_s'])} | {_fmt(r['frames_per_s'])} "
        f"| {_fmt(r['lowered_flops_per_step'], 1e9)} | {_fmt(r['flops_per_step'], 1e9)} "
        f"| {flag} | {_fmt(r['model_flops_per_step'], 1e9)} | {percent(r, 'model_flops_mfu')} "
        f"| {percent(r, 'mfu')} | {_memory(r)} | {_fmt(r['peak_memory_bytes'], 2**30, 2)} "
        f"| {_fmt(r['compile_s'])} | {'n/a' if r['recompiles'] is None else r['recompiles']} "
        f"| {_fmt(r.get('multi_stream_efficiency'), 1, 2)} "
        f"| {_fmt(r.get('pipeline_clips_per_s'))} |"
    )
  headline = report.get('headline')
  if headline and headline['over_reference'] is not None:
    lines += [
        '',
        f"**{headline['stage']} frames/s over the plain ResNet reference's: "
        f"{_fmt(headline['over_reference'], 1, 2)}x** ({_fmt(headline['frames_per_s'])} "
        f"vs {_fmt(headline['reference_frames_per_s'])})",
    ]
  e2e = report.get('end_to_end')
  if e2e:
    share = 'n/a' if e2e['share_of_bound'] is None else f"{100 * e2e['share_of_bound']:.0f}%"
    lines += [
        '',
        f"End to end ({e2e['stage']}, trainer loop, {e2e['steps_timed']} steps timed): "
        f"**{_fmt(e2e['clips_per_s'])} clips/s**, {share} of min(step alone "
        f"{_fmt(e2e['step_alone_clips_per_s'])}, pipeline alone "
        f"{_fmt(e2e['pipeline_alone_clips_per_s'])}); with validation passes "
        f"({e2e['validation_passes_timed']} timed): "
        f"{_fmt(e2e['with_validation_clips_per_s'])} clips/s",
    ]
  if report.get('model_flops'):
    lines += [
        '',
        f"Model FLOPs: {report['model_flops']}. Measured memory: " f"{report['measured_memory']}.",
    ]
  return '\n'.join(lines) + '\n'


def _fmt(value, scale: float = 1.0, digits: int = 1) -> str:
  return 'n/a' if value is None else f'{value / scale:,.{digits}f}'


def table(results: Sequence[Mapping[str, Any]]) -> str:
  """A fixed-width table of the results, one row per stage."""
  first = results[0]
  lines = [
      f"{first['device_kind']} x {first['num_devices']} ({first['platform']}), "
      f"{first['dtype']}, {first['batch_size']} clips x {first['num_frames']} frames of "
      f"{first['image_size']}x{first['image_size']}, blocks {first['units_per_block']} "
      f"width {first['width']}; host load {first['host_load_avg_1m'][0]:.1f} on "
      f"{first['host_cpus']} cores",
      f'forward GFLOP/frame (one stream, inference): '
      f"{_fmt(first['forward_flops_per_frame'], 1e9, 3)}",
      f"{'stage':<12}{'clips/s':>10}{'frames/s':>11}{'GFLOP/step':>13}{'fwd units':>10}"
      f"{'MFU':>7}{'mem GiB':>9}{'compile s':>10}{'recomp':>7}{'FLOP x':>8}{'eff':>7}"
      f"{'input clips/s':>15}",
  ]
  for r in results:
    mfu = 'n/a' if r['mfu'] is None else f"{100 * r['mfu']:.1f}%"
    recompiles = 'n/a' if r['recompiles'] is None else str(r['recompiles'])
    lines.append(
        f"{r['stage']:<12}{_fmt(r['clips_per_s']):>10}{_fmt(r['frames_per_s']):>11}"
        f"{_fmt(r['flops_per_step'], 1e9):>13}{_fmt(r['flops_in_stream_forwards'], 1, 2):>10}"
        f"{mfu:>7}{_fmt(r['peak_memory_bytes'], 2**30, 2):>9}{_fmt(r['compile_s']):>10}"
        f"{recompiles:>7}{_fmt(r['flop_ratio'], 1, 2):>8}"
        f"{_fmt(r['multi_stream_efficiency'], 1, 2):>7}{_fmt(r['pipeline_clips_per_s']):>15}"
    )
  return '\n'.join(lines)


def main(argv):
  del argv
  cli.quiet_logging()
  cli.use_compilation_cache()
  config = _CONFIG.value
  warmup = max(_WARMUP.value, 1)
  if _REPEATS.value < 1:
    raise app.UsageError(f'--repeats must be at least 1, got {_REPEATS.value}.')
  if _LOWER_FOR.value:
    if _SUITE.value or _END_TO_END.value or _DATA_DIR.value:
      raise app.UsageError('--lower_for only lowers; drop --suite, --end_to_end and --data_dir.')
    try:
      platforms = lowering.check_platforms(_LOWER_FOR.value)
    except ValueError as e:
      raise app.UsageError(f'--lower_for: {e}') from e
    found = lowering.lower_stages(
        config,
        stage_names(config, _ALL_STAGES.value, _STAGES.value),
        num_classes=_NUM_CLASSES.value,
        platforms=platforms,
    )
    print(lowering.table(found))
    if _JSON.value:
      with open(_JSON.value, 'w') as f:
        json.dump([dataclasses.asdict(x) for x in found], f, indent=2)
    return
  if _SUITE.value:
    if _STAGES.value or _ALL_STAGES.value or _END_TO_END.value:
      raise app.UsageError(
          '--suite runs every stage, and the end-to-end run with --data_dir; '
          'drop --stages, --all_stages and --end_to_end.'
      )
    report = run_suite(
        config,
        image_size=_SUITE_IMAGE_SIZE.value,
        batch_size=_SUITE_BATCH.value,
        num_steps=_STEPS.value,
        warmup=warmup,
        repeats=_REPEATS.value,
        num_classes=_NUM_CLASSES.value,
        data_dir=_DATA_DIR.value,
        pipeline_seconds=_PIPELINE_SECONDS.value,
        end_to_end_steps=_END_TO_END_STEPS.value,
    )
  else:
    names = stage_names(config, _ALL_STAGES.value, _STAGES.value)
    if _END_TO_END.value and (len(names) != 1 or not _DATA_DIR.value):
      raise app.UsageError(
          '--end_to_end times one step-1 stage on --data_dir; got stages '
          f'{list(names)} and --data_dir={_DATA_DIR.value!r}.'
      )
    results = run(
        config,
        names,
        num_steps=_STEPS.value,
        warmup=warmup,
        num_classes=_NUM_CLASSES.value,
        data_dir=_DATA_DIR.value,
        pipeline_seconds=_PIPELINE_SECONDS.value,
        repeats=_REPEATS.value,
    )
    print(table(results))
    report = results[0] if len(results) == 1 else {'stages': results}
    if _END_TO_END.value:
      report['end_to_end'] = measure_end_to_end(
          config, names[0], data_dir=_DATA_DIR.value, num_steps=_END_TO_END_STEPS.value
      )
      compare_end_to_end(report['end_to_end'], results[0])
  print(json.dumps(report, indent=2))
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(report, f, indent=2)
  if _MARKDOWN.value or _SUITE.value:
    text = markdown(report if 'stages' in report else {'stages': [report], **report})
    print(text)
    if _MARKDOWN.value:
      with open(_MARKDOWN.value, 'w') as f:
        f.write(text)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
