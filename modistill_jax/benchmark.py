"""Speed of the real training step of a stage: throughput, FLOPs, MFU, memory, compile time.

  python -m modistill_jax.benchmark --config=configs/ntu_cs.py:step3 \
      --config.model.dtype=bfloat16 --config.batch_size=32 --json=step3.json
  python -m modistill_jax.benchmark --config=configs/ntu_cs.py --all_stages \
      --config.model.dtype=bfloat16 --config.batch_size=32 --json=stages.json

The step is the trainer's own (`trainer.make_train_fn`: donated state, data-
parallel over every device), built from the config exactly as `run_stage`
builds it, with freshly initialised weights. Speed does not depend on the
weights, so no checkpoint and no dataset are needed; `--num_classes` sets the
classifier size (60, NTU RGB+D 60) that the dataset would.

What each reported number is:

* `clips_per_s`, `frames_per_s`: the step alone on synthetic uint8 batches
  already on the devices, `--steps` steps after `--warmup` steps, with one
  `block_until_ready` at the end. Frames are input frames (clips x
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
* `peak_memory_bytes`: per device, from the compiled memory analysis:
  arguments + outputs + temporaries - aliased (donated) bytes, what the
  executable reserves. `xla_peak_memory_in_bytes` is XLA's own
  `peak_memory_in_bytes` for comparison (the CPU backend leaves temporaries
  out of it).
* `compile_s`: tracing, lowering and compiling the step (ahead of time; the
  jitted function reuses that executable on its first call).
* `recompiles`: XLA compilations (`jax.monitoring` backend-compile events)
  during every step after the first; anything but 0 means the step's input
  avals or shardings change between steps (null with `--steps=0`).

With several stages (`--all_stages`, `--stages`, or a config whose stage is
`all`), each stage also gets `flop_ratio` (its FLOPs over those of the
single-stream step 1 of the test-time modality, `step1_rgb` by default) and
`multi_stream_efficiency` = frames/s / (step-1 frames/s / flop_ratio): 1.0
when a stage with k times the FLOPs runs exactly k times slower than one stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
import json
import os
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
from modistill_jax import sharding
from modistill_jax import initialization
from modistill_jax import stages
from modistill_jax import trainer
from modistill_jax.data import feeding
from modistill_jax.data import pipeline
from modistill_jax.models import resnet
from modistill_jax.models import stage_network

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Protocol config file and stage, e.g. configs/ntu_cs.py:step3.',
    lock_config=True)
_STEPS = flags.DEFINE_integer(
    'steps', 20, 'Timed steps after the warm-up; 0 compiles only (FLOPs, memory, compile time).')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps first (the first one included).')
_JSON = flags.DEFINE_string('json', None, 'Also write the results to this JSON file.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'TFDS data_dir of the built dataset: also time the input pipeline alone.')
_PIPELINE_SECONDS = flags.DEFINE_float('pipeline_seconds', 20.0, 'How long to time the pipeline.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 60, 'Classifier size (60: NTU RGB+D 60).')
_ALL_STAGES = flags.DEFINE_bool(
    'all_stages', False, 'Benchmark step 1 of the test-time modality, step2, step3 and step4.')
_STAGES = flags.DEFINE_list(
    'stages', None, 'Stages to benchmark in one run (instead of the config\'s stage).')

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


def _flops(compiled: jax.stages.Compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, Sequence):  # one entry per executable in older JAX
    analysis = analysis[0]
  return float(analysis['flops'])


def peak_memory(compiled: jax.stages.Compiled) -> tuple[int, int | None]:
  """Bytes one device reserves for the executable, and XLA's own peak estimate.

  The first is arguments + outputs + temporaries - aliased (donated) bytes, on
  every backend. The second is `peak_memory_in_bytes`, None where it is 0; the
  CPU backend leaves temporaries out of it, so it is not the headline number.
  """
  stats = compiled.memory_analysis()
  total = (stats.argument_size_in_bytes + stats.output_size_in_bytes
           + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
  return int(total), int(getattr(stats, 'peak_memory_in_bytes', 0)) or None


def forward_flops_per_frame(config: ml_collections.ConfigDict, num_classes: int) -> float:
  """XLA's FLOPs of one stream in inference mode, per frame, on one clip.

  The stream is the one every stage runs (`resnet.stream_factory`), in the
  config's compute dtype.
  """
  num_frames, size = config.input.num_frames, config.input.image_size
  stream = resnet.stream_factory(config.model, num_classes)(name='stream')
  frames = jax.ShapeDtypeStruct((num_frames, size, size, 3),
                                resnet.compute_dtype(config.model))
  variables = jax.eval_shape(
      functools.partial(stream.init, num_frames=num_frames, train=False),
      jax.random.key(0), frames)
  forward = jax.jit(functools.partial(stream.apply, num_frames=num_frames, train=False))
  return _flops(forward.lower(variables, frames).compile()) / num_frames


def synthetic_batch(config: ml_collections.ConfigDict, modalities: Sequence[str],
                    num_classes: int, mesh, seed: int) -> dict[str, jax.Array]:
  """A global batch shaped like the pipeline's (the stage's modalities, uint8), on the devices."""
  rng = np.random.default_rng(seed)
  batch_size = config.batch_size
  clips = feeding.input_shape(config, batch_size)
  batch = {m: rng.integers(0, 256, clips, dtype=np.uint8) for m in modalities}
  batch['label'] = rng.integers(0, num_classes, batch_size, dtype=np.int32)
  batch['mask'] = np.ones(batch_size, np.bool_)
  batch['index'] = np.arange(batch_size, dtype=np.int32)
  return sharding.to_global(batch, mesh)


def benchmark_stage(config: ml_collections.ConfigDict, stage_name: str, *, num_steps: int,
                    warmup: int, num_classes: int, mesh) -> dict[str, Any]:
  """Compiles the stage's train step, reads its costs, and times it (unless num_steps=0)."""
  stage = stages.for_config(stage_name, config)
  model = stage_network(stage, config.model, num_classes)
  tx, schedule = optim.make_optimizer(config.optimizer, warmup + num_steps)
  make_state = trainer.make_state_fn(stage, tx, mesh)
  train_fn = trainer.make_train_fn(model, config, tx, schedule, mesh)
  replicated = sharding.replicated(mesh)
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(lambda: make_state(initialization.init_model_variables(model, config))))
  batches = [synthetic_batch(config, stage.inputs, num_classes, mesh, seed) for seed in range(2)]
  abstract_batch = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batches[0])

  start = time.perf_counter()
  compiled = train_fn.lower(abstract_state, abstract_batch).compile()
  compile_s = time.perf_counter() - start
  flops_per_device = _flops(compiled)
  memory, xla_peak = peak_memory(compiled)
  del compiled

  result = {
      'stage': stage_name, 'streams': list(stage.streams), 'frozen': list(stage.frozen),
      'inputs': list(stage.inputs),
      'flops_per_step': flops_per_device * mesh.devices.size,
      'flops_per_step_per_device': flops_per_device,
      'peak_memory_bytes': memory, 'xla_peak_memory_in_bytes': xla_peak,
      'compile_s': compile_s, 'steps': num_steps,
      'clips_per_s': None, 'frames_per_s': None, 'step_s': None, 'recompiles': None,
      'final_loss': None}
  if num_steps <= 0:
    return result

  state = make_state(initialization.init_model_variables(model, config))
  with CompileCounter() as compiles:
    state, step_metrics = train_fn(state, batches[0])
    jax.block_until_ready(state)
    after_first = compiles.count
    for i in range(1, warmup):
      state, step_metrics = train_fn(state, batches[i % 2])
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i in range(num_steps):
      state, step_metrics = train_fn(state, batches[i % 2])
    jax.block_until_ready((state, step_metrics))
    elapsed = time.perf_counter() - start
    recompiles = compiles.count - after_first
  clips_per_s = num_steps * config.batch_size / elapsed
  result.update({
      'clips_per_s': clips_per_s, 'frames_per_s': clips_per_s * config.input.num_frames,
      'step_s': elapsed / num_steps, 'recompiles': recompiles,
      'final_loss': float(step_metrics['loss'])})
  return result


def measure_pipeline(config: ml_collections.ConfigDict, data_dir: str, seconds: float,
                     modalities: Sequence[str]) -> float:
  """The input pipeline's clips/s alone on the built dataset's training split.

  Decoding only `modalities`, as the trainer does for a stage reading them.
  """
  source = pipeline.load_source(config.dataset, config.protocol, 'train', data_dir=data_dir,
                                builder_config=config.builder_config or None)
  if source is None:
    raise ValueError(f'{config.dataset}/{config.protocol} has no training split.')
  size = config.input.image_size
  return pipeline.measure_clips_per_s(
      source.records, num_frames=config.input.num_frames, image_size=(size, size),
      batch_size=config.batch_size, worker_count=config.input.worker_count, seconds=seconds,
      modalities=modalities)


def single_stream_stage(config: ml_collections.ConfigDict) -> str:
  """The step-1 stage of the test-time modality: the reference for FLOP ratios."""
  return 'step1_rgb' if config.privileged == 'depth' else 'step1_depth'


def stage_names(config: ml_collections.ConfigDict, all_stages: bool,
                names: Sequence[str] | None) -> tuple[str, ...]:
  """`--stages` if given; the four stages for `--all_stages` or stage `all`; else the config's."""
  if names:
    for name in names:
      stages.check_stage_name(name)
    return tuple(names)
  if all_stages or config.stage == stages.ALL:
    return (single_stream_stage(config), 'step2', 'step3', 'step4')
  return (config.stage,)


def add_comparisons(results: list[dict[str, Any]], reference: str,
                    forward_flops: float, clips_per_step: int, num_frames: int) -> None:
  """Per stage: FLOPs in stream forwards, and ratio/efficiency against `reference`."""
  by_name = {r['stage']: r for r in results}
  base = by_name.get(reference)
  for r in results:
    r['flops_in_stream_forwards'] = r['flops_per_step'] / (forward_flops * clips_per_step * num_frames)
    r['reference_stage'] = reference if base else None
    r['flop_ratio'] = r['flops_per_step'] / base['flops_per_step'] if base else None
    speeds = (r['frames_per_s'], base['frames_per_s']) if base else (None, None)
    r['multi_stream_efficiency'] = (speeds[0] * r['flop_ratio'] / speeds[1]
                                    if None not in speeds else None)


def run(config: ml_collections.ConfigDict, names: Sequence[str], *, num_steps: int,
        warmup: int, num_classes: int, data_dir: str | None = None,
        pipeline_seconds: float = 20.0) -> list[dict[str, Any]]:
  """Benchmarks the stages; every result carries the run's device and settings."""
  config_lib.check(config)
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  device = jax.devices()[0]
  load_before = os.getloadavg()[0]
  forward_flops = forward_flops_per_frame(config, num_classes)
  results = [benchmark_stage(config, name, num_steps=num_steps, warmup=warmup,
                             num_classes=num_classes, mesh=mesh) for name in names]
  pipeline_clips = {}  # by the modalities decoded: RGB-only stages decode no depth
  for r in results:
    inputs = tuple(r['inputs'])
    if data_dir and inputs not in pipeline_clips:
      pipeline_clips[inputs] = measure_pipeline(config, data_dir, pipeline_seconds, inputs)
    r['pipeline_clips_per_s'] = pipeline_clips.get(inputs)
  peak = peak_flops(device.device_kind)
  add_comparisons(results, single_stream_stage(config), forward_flops, config.batch_size,
                  config.input.num_frames)
  common = {
      'device_kind': device.device_kind, 'platform': device.platform,
      'num_devices': mesh.devices.size, 'peak_bf16_flops_per_device': peak,
      'dtype': config.model.dtype, 'batch_size': config.batch_size,
      'num_frames': config.input.num_frames, 'image_size': config.input.image_size,
      'units_per_block': list(config.model.units_per_block), 'width': config.model.width,
      'forward_flops_per_frame': forward_flops,
      'host_cpus': pipeline.usable_cores(),
      'host_load_avg_1m': [load_before, os.getloadavg()[0]]}
  for r in results:
    r.update(common)
    steps_per_s = 1 / r['step_s'] if r['step_s'] else None
    r['mfu'] = (r['flops_per_step_per_device'] * steps_per_s / peak
                if peak and steps_per_s else None)
  return results


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
      f"forward GFLOP/frame (one stream, inference): "
      f"{_fmt(first['forward_flops_per_frame'], 1e9, 3)}",
      f"{'stage':<12}{'clips/s':>10}{'frames/s':>11}{'GFLOP/step':>13}{'fwd units':>10}"
      f"{'MFU':>7}{'mem GiB':>9}{'compile s':>10}{'recomp':>7}{'FLOP x':>8}{'eff':>7}"
      f"{'input clips/s':>15}"]
  for r in results:
    mfu = 'n/a' if r['mfu'] is None else f"{100 * r['mfu']:.1f}%"
    recompiles = 'n/a' if r['recompiles'] is None else str(r['recompiles'])
    lines.append(
        f"{r['stage']:<12}{_fmt(r['clips_per_s']):>10}{_fmt(r['frames_per_s']):>11}"
        f"{_fmt(r['flops_per_step'], 1e9):>13}{_fmt(r['flops_in_stream_forwards'], 1, 2):>10}"
        f"{mfu:>7}{_fmt(r['peak_memory_bytes'], 2**30, 2):>9}{_fmt(r['compile_s']):>10}"
        f"{recompiles:>7}{_fmt(r['flop_ratio'], 1, 2):>8}"
        f"{_fmt(r['multi_stream_efficiency'], 1, 2):>7}{_fmt(r['pipeline_clips_per_s']):>15}")
  return '\n'.join(lines)


def main(argv):
  del argv
  cli.quiet_logging()
  config = _CONFIG.value
  names = stage_names(config, _ALL_STAGES.value, _STAGES.value)
  results = run(config, names, num_steps=_STEPS.value, warmup=max(_WARMUP.value, 1),
                num_classes=_NUM_CLASSES.value, data_dir=_DATA_DIR.value,
                pipeline_seconds=_PIPELINE_SECONDS.value)
  print(table(results))
  report = results[0] if len(results) == 1 else {'stages': results}
  print(json.dumps(report, indent=2))
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(report, f, indent=2)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
