"""The TFDS builder of a user's RGB-D folder, under the dataset name the user picks.

A TFDS builder's name and class list are class attributes, fixed before TFDS
sees the manual folder; here both belong to the user's data. So the builder
class is made per folder (`make_builder_class`): named as asked, with the
folder's classes, and registered with TFDS like any builder, after which TFDS's
own build command runs it by that name (`python -m data_builders.custom_rgbd`).
The built dataset is `<data_dir>/<name>/<config>/<version>/`, read back by
name like the others, and trained with the protocol `csv_splits`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from data_builders import raw_clips
from data_builders.custom_rgbd import layout
from modistill_jax.data import protocols

TRIMMED_REPORT = 'trimmed.tsv'
NAME_PATTERN = re.compile(r'[a-z][a-z0-9_]*')


class CustomRgbdBuilder(raw_clips.RawClipBuilder, skip_registration=True):
  """RGB + jet-coloured depth clips of a folder in the documented layout."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'First release: labels.csv, frames paired by rank, optional affine.',
      '2.0.0': 'Record layout 2 (`records.py`): a clip table and one record per frame and '
      'modality; depth as single-channel 8-bit codes, resized as depth before coding.',
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  `manual_dir` is your folder: labels.csv (sample,label,split), rgb/<sample>.mp4
  or rgb/<sample>/ frames, depth/<sample>/ PNG frames; see
  data_builders/custom_rgbd/README.md.
  """
  ATOMIC_SPLITS = protocols.SPLITS

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._trimmed: list[tuple[str, str, int, int]] = []

  def find_samples(self, manual_dir):
    return layout.find_samples(manual_dir, tuple(self.CLASS_NAMES))

  def convert_function(self):
    return layout.convert

  def _download_and_prepare(self, dl_manager, download_config):
    self._trimmed = []
    super()._download_and_prepare(dl_manager, download_config)
    lines = ['sample_id\tsplit\trgb_frames\tdepth_frames']
    lines += ['\t'.join(map(str, row)) for row in sorted(self._trimmed)]
    (self.data_path / TRIMMED_REPORT).write_text('\n'.join(lines) + '\n')
    if self._trimmed:
      logging.warning(
          '[%s] %d samples have more frames in one modality than in the other; '
          'each kept the first min(RGB, depth). Listed in %s beside the dataset '
          'files.',
          self.name,
          len(self._trimmed),
          TRIMMED_REPORT,
      )

  def _generate_examples(self, split, samples):
    examples = super()._generate_examples(split, samples)
    if self._use_beam:  # The counts stay in each example's rgb/depth_frames_raw.
      return examples
    return self._note_trimmed(split, examples)

  def _note_trimmed(self, split, examples):
    for sample_id, example in examples:
      rgb, depth = example['rgb_frames_raw'], example['depth_frames_raw']
      if rgb != depth:
        logging.warning(
            '[%s] %s: %d RGB and %d depth frames; keeping the first %d of each.',
            self.name,
            sample_id,
            rgb,
            depth,
            min(rgb, depth),
        )
        self._trimmed.append((sample_id, split, rgb, depth))
      yield sample_id, example


def check_name(name: str) -> None:
  if not NAME_PATTERN.fullmatch(name):
    raise ValueError(
        f'Dataset name {name!r}: use lower-case letters, digits and underscores, '
        f'starting with a letter (it names the folder <data_dir>/{name}/).'
    )
  if name in tfds.list_builders(with_community_datasets=False):
    raise ValueError(f'Dataset name {name!r} is already a TFDS dataset; pick another.')


def make_builder_class(name: str, root: epath.PathLike) -> type[CustomRgbdBuilder]:
  """Registers with TFDS a builder named `name` for the folder `root`.

  Reads the folder's tables first, so that their mistakes stop the build
  before anything is written (`layout.LayoutError`, naming the file and line).
  """
  check_name(name)
  found = layout.read_layout(root)
  class_name = ''.join(part.title() for part in name.split('_')) + 'Builder'
  configs = [dataclasses.replace(c, modalities=found.modalities) for c in raw_clips.CONFIGS]
  return type(
      class_name,
      (CustomRgbdBuilder,),
      {
          'name': name,
          'CLASS_NAMES': found.class_names,
          'BUILDER_CONFIGS': configs,
          '__module__': __name__,
      },
  )


def build(name: str, root: epath.PathLike, data_dir: str | None, configs, overwrite: bool):
  """Builds dataset `name` from the folder `root`, each of `configs` (all when empty).

  Returns the folders built. Raises ValueError (layout.LayoutError included) on
  a mistake in the folder's tables or the name, before anything is written.
  """
  builder_class = make_builder_class(name, root)
  known = [c.name for c in builder_class.BUILDER_CONFIGS]
  unknown = [c for c in configs if c not in known]
  if unknown:
    raise ValueError(f'--config={",".join(unknown)}: not a config of {name}; use one of {known}.')
  download_config = tfds.download.DownloadConfig(manual_dir=str(root))
  folders = []
  for config in configs or known:
    dataset = builder_class(config=config, data_dir=data_dir)
    if overwrite and dataset.is_prepared():
      dataset.data_path.rmtree()
      dataset = builder_class(config=config, data_dir=data_dir)
    # TFDS announces a build with `print`, for a download-free builder as 'Downloading and
    # preparing dataset Unknown size ...'; the caller says what was built instead.
    with contextlib.redirect_stdout(io.StringIO()):
      dataset.download_and_prepare(download_config=download_config)
    folders.append(dataset.data_path)
  return folders
