"""TFDS builder `synthetic_rgbd`: procedural RGB+D action clips, no download.

The clips are rendered by `modistill_jax.data.synthetic` (see its docstring
and this folder's README for the classes and why depth is privileged) and
stored in the shared record format (`modistill_jax.data.records`), so the
input pipeline reads them exactly like NTU RGB+D. Splits are atomic:
`train`, `validation` and `test` (the held-out view), which the protocol
`cross_view` uses as they are.

Rendering and encoding run in a pool of forked workers, one per available
core, which is what brings the default config under a minute on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import multiprocessing
import os

import tensorflow_datasets as tfds

from modistill_jax.data import protocols
from modistill_jax.data import records
from modistill_jax.data import synthetic


@dataclasses.dataclass(kw_only=True)
class SyntheticRgbdConfig(tfds.core.BuilderConfig):
  """A named `synthetic.GeneratorSpec`: size, frames, clips, seed, views, subjects."""
  spec: synthetic.GeneratorSpec = synthetic.GeneratorSpec()


def _example(spec: synthetic.GeneratorSpec, clip: synthetic.ClipInfo) -> tuple[str, dict]:
  frames = synthetic.render_clip(spec, clip.label, clip.index)
  return clip.sample_id, records.make_example(
      rgb=frames['rgb'], depth_jet=frames['depth_jet'], label=clip.label,
      sample_id=clip.sample_id, rgb_frames_raw=spec.num_frames,
      depth_frames_raw=spec.num_frames, subject=clip.subject, view=clip.view,
      replication=clip.replication)


def _example_star(args) -> tuple[str, dict]:
  return _example(*args)


def _num_workers() -> int:
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


class Builder(tfds.core.GeneratorBasedBuilder):
  """Procedural RGB+D actions: 8 classes defined by motion in depth, 3 views."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = [
      SyntheticRgbdConfig(
          name='default',
          description='64x64, 16 frames, 288 clips per class (2,304 clips), 8 subjects.',
          spec=synthetic.GeneratorSpec()),
      SyntheticRgbdConfig(
          name='tiny',
          description='32x32, 8 frames, 24 clips per class (192 clips), 4 subjects: for tests.',
          spec=synthetic.GeneratorSpec(resolution=32, num_frames=8, clips_per_class=24,
                                       num_subjects=4)),
  ]
  DEFAULT_CONFIG_NAME = 'default'

  def __init__(self, *, file_format=None, **kwargs):
    # The pipeline reads with `tfds.data_source`, which needs random access.
    super().__init__(file_format=file_format or records.FILE_FORMAT, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=records.clip_features(synthetic.CLASS_NAMES))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    clips = synthetic.all_clips(self.builder_config.spec)
    return {split: self._generate_examples([c for c in clips if c.split == split])
            for split in protocols.SPLITS}

  def _generate_examples(self, clips: Sequence[synthetic.ClipInfo]
                         ) -> Iterator[tuple[str, dict]]:
    spec = self.builder_config.spec
    tasks = [(spec, clip) for clip in clips]
    workers = min(_num_workers(), len(tasks))
    # Forked workers inherit the imported modules instead of re-importing TensorFlow.
    if workers > 1 and 'fork' in multiprocessing.get_all_start_methods():
      with multiprocessing.get_context('fork').Pool(workers) as pool:
        yield from pool.imap(_example_star, tasks, chunksize=8)
    else:
      yield from map(_example_star, tasks)
