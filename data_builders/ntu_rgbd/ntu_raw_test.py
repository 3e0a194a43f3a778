"""NTU split counts from the full id list, and alignment recovering a known map."""

from __future__ import annotations

import collections
import gzip
import importlib.util
import pathlib

from absl.testing import absltest
import numpy as np
from PIL import Image

from data_builders.ntu_rgbd import ntu_raw

HERE = pathlib.Path(__file__).resolve().parent


def _load_dummy_data_module():
  spec = importlib.util.spec_from_file_location(
      'make_dummy_data', HERE / 'dummy_data' / 'make_dummy_data.py'
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class SplitCountsTest(absltest.TestCase):

  def test_counts_from_the_full_id_list(self):
    with gzip.open(HERE / 'ntu60_ids.txt.gz', 'rt') as f:
      ids = f.read().split()
    self.assertLen(ids, 56_880)
    counts = collections.Counter(ntu_raw.atomic_splits(ids).values())

    def total(pattern):
      return sum(n for split, n in counts.items() if pattern in split)

    self.assertEqual((total('cstrain'), total('csval'), total('cstest')), (38_160, 2_160, 16_560))
    self.assertEqual((total('cvtrain'), total('cvval'), total('cvtest')), (36_060, 1_860, 18_960))
    self.assertEqual(total('cstrain') + total('csval'), 40_320)
    self.assertEqual(total('cvtrain') + total('cvval'), 37_920)

  def test_validation_draw_is_the_references(self):
    # Per class: sorted camera-2/3 ids, seed 0, 31 without replacement.
    ids = [f'S001C{c:03d}P{p:03d}R001A005' for c in (1, 2, 3) for p in range(1, 41)]
    splits = ntu_raw.atomic_splits(ids)
    pool = sorted(i for i in ids if i[5:8] != '001')
    np.random.seed(0)
    expected = {pool[k] for k in np.random.choice(len(pool), 31, replace=False)}
    self.assertEqual({i for i, s in splits.items() if s.endswith('cvval')}, expected)


class AlignmentTest(absltest.TestCase):

  def test_fit_and_warp_recover_a_known_map_at_real_sizes(self):
    dummy = _load_dummy_data_module()
    truth = np.array([[0.3470, 0.0060, -78.0], [-0.0040, 0.3440, 16.0]])
    rng = np.random.default_rng(1)
    depth_xy = rng.uniform([200, 90], [310, 340], (400, 2))
    color_xy = np.linalg.solve(truth[:, :2], (depth_xy - truth[:, 2]).T).T
    color_xy += rng.normal(0, 0.3, color_xy.shape)
    color_xy[:40] = rng.uniform([0, 0], [1919, 1079], (40, 2))  # 10 % outlier joints.
    fit = ntu_raw.fit_affine(color_xy, depth_xy)

    corners = np.array([[0, 0, 1], [1919, 0, 1], [0, 1079, 1], [1919, 1079, 1]], float)
    error = np.linalg.norm(corners @ fit.matrix.T - corners @ truth.T, axis=1)
    self.assertLess(error.max(), 1.0)
    self.assertGreaterEqual(fit.inliers, 360)

    # A real-size 1920x1080 RGB frame of the scene, warped into the 512x424 depth frame.
    rgb = Image.fromarray(dummy.rgb_frame(truth, (1920, 1080), shift=0.0))
    affine = tuple(tuple(row) for row in fit.matrix.tolist())
    warped = np.asarray(ntu_raw.warp_to_depth(rgb, affine, (512, 424)))
    self.assertEqual(warped.shape, (424, 512, 3))
    person = warped[..., 0] > 150
    silhouette = dummy.depth_frame(0.0) > 0
    self.assertGreater((person & silhouette).sum() / (person | silhouette).sum(), 0.97)

  def test_fallback_when_a_group_has_no_skeleton(self):
    self.assertEqual(ntu_raw.group_mapping((5, 2), []), ntu_raw.ISSUE_39_AFFINES[2])


if __name__ == '__main__':
  absltest.main()
