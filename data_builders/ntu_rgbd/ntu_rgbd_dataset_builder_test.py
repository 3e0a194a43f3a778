"""Builds `ntu_rgbd` from the fake raw tree in `dummy_data/` (see its generator for the quirks)."""

from __future__ import annotations

import os
import pathlib
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np
import tensorflow_datasets as tfds

from data_builders import builder_test_utils
from data_builders import raw_clips
from data_builders.ntu_rgbd import ntu_rgbd_dataset_builder
from data_builders.ntu_rgbd import ntu_raw
from modistill_jax.data import records

DUMMY = pathlib.Path(__file__).resolve().parent / 'dummy_data'
LABELS = {
    'S001C002P003R002A013': 'tear up paper',
    'S001C002P005R002A008': 'sitting down',
    'S001C001P001R001A001': 'drink water',
    'S002C003P008R001A020': 'put on a hat/cap',
    'S002C001P020R001A059': 'walking towards each other',
}
FRAMES = {
    'S001C002P003R002A013': (6, 8, 6),
    'S001C002P005R002A008': (6, 6, 6),
    'S001C001P001R001A001': (6, 6, 7),
    'S002C003P008R001A020': (6, 6, 6),
    'S002C001P020R001A059': (6, 6, 6),
}
SKIPS = {
    'S001C003P002R001A050': 'empty file MDepth-00000003.png',
    'S002C001P010R001A002': 'no depth folder',
    'S002C001P011R001A003': 'undecodable S002C001P011R001A003_rgb.avi',
    'S002C001P012R002A004': 'no MDepth-*.png',
    'S002C002P013R001A005': 'no RGB video',
}


def iou(a: np.ndarray, b: np.ndarray) -> float:
  return float((a & b).sum() / (a | b).sum())


class NtuRgbdTest(builder_test_utils.ReadsArrayRecord, tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = ntu_rgbd_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ['res112']
  SPLITS = {'cstest_cvval': 1, 'cstrain_cvval': 2, 'csval_cvtest': 1, 'cstest_cvtest': 1}
  SKIP_CHECKSUMS = True

  def setUp(self):
    super().setUp()
    self.enter_context(mock.patch.dict(os.environ, {raw_clips.WORKERS_ENV: '1'}))

  def test_examples_skip_report_and_alignment(self):
    builder = builder_test_utils.build(
        self.DATASET_CLASS,
        self.enter_context(tempfile.TemporaryDirectory()),
        os.fspath(DUMMY),
        'res112',
    )
    built = builder_test_utils.check_built(self, builder, LABELS, FRAMES, SKIPS)
    split, example = built['S001C002P003R002A013']
    self.assertEqual(split, 'cstest_cvval')
    self.assertEqual(
        [example[k] for k in ('setup', 'view', 'subject', 'replication')], [1, 2, 3, 2]
    )
    # Fitted groups (S001) and fallback groups (S002) alike: the orange RGB
    # person lands on the depth silhouette.
    for sample_id, (_, example) in built.items():
      for rgb, depth in zip(example['rgb'], example['depth']):
        person = records.decode_image(rgb)[..., 0] > 150
        silhouette = records.decode_depth(depth) > 0
        self.assertGreater(iou(person, silhouette), 0.7, sample_id)


class RawTest(absltest.TestCase):

  def test_empty_root_fails_naming_the_expected_folders(self):
    with self.assertRaisesRegex(FileNotFoundError, r'nturgb\+d_rgb/.*nturgb\+d_depth_masked/'):
      ntu_raw.find_samples(tfds.core.Path(self.enter_context(tempfile.TemporaryDirectory())))

  def test_skeleton_quirks(self):
    text = (
        DUMMY / 'nturgbd_skeletons_s001_to_s017/nturgb+d_skeletons/' 'S001C002P003R002A013.skeleton'
    ).read_text()
    pairs = ntu_raw.read_skeleton_pairs(text)
    # 8 frames, one with 0 bodies, one with a second (false) body: 8 bodies of 25 joints.
    self.assertEqual(pairs.shape, (8 * 25, 4))
    self.assertEqual(len(ntu_raw.valid_pairs(pairs)), 8 * 25 - 2)  # The NaN and the zero joint.
    with self.assertRaises(ntu_raw.SkeletonError):
      ntu_raw.read_skeleton_pairs(text[: len(text) // 2])


if __name__ == '__main__':
  absltest.main()
