"""Builds `ntu_rgbd` from the fake raw tree in `dummy_data/` (see its generator for the quirks)."""

from __future__ import annotations

import os
import pathlib
import tempfile
from unittest import mock

from absl.testing import absltest
import av
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from data_builders import builder_test_utils
from data_builders import raw_clips
from data_builders.ntu_rgbd import ntu_rgbd_dataset_builder
from data_builders.ntu_rgbd import ntu_raw
from modistill_jax.data import records

DUMMY = pathlib.Path(__file__).resolve().parent / 'dummy_data'
SKELETONS = DUMMY / 'nturgbd_skeletons_s001_to_s017' / 'nturgb+d_skeletons'
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


# The res112 build's `builder_test_utils.record_digests`, computed with the code before the
# modality descriptions (94ea2f3): an RGB-D build must write exactly what it wrote.
RGBD_DIGESTS = {
    'features.json': '010ec71a0ff2edda45186efe2eff89c36c92b6cb51996b96c62eac938f761eef',
    'ntu_rgbd-cstest_cvtest': 'b9b1e7c050af1a371d4bdf8b5bcd443a1d8bab4d2188e63877dbad0278aa5b10',
    'ntu_rgbd-cstest_cvtest_frames': (
        'c08f737dcd21d82e0dfa68d2799fed1581ab7bc67bd27e4521fd893a67bf0659'
    ),
    'ntu_rgbd-cstest_cvval': '8a390d1fc84b782f0c94143a00aecc3643192faf54556216881be5d19200d62d',
    'ntu_rgbd-cstest_cvval_frames': (
        'cec061235d1e9b85c4b2fec403b11ebf3dc9a45ecae61eabb966cbde75462ec3'
    ),
    'ntu_rgbd-cstrain_cvval': '7661981c8b324a5088ce58f79684558d45f26a5de362ba932cfd4607470cccca',
    'ntu_rgbd-cstrain_cvval_frames': (
        '8e540c1bef39c0254925a6c0b36ba452a8e874c0a8aa37c1e6b2aa9fdb793e0e'
    ),
    'ntu_rgbd-csval_cvtest': 'ab80d6904df5ac18be2af127d5712acbbfff1c74577cee15e8d1e73e0457b4d5',
    'ntu_rgbd-csval_cvtest_frames': (
        '44f1e646063c308b86ecdf3637fd1dd6d5d3832847bfe7f0f672066a20b2c1e6'
    ),
    'skipped.tsv': 'a746723260c726ced30a03f11c00e2821073c41ba1b990b8a3123ee8d0729139',
}


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
    self.assertEqual(builder_test_utils.record_digests(builder), RGBD_DIGESTS)
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


IR_SKELETON_FRAMES = {'S001C002P003R002A013': 6, 'S001C001P001R001A001': 5}
# Samples without an infrared video or a skeleton file are rejected on sight, before the
# conversion finds their other faults.
IR_SKELETON_SKIPS = {
    'S001C003P002R001A050': 'no infrared video',
    'S002C001P010R001A002': 'no depth folder',
    'S002C001P011R001A003': 'no infrared video',
    'S002C001P012R002A004': 'no infrared video',
    'S002C002P013R001A005': 'no RGB video',
    'S001C002P005R002A008': 'no skeleton file',
    'S002C003P008R001A020': 'no infrared video',
    'S002C001P020R001A059': 'no skeleton file',
}


class NtuIrSkeletonTest(absltest.TestCase):
  """The `res112_ir_skeleton` config: infrared frames and joints, registered to the depth frame."""

  def setUp(self):
    super().setUp()
    self.enter_context(mock.patch.dict(os.environ, {raw_clips.WORKERS_ENV: '1'}))

  def test_infrared_and_joints_land_on_the_silhouette(self):
    builder = builder_test_utils.build(
        ntu_rgbd_dataset_builder.Builder,
        self.enter_context(tempfile.TemporaryDirectory()),
        os.fspath(DUMMY),
        'res112_ir_skeleton',
    )
    built = builder_test_utils.read_built(builder)
    self.assertEqual(sorted(built), sorted(IR_SKELETON_FRAMES))
    report = raw_clips.read_skip_report(builder.data_path / raw_clips.SKIP_REPORT)
    self.assertEqual(sorted(s.sample_id for s in report), sorted(IR_SKELETON_SKIPS))
    for skip in report:
      self.assertIn(IR_SKELETON_SKIPS[skip.sample_id], skip.reason, skip.sample_id)
    for sample_id, (_, example) in built.items():
      kept = IR_SKELETON_FRAMES[sample_id]
      self.assertEqual(example['num_frames'], kept, sample_id)
      for m in ('rgb', 'depth', 'ir', 'skeleton'):
        self.assertLen(example[m], kept, f'{sample_id} {m}')
      for t in range(kept):
        silhouette = records.decode_depth(example['depth'][t]) > 0
        ir = records.decode_frame('ir', example['ir'][t])
        self.assertEqual(ir.shape, (112, 112), sample_id)
        self.assertGreater(iou(ir > 120, silhouette), 0.8, sample_id)
        joints = records.decode_frame('skeleton', example['skeleton'][t])
        self.assertEqual(joints.shape, (2, 25, 2), sample_id)
        # Registered: the file's depth pixel (x, y) is at ((x + 0.5) / 512, (y + 0.5) / 424).
        bodies = ntu_raw.read_skeleton_frames((SKELETONS / f'{sample_id}.skeleton').read_text())
        if bodies[t]:
          depth_xy = bodies[t][0][1][:, :2]
          ok = np.isfinite(depth_xy).all(axis=1) & (depth_xy != 0).any(axis=1)
          np.testing.assert_allclose(joints[0][ok], (depth_xy[ok] + 0.5) / (512, 424), rtol=1e-6)
        # The second slot holds the false body of frame 4 (0-based) only, in every dummy file.
        self.assertEqual(np.isfinite(joints[1]).any(), t == 4, sample_id)
    # Frame 2 (1-based 3) of A013 has no body; the kept frames are depth frames 1-6.
    joints = records.decode_frame('skeleton', built['S001C002P003R002A013'][1]['skeleton'][2])
    self.assertTrue(np.isnan(joints).all())
    # Frame 2 has a NaN and a zero joint: untracked, NaN.
    joints = records.decode_frame('skeleton', built['S001C002P003R002A013'][1]['skeleton'][1])
    self.assertTrue(np.isnan(joints[0, 3:5]).all() and np.isfinite(joints[0, 5:]).all())


class RawTest(absltest.TestCase):

  def test_empty_root_fails_naming_the_expected_folders(self):
    with self.assertRaisesRegex(FileNotFoundError, r'nturgb\+d_rgb/.*nturgb\+d_depth_masked/'):
      ntu_raw.find_samples(tfds.core.Path(self.enter_context(tempfile.TemporaryDirectory())))

  def test_infrared_of_another_size_than_depth_is_refused(self):
    path = pathlib.Path(self.enter_context(tempfile.TemporaryDirectory())) / 'x_ir.avi'
    with av.open(str(path), 'w', format='avi') as container:
      stream = container.add_stream('mpeg4', rate=30)
      stream.height, stream.width, stream.pix_fmt = 212, 256, 'yuv420p'
      frame = av.VideoFrame.from_ndarray(np.zeros((212, 256, 3), np.uint8), format='rgb24')
      container.mux(stream.encode(frame))
      container.mux(stream.encode())
    depth = {1: Image.new('I;16', ntu_raw.DEPTH_SIZE)}
    with self.assertRaisesRegex(raw_clips.SampleError, r'x_ir.avi are 256x212, .* 512x424'):
      ntu_raw.read_ir(tfds.core.Path(path), depth, 112, 112)

  def test_the_two_most_tracked_bodies_keep_their_slots(self):
    def body(x: float) -> np.ndarray:  # 25 joints at depth pixel (x, 200)
      return np.tile([x, 200.0, 0.0, 0.0], (25, 1))

    frames = [
        [('chair', body(10.0))],  # a false detection, tracked in 1 frame: dropped
        [('b', body(100.0)), ('a', body(300.0))],
        [('b', body(101.0)), ('a', body(301.0))],
        [('a', body(302.0)), ('b', body(np.nan))],  # 'a' tracked in 3 frames, 'b' in 2
        [],
    ]
    joints = ntu_raw.skeleton_joints(frames)
    self.assertEqual(joints.shape, (5, 2, 25, 2))
    self.assertTrue(np.isnan(joints[0]).all() and np.isnan(joints[4]).all())
    np.testing.assert_allclose(joints[1, 0, 7], [300.5 / 512, 200.5 / 424], rtol=1e-6)
    np.testing.assert_allclose(joints[1, 1, 7], [100.5 / 512, 200.5 / 424], rtol=1e-6)
    self.assertTrue(np.isnan(joints[3, 1]).all() and np.isfinite(joints[3, 0]).all())
    with self.assertRaisesRegex(raw_clips.SampleError, 'no tracked joint'):
      ntu_raw.skeleton_joints([[('a', body(np.nan))], []])

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
