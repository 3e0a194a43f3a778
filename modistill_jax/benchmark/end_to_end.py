"""The input pipeline alone, and the trainer's whole loop timed from its own metric records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
import tempfile
from typing import Any

import ml_collections

from modistill_jax import runs
from modistill_jax import stages
from modistill_jax import trainer
from modistill_jax.data import pipeline


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
