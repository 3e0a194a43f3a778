"""`python -m modistill_jax.benchmark`: the flags and what each mode runs (see `__init__`)."""

from __future__ import annotations

import dataclasses
import json

from absl import app
from absl import flags
from ml_collections import config_flags

from modistill_jax import cli
from modistill_jax import lowering
from modistill_jax.benchmark import end_to_end
from modistill_jax.benchmark import reporting
from modistill_jax.benchmark import suite

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
    f'{suite.SUITE_CLIPS_PER_DEVICE} clips per device.',
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
        suite.stage_names(config, _ALL_STAGES.value, _STAGES.value),
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
    report = suite.run_suite(
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
    names = suite.stage_names(config, _ALL_STAGES.value, _STAGES.value)
    if _END_TO_END.value and (len(names) != 1 or not _DATA_DIR.value):
      raise app.UsageError(
          '--end_to_end times one step-1 stage on --data_dir; got stages '
          f'{list(names)} and --data_dir={_DATA_DIR.value!r}.'
      )
    results = suite.run(
        config,
        names,
        num_steps=_STEPS.value,
        warmup=warmup,
        num_classes=_NUM_CLASSES.value,
        data_dir=_DATA_DIR.value,
        pipeline_seconds=_PIPELINE_SECONDS.value,
        repeats=_REPEATS.value,
    )
    print(reporting.table(results))
    report = results[0] if len(results) == 1 else {'stages': results}
    if _END_TO_END.value:
      report['end_to_end'] = end_to_end.measure_end_to_end(
          config, names[0], data_dir=_DATA_DIR.value, num_steps=_END_TO_END_STEPS.value
      )
      end_to_end.compare_end_to_end(report['end_to_end'], results[0])
  print(json.dumps(report, indent=2))
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(report, f, indent=2)
  if _MARKDOWN.value or _SUITE.value:
    text = reporting.markdown(report if 'stages' in report else {'stages': [report], **report})
    print(text)
    if _MARKDOWN.value:
      with open(_MARKDOWN.value, 'w') as f:
        f.write(text)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
