"""Several stages in one run, compared with each other, and the accelerator suite (`--suite`)."""

from __future__ import annotations

from collections.abc import Sequence
import os
from typing import Any

import jax
import ml_collections

from modistill_jax import config_lib
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax.benchmark import costs
from modistill_jax.benchmark import end_to_end
from modistill_jax.benchmark import plain_resnet
from modistill_jax.benchmark import step
from modistill_jax.data import pipeline
from modistill_jax.models import resnet

# The suite's default batch per device: 64 clips x 5 frames of 224x224 in bf16
# is ~40 GiB for a two-stream stage by the CPU backend's memory plan (20 GiB at
# 32 clips, docs/performance.md), within an H100's or H200's memory; pass
# --suite_batch on smaller chips.
SUITE_CLIPS_PER_DEVICE = 64


def single_stream_stage(config: ml_collections.ConfigDict) -> str:
  """The step-1 stage of the test-time modality: the reference for FLOP ratios."""
  return f'step1_{stages.roles(config.privileged, config.deployed)[0]}'


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
  forward_flops = costs.forward_flops_per_frame(config, num_classes)
  results = [
      step.benchmark_stage(
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
      pipeline_clips[inputs] = end_to_end.measure_pipeline(
          config, data_dir, pipeline_seconds, inputs
      )
    r['pipeline_clips_per_s'] = pipeline_clips.get(inputs)
  peak = costs.peak_flops(device.device_kind)
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
    r['model_flops_per_step'] = costs.model_flops_per_step(
        forward_flops,
        config.batch_size * config.input.num_frames,
        trained_streams=len(r['trainable']),
        frozen_streams=len(r['frozen']),
    )
    r['model_flops_mfu'] = costs.model_flops_mfu(
        r['model_flops_per_step'], r['step_s'], peak, mesh.devices.size
    )
  return results


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
  (see `costs.own_peak`); results are listed in the usual order.
  """
  mesh = sharding.make_mesh()
  config = suite_config(
      config, image_size=image_size, batch_size=batch_size, num_devices=mesh.devices.size
  )
  config_lib.check(config)
  sharding.check_batch_size(config.batch_size, mesh)
  single = single_stream_stage(config)
  reference = plain_resnet.benchmark_reference(
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
  loop = None
  if data_dir:
    loop = end_to_end.measure_end_to_end(
        config, single, data_dir=data_dir, num_steps=end_to_end_steps
    )
    end_to_end.compare_end_to_end(loop, by_name[single])
  speeds = (by_name[single]['frames_per_s'], reference['frames_per_s'])
  return {
      'stages': results,
      'reference': reference,
      'end_to_end': loop,
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
