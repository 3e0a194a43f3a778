"""Builds `uwa3dii` from the fake raw tree in `dummy_data/`, in-process and with `tfds build`."""

from __future__ import annotations

import os
import pathlib
import subprocess
import tempfile
from unittest import mock

from absl.testing import absltest
import pytest
import tensorflow_datasets as tfds

from data_builders import builder_test_utils
from data_builders import raw_clips
from data_builders.uwa3dii import uwa3dii_dataset_builder
from data_builders.uwa3dii import uwa3dii_raw
from modistill_jax.data import records

REPO = pathlib.Path(__file__).resolve().parents[2]
DUMMY = pathlib.Path(__file__).resolve().parent / 'dummy_data'
LABELS = {
    'a01_s01_v01': 'one hand waving',
    'a05_s02_v02': 'sitting down',
    'a12_s03_v03': 'walking',
    'a30_s01_v04': 'coughing',
}
FRAMES = {
    'a01_s01_v01': (4, 5, 5),
    'a05_s02_v02': (3, 3, 3),
    'a12_s03_v03': (3, 3, 3),
    'a30_s01_v04': (3, 3, 3),
}
SKIPS = {
    'a02_s06_v02': 'empty file 002,.jpg',
    'a06_s06_v03': 'no RGB folder',
    'a21_s02_v04': 'no depth folder',
}


# The res112 build's `builder_test_utils.record_digests`, computed with the code before the
# modality descriptions (94ea2f3): an RGB-D build must write exactly what it wrote.
RGBD_DIGESTS = {
    'features.json': '1a36a7fa093722c3e0e7fda013dd7af0676160252ec62a254724b2f9d2e27821',
    'skipped.tsv': '17dfb0399969e0f874da6fd652166deb87b3915e08923e65b49a792b64ad5cfc',
    'uwa3dii-view1': 'a750d49256cd5aebbcb9482483a024a563eedd80ad66f962be7898ef6c050be0',
    'uwa3dii-view1_frames': '90f3384dba991751f3fa95bb6006d042d540bc6acec1f31cf754efc449cd4e61',
    'uwa3dii-view2': '055a1d56b2cef34739f6a64e34c33e44d3485efdfe1d6e5d860df8b40c8b5d22',
    'uwa3dii-view2_frames': 'e75b274df9559a5d18ad95798d6709cd3d2ecff3f69cef6a91a97dfb743845e3',
    'uwa3dii-view3': 'be0bffe8eaf255a70db4311424129ce0463a94b2fad66cf11a748f930364c560',
    'uwa3dii-view3_frames': 'c490e565f1938f8082ed7a756eed37d1e5325ef26f7c3a8d8fa204f11ef06b27',
    'uwa3dii-view4': '9aca17bd9a5873df2d9b04996534dc3102cf49efd5ab8a7e122b6bd36866927a',
    'uwa3dii-view4_frames': '6280a376fb123dfe2919e1397ce62fd9547bfe7729b8fa6a874980d52947152e',
}


class Uwa3diiTest(builder_test_utils.ReadsArrayRecord, tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = uwa3dii_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ['res112']
  SPLITS = {'view1': 1, 'view2': 1, 'view3': 1, 'view4': 1}
  SKIP_CHECKSUMS = True

  def setUp(self):
    super().setUp()
    self.enter_context(mock.patch.dict(os.environ, {raw_clips.WORKERS_ENV: '1'}))

  def test_examples_and_skip_report(self):
    builder = builder_test_utils.build(
        self.DATASET_CLASS,
        self.enter_context(tempfile.TemporaryDirectory()),
        os.fspath(DUMMY),
        'res112',
    )
    built = builder_test_utils.check_built(self, builder, LABELS, FRAMES, SKIPS)
    self.assertEqual(builder_test_utils.record_digests(builder), RGBD_DIGESTS)
    self.assertEqual(built['a12_s03_v03'][1]['view'], 3)
    self.assertEqual(built['a12_s03_v03'][1]['subject'], 3)


class FindSamplesTest(absltest.TestCase):

  def test_empty_root_fails_naming_the_expected_folders(self):
    with self.assertRaisesRegex(FileNotFoundError, 'UWA3D-RGB.*WholeFrames'):
      uwa3dii_raw.find_samples(tfds.core.Path(self.enter_context(tempfile.TemporaryDirectory())))


@pytest.mark.slow
class CommandLineTest(absltest.TestCase):

  def test_tfds_build_with_two_workers(self):
    with tempfile.TemporaryDirectory() as out:
      env = dict(os.environ, **{raw_clips.WORKERS_ENV: '2'})
      result = subprocess.run(
          builder_test_utils.tfds_build_command()
          + [
              'data_builders/uwa3dii',
              f'--manual_dir={DUMMY}',
              f'--data_dir={out}',
              '--config=res112',
          ],
          cwd=REPO,
          env=env,
          capture_output=True,
          text=True,
          check=False,
          timeout=300,
      )
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
      self.assertIn('2 workers', result.stdout)  # `tfds` logs through tqdm, to stdout
      builder = tfds.builder_from_directory(os.path.join(out, 'uwa3dii', 'res112', '2.0.0'))
      self.assertEqual(
          {
              s: builder.info.splits[s].num_examples
              for s in builder.info.splits
              if not records.is_frames_split(s)
          },
          {'view1': 1, 'view2': 1, 'view3': 1, 'view4': 1},
      )
      self.assertEqual(builder.info.file_format.value, 'array_record')
      report = raw_clips.read_skip_report(builder.data_path / raw_clips.SKIP_REPORT)
      self.assertEqual(sorted(s.sample_id for s in report), sorted(SKIPS))


if __name__ == '__main__':
  absltest.main()
