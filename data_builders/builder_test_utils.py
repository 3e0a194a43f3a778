"""Checks the raw-data builder tests share: what a built dataset must hold."""

from __future__ import annotations

from collections.abc import Mapping
import hashlib
import itertools
import os
import sys

from array_record.python import array_record_module
from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from data_builders import raw_clips
from modistill_jax.data import records
from modistill_jax.data import shards

# The checkout's root folder, as it appears in paths.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ReadsArrayRecord:
  """Mixin for `tfds.testing.DatasetBuilderTestCase` over ArrayRecord datasets.

  The base class checks splits through `as_dataset`, which TFDS does not
  implement for ArrayRecord; this makes the same checks (split sizes, no
  example in two splits) through `as_data_source`, the way the pipeline reads.
  `SPLITS` counts clips: the clip-table splits; each has its frame rows'
  split beside it (`records.frames_split`), one row per frame and stored modality.
  """

  def _assertAsDataset(self, builder):  # pylint: disable=invalid-name
    ids = {}
    for split, expected in self.SPLITS.items():
      source = builder.as_data_source(split=split)
      self.assertLen(source, expected)
      ids[split] = {example['sample_id'] for example in source}
      frames = builder.as_data_source(split=records.frames_split(split))
      self.assertLen(
          frames,
          sum(len(records.stored_modalities(e)) * e['num_frames'] for e in source),
      )
    for (a, ids_a), (b, ids_b) in itertools.combinations(ids.items(), 2):
      self.assertFalse(ids_a & ids_b, f'splits {a} and {b} share examples')

  def _assertNumSamples(self, builder):  # pylint: disable=invalid-name
    clip_splits = {
        name: split.num_examples
        for name, split in builder.info.splits.items()
        if not records.is_frames_split(name)
    }
    self.assertEqual(clip_splits, self.SPLITS)
    self.assertEqual(
        sorted(records.frames_split(s) for s in clip_splits),
        sorted(s for s in builder.info.splits if records.is_frames_split(s)),
    )


def tfds_build_command() -> list[str]:
  """`tfds build` of this environment: the command the READMEs give (the `build` extra)."""
  script = os.path.join(os.path.dirname(sys.executable), 'tfds')
  if not os.path.exists(script):
    raise FileNotFoundError(
        f'{script} not found: install the test extra, '
        '`pip install -e ".[test]"`, which brings the `build` extra.'
    )
  return [script, 'build']


def build(
    builder_cls: type[tfds.core.DatasetBuilder], data_dir: str, manual_dir: str, config: str
) -> tfds.core.DatasetBuilder:
  builder = builder_cls(data_dir=data_dir, config=config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def read_built(builder: tfds.core.DatasetBuilder) -> dict[str, tuple[str, dict]]:
  """`{sample_id: (split, clip)}` of a built dataset, read as the pipeline reads it.

  A clip's `rgb` and `depth` read its frame rows by index (`shards.ClipRecords`).
  """
  found = {}
  for split in builder.info.splits:
    if records.is_frames_split(split):
      continue
    for clip in shards.open_split(builder, split, name=split, rebuild_command='tfds build'):
      found[clip['sample_id'].decode()] = (split, clip)
  return found


def check_built(
    test,
    builder: tfds.core.DatasetBuilder,
    labels: Mapping[str, str],
    frames: Mapping[str, tuple[int, int, int]],
    skips: Mapping[str, str],
) -> dict:
  """Asserts splits, label names, frame counts/sizes and the skip report.

  Args:
    test: the `absltest.TestCase` asserting.
    labels: `{sample_id: class name}` of every example expected.
    frames: `{sample_id: (kept, rgb_raw, depth_raw)}` frame counts.
    skips: `{sample_id: a substring of its skip reason}` of every sample skipped.

  Returns:
    `{sample_id: (split, example)}`.
  """
  built = read_built(builder)
  test.assertEqual(sorted(built), sorted(labels))
  config = builder.builder_config
  names = builder.info.features['label'].names
  for sample_id, (_, example) in built.items():
    test.assertEqual(names[example['label']], labels[sample_id], sample_id)
    kept, rgb_raw, depth_raw = frames[sample_id]
    test.assertEqual(
        (example['num_frames'], example['rgb_frames_raw'], example['depth_frames_raw']),
        (kept, rgb_raw, depth_raw),
        sample_id,
    )
    rgb = np.stack([records.decode_image(f) for f in example['rgb']])
    depth = np.stack([records.decode_depth(f) for f in example['depth']])
    test.assertEqual(rgb.shape, (kept, config.height, config.width, 3), sample_id)
    test.assertEqual(depth.shape, rgb.shape[:-1], sample_id)
  report = raw_clips.read_skip_report(builder.data_path / raw_clips.SKIP_REPORT)
  test.assertEqual(sorted(s.sample_id for s in report), sorted(skips))
  for skip in report:
    test.assertIn(skips[skip.sample_id], skip.reason, skip.sample_id)
  return built


def record_digests(builder: tfds.core.DatasetBuilder) -> dict[str, str]:
  """sha256 of each record file's content, and of `features.json` and `skipped.tsv`.

  The checkout's path in `skipped.tsv` (a reason may quote a raw file) is
  written `<repo>`, so the digest does not depend on where the tests run. A
  record's bytes follow the order of a Python set of its feature names in
  TFDS's serializer, which changes with the process's string hashing: so each
  record is re-serialized deterministically (fields sorted) before hashing,
  which keeps every byte of its content and the records' order. Used to show
  that an RGB-D build writes what the code before the modality descriptions
  wrote (the digests the builder tests hold were computed from that code).
  """
  digests = {}
  for path in sorted(epath.Path(builder.data_path).iterdir()):
    if '.array_record' in path.name:
      reader = array_record_module.ArrayRecordReader(os.fspath(path))
      digest = hashlib.sha256()
      try:
        for record in reader.read_all():
          example = tf_example_pb2.Example.FromString(record)
          digest.update(example.SerializeToString(deterministic=True))
      finally:
        reader.close()
      digests[path.name.split('.array_record')[0]] = digest.hexdigest()
    elif path.name == raw_clips.SKIP_REPORT:
      text = path.read_text().replace(REPO_ROOT, '<repo>')
      digests[path.name] = hashlib.sha256(text.encode()).hexdigest()
    elif path.name == 'features.json':
      digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
  return digests
