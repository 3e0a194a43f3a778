"""TFDS builder `synthetic_rgbd`: procedural RGB+D action clips, no download.

The clips are rendered by `data_builders.synthetic_rgbd.renderer` (see its docstring
and this folder's README for the classes and why depth is privileged) and
stored in the shared record format (`modistill_jax.data.records`: a clip
table and frame rows per split, written by `raw_clips.SplitWriter`), so the
input pipeline reads them exactly like NTU RGB+D. Splits are atomic:
`train`, `validation` and `test` (the held-out view), which the protocol
`cross_view` uses as they are, or, for a config made for `cross_subject`,
`cs_train`, `cs_validation` and `cs_test` (held-out subjects).

Rendering and encoding run in a process pool with the real-data builders'
policy (`raw_clips.worker_count`, `MODISTILL_BUILD_WORKERS`; 1 renders
in-process): `spawn`ed workers, because the trainer builds the dataset on first
use from a process that already runs JAX's and TensorFlow's threads, which a
`fork` would copy mid-flight (JAX warns that this can deadlock).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import concurrent.futures
import dataclasses
import multiprocessing

import tensorflow_datasets as tfds

from data_builders import raw_clips
from data_builders.synthetic_rgbd import synthetic_records
from modistill_jax.data import records
from data_builders.synthetic_rgbd import renderer

# `ntu_like` after its first calibration step on the trained streams (README, calibration record).
NTU_LIKE_FACES = renderer.GeneratorSpec(
    scenario='ntu_like',
    rgb_distractors=False,
    camera_height=1.8,
    walk_distance_m=(1.9, 2.3),
    walk_far_z=1.6,
    faces=True,
)
# `ntu_like_faces` with 24 subjects, split by subject: 19-24 test, 13-18 validation (README,
# calibration steps 6 and 7).
NTU_LIKE_FACES_CS24 = dataclasses.replace(
    NTU_LIKE_FACES,
    num_subjects=24,
    protocol='cross_subject',
    num_test_subjects=6,
    num_validation_subjects=6,
)


@dataclasses.dataclass(kw_only=True)
class SyntheticRgbdConfig(tfds.core.BuilderConfig):
  """A named `renderer.GeneratorSpec` (size, frames, clips, seed, views, subjects) and the
  modalities its records store (`synthetic_records.STORABLE`)."""

  spec: renderer.GeneratorSpec = renderer.GeneratorSpec()
  modalities: tuple[str, ...] = records.MODALITIES


class Builder(tfds.core.GeneratorBasedBuilder):
  """Procedural RGB+D actions: 8 classes defined by motion in depth, 3 views."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'First release.',
      '2.0.0': 'Record layout 2 (`records.py`): a clip table and one record per frame and '
      'modality; depth as single-channel 8-bit codes. Same clips, order and pixels.',
  }
  BUILDER_CONFIGS = [
      SyntheticRgbdConfig(
          name='default',
          description='64x64, 16 frames, 288 clips per class (2,304 clips), 8 subjects.',
          spec=renderer.GeneratorSpec(),
      ),
      SyntheticRgbdConfig(
          name='tiny',
          description='32x32, 8 frames, 24 clips per class (192 clips), 4 subjects: for tests.',
          spec=renderer.GeneratorSpec(
              resolution=32, num_frames=8, clips_per_class=24, num_subjects=4
          ),
      ),
      SyntheticRgbdConfig(
          name='ntu_like',
          description=(
              'The size of `default`, NTU-like classes: some told apart only in RGB, '
              'some only in depth, most in both (see the README).'
          ),
          spec=renderer.GeneratorSpec(scenario='ntu_like', rgb_distractors=False),
      ),
      SyntheticRgbdConfig(
          name='ntu_like_faces',
          description=(
              '`ntu_like` whose motions in depth show more in RGB: heads with a face and hair, '
              'a camera 1.8 m high (not 1.3) and walks of 1.9-2.3 m (not 1.3-1.7) from 4.2 m '
              'away. Same size, classes and splits (see the README).'
          ),
          spec=NTU_LIKE_FACES,
      ),
      SyntheticRgbdConfig(
          name='ntu_like_coats',
          description=(
              '`ntu_like_faces` with two more classes, put on and take off a dark blue '
              "raincoat: the jacket's gesture, so 4 of its 10 classes are told apart in RGB "
              'alone (see the README).'
          ),
          spec=dataclasses.replace(NTU_LIKE_FACES, scenario='ntu_like_coats'),
      ),
      SyntheticRgbdConfig(
          name='ntu_like_coats_no_turn',
          description=(
              "`ntu_like_coats` without 'turn around', which the trained RGB stream hardly "
              'told at this size: 9 classes (see the README).'
          ),
          spec=dataclasses.replace(NTU_LIKE_FACES, scenario='ntu_like_coats_no_turn'),
      ),
      SyntheticRgbdConfig(
          name='ntu_like_coats_no_turn_cs',
          description=(
              '`ntu_like_coats_no_turn`, the same clips split by subject for the protocol '
              '`cross_subject`: subjects 7-8 of every view are the test split, 5-6 the '
              'validation split, 1-4 the training split (see the README).'
          ),
          spec=dataclasses.replace(
              NTU_LIKE_FACES,
              scenario='ntu_like_coats_no_turn',
              protocol='cross_subject',
              num_test_subjects=2,
              num_validation_subjects=2,
          ),
      ),
      SyntheticRgbdConfig(
          name='ntu_like_coats_no_turn_cs24',
          description=(
              '`ntu_like_coats_no_turn_cs` with 24 subjects instead of 8 (the same clips per '
              'class, 4 per subject and view): subjects 19-24 of every view are the test split, '
              '13-18 the validation split, 1-12 the training split (see the README).'
          ),
          spec=dataclasses.replace(NTU_LIKE_FACES_CS24, scenario='ntu_like_coats_no_turn'),
      ),
      SyntheticRgbdConfig(
          name='ntu_like_coats_cs24',
          description=(
              "`ntu_like_coats_no_turn_cs24`'s split on `ntu_like_coats`' 10 classes ('turn "
              "around' back): subjects 19-24 of every view are the test split, 13-18 the "
              'validation split, 1-12 the training split (see the README).'
          ),
          spec=dataclasses.replace(NTU_LIKE_FACES_CS24, scenario='ntu_like_coats'),
      ),
      SyntheticRgbdConfig(
          name='pretext',
          description=(
              "No actions: the pretraining that plays ImageNet's role (modistill_jax/pretext.py). "
              'Label: the hue of the shirt of an actor drawn for its clip alone, in a room of its '
              'own (seed 1), 64x64, 8 frames, 2,304 clips.'
          ),
          spec=renderer.GeneratorSpec(scenario='pretext', seed=1, num_frames=8),
      ),
      SyntheticRgbdConfig(
          name='pretext_tiny',
          description='`pretext` at the size of `tiny` (32x32, 8 frames, 192 clips): for tests.',
          spec=renderer.GeneratorSpec(
              scenario='pretext',
              seed=1,
              resolution=32,
              num_frames=8,
              clips_per_class=24,
              num_subjects=4,
          ),
      ),
  ]
  # Each action config again, its records with the renderer's infrared and joints beside RGB
  # and depth, as NTU's `*_ir_skeleton` builds store them; an RGB-D build stays as it is.
  BUILDER_CONFIGS += [
      dataclasses.replace(
          config,
          name=f'{config.name}_ir_skeleton',
          modalities=('rgb', 'depth', 'ir', 'skeleton'),
          description=config.description + ' With infrared frames and skeleton joints.',
      )
      for config in BUILDER_CONFIGS
      if config.spec.scenario != 'pretext'
  ]
  DEFAULT_CONFIG_NAME = 'default'

  def __init__(self, *, file_format=None, **kwargs):
    # The pipeline reads with `tfds.data_source`, which needs random access.
    super().__init__(file_format=file_format or records.FILE_FORMAT, **kwargs)
    self._pool: concurrent.futures.Executor | None = None
    self._writer = raw_clips.SplitWriter()

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=records.clip_features(
            self.builder_config.spec.class_names, self.builder_config.modalities
        )
    )

  def _download_and_prepare(self, dl_manager, download_config):
    """Renders on one pool for the whole build: spawned workers start once, not per split."""
    workers = raw_clips.worker_count()
    if workers == 1:
      return super()._download_and_prepare(dl_manager, download_config)
    self._pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context('spawn')
    )
    try:
      return super()._download_and_prepare(dl_manager, download_config)
    finally:
      self._pool.shutdown(cancel_futures=True)
      self._pool = None

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    clips = renderer.all_clips(self.builder_config.spec)
    generators = {}
    for split in renderer.atomic_splits(self.builder_config.spec):
      generators.update(
          self._writer.generators(
              split, self._generate_examples([c for c in clips if c.split == split])
          )
      )
    return generators

  def _generate_examples(self, clips: Sequence[renderer.ClipInfo]) -> Iterator[tuple[str, dict]]:
    spec, modalities = self.builder_config.spec, self.builder_config.modalities
    tasks = [(spec, clip, modalities) for clip in clips]
    if self._pool is None:
      yield from map(synthetic_records.example_of_task, tasks)
    else:
      yield from self._pool.map(synthetic_records.example_of_task, tasks, chunksize=8)
