"""Builds `nw_ucla` from the fake raw tree in `dummy_data/` (see its generator for the quirks)."""

from __future__ import annotations

import os
import pathlib
import tempfile
from unittest import mock

from absl.testing import absltest
import tensorflow_datasets as tfds

from data_builders import builder_test_utils
from data_builders import raw_clips
from data_builders.nw_ucla import nw_ucla_dataset_builder
from data_builders.nw_ucla import nw_ucla_raw

DUMMY = pathlib.Path(__file__).resolve().parent / 'dummy_data'
LABELS = {
    'a08_s01_e00_v01': 'donning',
    'a09_s02_e01_v01': 'doffing',
    'a11_s03_e00_v02': 'throw',
    'a12_s01_e02_v03': 'carry',
}
FRAMES = {
    'a08_s01_e00_v01': (3, 3, 3),
    'a09_s02_e01_v01': (4, 5, 5),
    'a11_s03_e00_v02': (3, 3, 3),
    'a12_s01_e02_v03': (3, 3, 3),
}
SKIPS = {
    'a05_s04_e01_v02': 'undecodable frame_2_tc_',
    'a07_s01_e00_v02': 'unknown action id a07',
    'a01_s01_e00_v03': 'holds no frame',
}


# The res112 build's `builder_test_utils.record_digests`, computed with the code before the
# modality descriptions (94ea2f3): an RGB-D build must write exactly what it wrote.
RGBD_DIGESTS = {
    'features.json': '65173527c395d0d56f9e5b9087a40e13c99d3c8cb169ba763926e0f222c5e600',
    'nw_ucla-view1': '8bc3305429c95717f905da7c15434ba7deff899a06362491cfd5b8a3b637bff1',
    'nw_ucla-view1_frames': 'e18dfe1dd9d7f5372b89b46c488e9b0a5384383a2d668e0661bccb03bf083cac',
    'nw_ucla-view2': '741b6a2fb48d7a5701e172f45ace7e1c67296ba8741f79c1df7fb8a5e128deeb',
    'nw_ucla-view2_frames': 'dbcab5b78bb7efab51f602a20a33b47ab6d8e01aecdde4344fc1719ac50b0a70',
    'nw_ucla-view3': 'd1594e112da50dbd1a2ad0a924317f92a165cd2c507febbf9f4eaaddf996b6e3',
    'nw_ucla-view3_frames': 'd6ba266721735ecef007566f0bbad6f02a23e73a3886b981d004c9e19310494b',
    'skipped.tsv': '5842245b1f2d529789fdf8e0f85651cf5bf8d5ce5d97ac3855e8cfa5e0868170',
}


class NwUclaTest(builder_test_utils.ReadsArrayRecord, tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = nw_ucla_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ['res112']
  SPLITS = {'view1': 2, 'view2': 1, 'view3': 1}
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
    example = built['a08_s01_e00_v01'][1]
    self.assertEqual((example['view'], example['subject'], example['replication']), (1, 1, 0))


class RawTest(absltest.TestCase):

  def test_frames_join_on_number_in_numeric_order(self):
    files = nw_ucla_raw.frame_files(DUMMY / 'multiview_action/view_1/a08_s01_e00')
    self.assertEqual(list(files['rgb.jpg']), [99, 100, 101])
    self.assertEqual(sorted(files['depth.png']), [99, 100, 101])
    # The timecodes differ between the modalities of a frame.
    self.assertNotEqual(
        files['rgb.jpg'][100].name.split('_')[3], files['depth.png'][100].name.split('_')[3]
    )

  def test_empty_root_fails_naming_the_expected_folders(self):
    with self.assertRaisesRegex(FileNotFoundError, 'view_1/, view_2/, view_3/'):
      nw_ucla_raw.find_samples(tfds.core.Path(self.enter_context(tempfile.TemporaryDirectory())))


if __name__ == '__main__':
  absltest.main()
