"""The pretraining that plays ImageNet's role for the synthetic miniature, as a checkpoint.

  python -m modistill_jax.pretext --config=configs/pretext.py --out=workdirs/pretext

On NTU RGB+D both streams start from one ImageNet ResNet-50, which is why RGB
alone is strong there; the miniature's tiny streams have no such network. This
trains one on a pretext task of the same renderer (`synthetic_rgbd/pretext`:
actors, rooms and labels that no action split uses; the label is the hue of the
actor's shirt, never an action), as the RGB stream of a step-1 stage in
`OUT/run/`, and saves its best state in the form `pretrained.convert` gives an
ImageNet checkpoint (`OUT/variables`, `OUT/metadata.json`). So
`--config.init.imagenet=OUT` loads it for both streams exactly as on NTU: the
classifier and temporal convolutions start fresh, and every stage uses the input
normalisation recorded in the metadata.

Cached like the dataset: when `OUT/metadata.json` exists the command says so and
trains nothing (delete OUT to train again). A stopped run resumes from
`OUT/run/`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from modistill_jax import checkpointing
from modistill_jax import cli
from modistill_jax import metrics
from modistill_jax import finished_stage
from modistill_jax import pretrained
from modistill_jax import runs
from modistill_jax import trainer

# The stage that trains the pretext network, and its one stream.
STAGE = 'step1_rgb'
STREAM = 'rgb'
RUN_DIR = 'run'


class NotPretextStageError(ValueError):
  """The config trains another stage than the pretext network's."""


def metadata_of(stage: finished_stage.FinishedStage) -> dict[str, Any]:
  """The checkpoint's metadata: `pretrained`'s keys, and what the network was trained on."""
  config = stage.config
  return {
      'source_format': 'pretext',
      'source_file': f'{config.dataset}/{config.builder_config}',
      'stride_layout': config.model.stride_layout,
      'num_classes': len(stage.class_names),
      'background_class': False,
      'channel_order': 'RGB',
      'mean': list(config.input.rgb_mean),
      'std': list(config.input.rgb_std),
      'model': {'width': config.model.width, 'units_per_block': list(config.model.units_per_block)},
      'class_names': list(stage.class_names),
      'test_accuracy': stage.results['test']['accuracy'][STREAM],
      'train_seconds': stage.results.get('train_seconds'),
  }


def pretrain(config: ml_collections.ConfigDict, out: str) -> dict[str, Any]:
  """Trains the pretext network into `out` (unless it is there); returns its metadata.

  Raises:
    NotPretextStageError: the config is not a step-1 RGB stage (the one network a
      checkpoint holds).
  """
  metadata_file = os.path.join(out, pretrained.METADATA_FILE)
  if os.path.exists(metadata_file):
    with open(metadata_file) as f:
      metadata = json.load(f)
    print(f'Pretext checkpoint {out} is present; nothing trained (delete it to train again).')
    return metadata
  if config.stage != STAGE:
    raise NotPretextStageError(
        f'The pretext network is the RGB stream of a {STAGE!r} stage; the config asks for '
        f'{config.stage!r} (use --config=configs/pretext.py or its :{STAGE},tiny).'
    )
  start = time.monotonic()
  cli.build_dataset(config)
  workdir = os.path.join(out, RUN_DIR)
  trainer.run_stage(config, workdir, STAGE)
  stage = finished_stage.load(workdir, STAGE)
  variables = checkpointing.stream_variables(stage.best_state(), STREAM)
  metadata = metadata_of(stage)
  pretrained.save(out, variables, metadata)
  print(
      f'Pretext checkpoint {out}: test accuracy {metadata["test_accuracy"]:.4f} '
      f'(chance {1 / metadata["num_classes"]:.4f}) in '
      f'{metrics.format_duration(time.monotonic() - start)}; '
      f'load it with --config.init.imagenet={out}',
      flush=True,
  )
  return metadata


def main(argv):
  del argv
  cli.quiet_logging()
  cli.use_compilation_cache(flags.FLAGS.out)
  pretrain(flags.FLAGS.config, flags.FLAGS.out)


if __name__ == '__main__':
  config_flags.DEFINE_config_file(
      'config', 'configs/pretext.py', 'The pretext config and stage.', lock_config=True
  )
  flags.DEFINE_string('out', 'workdirs/pretext', 'Checkpoint folder (kept if complete).')
  app.run(
      cli.with_refusals(main, NotPretextStageError, trainer.ConfigMismatchError, runs.LockHeldError)
  )
