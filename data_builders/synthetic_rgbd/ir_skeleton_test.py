"""The renderer's infrared and joints, and the `*_ir_skeleton` configs that store them."""

from __future__ import annotations

import numpy as np
import pytest

from data_builders import builder_test_utils
from data_builders import raw_clips
from data_builders.synthetic_rgbd import Builder
from data_builders.synthetic_rgbd import renderer
from data_builders.synthetic_rgbd import synthetic_records
from modistill_jax.data import records

CONFIGS = {config.name: config for config in Builder.BUILDER_CONFIGS}
DEFAULT, NTU_LIKE, TINY = (CONFIGS[name].spec for name in ('default', 'ntu_like', 'tiny'))
# Clips of both scenarios at 64x64, `(spec, label, index)`; index % 3 == 0 is view 1.
CLIPS = ((DEFAULT, 0, 0), (DEFAULT, 6, 4), (NTU_LIKE, 1, 3), (NTU_LIKE, 5, 7), (NTU_LIKE, 7, 32))
# Depth (mm) nearer than the empty room's by more than this is the actor's (depth noise is
# 1.5 mm at 1 m, 30 mm at 4.5 m).
ACTOR_MARGIN_MM = 150


def actor_pixels(spec: renderer.GeneratorSpec, label: int, index: int, depth_mm: np.ndarray):
  """`(T, H, W)` where the actor is: valid depth well in front of the empty room's.

  The room's depth comes from the camera the clip draws first, so it is the clip's own.
  """
  rng = np.random.default_rng([spec.seed, 1, label, index])
  view = renderer.clip_info(spec, label, index).view
  origin, rotation = renderer._camera(spec, view, rng)  # pylint: disable=protected-access
  rays, forwardness = renderer._rays(spec.resolution, rotation)  # pylint: disable=protected-access
  room, _ = renderer._room_distance(origin, rays)  # pylint: disable=protected-access
  room_mm = (1000 * room * forwardness).reshape(spec.resolution, spec.resolution)
  return (depth_mm > 0) & (depth_mm < room_mm - ACTOR_MARGIN_MM)


@pytest.mark.parametrize('spec, label, index', CLIPS)
def test_ir_and_joints_leave_rgb_and_depth_as_they_were(spec, label, index):
  plain = renderer.render_clip(spec, label, index)
  extra = renderer.render_clip(spec, label, index, ir_and_joints=True)
  assert sorted(extra) == sorted([*plain, 'ir', 'joints'])
  for key in plain:
    np.testing.assert_array_equal(extra[key], plain[key])


def test_infrared_is_grey_and_falls_off_with_distance_as_the_emitter_is_the_camera():
  """As the actor walks towards the camera its infrared grows with the inverse square of its
  distance (the emitter is at the camera; within 15%), while its RGB, lit by the room, stays
  about as bright. One channel: infrared has no colour."""
  for spec in (DEFAULT, NTU_LIKE):
    walk_towards = 0  # 'approach' in `default`, 'walk towards' in `ntu_like`
    for index in (0, 3, 6, 9):
      clip = renderer.render_clip(spec, walk_towards, index, ir_and_joints=True)
      assert clip['ir'].shape == clip['depth_mm'].shape and clip['ir'].dtype == np.uint8
      actor = actor_pixels(spec, walk_towards, index, clip['depth_mm'])
      first, last = actor[0], actor[-1]
      far = np.median(clip['depth_mm'][0][first])
      near = np.median(clip['depth_mm'][-1][last])
      assert far > 1.4 * near, (index, far, near)
      ir_gain = clip['ir'][-1][last].mean() / clip['ir'][0][first].mean()
      rgb_gain = clip['rgb'][-1][last].mean() / clip['rgb'][0][first].mean()
      expected = (far / near) ** 2
      assert 0.85 * expected < ir_gain < 1.15 * expected, (index, ir_gain, expected)
      # RGB changes with the shading and stripes the actor turns to the room's light
      # (measured 0.71 to 1.11 on these clips), far from infrared's 2.6 to 3.4.
      assert 0.6 < rgb_gain < 1.4, (index, rgb_gain)


def test_infrared_formula():
  """A white surface facing the camera at the full-scale distance reads 255; at twice that
  a quarter; at a grazing angle or with no reflectance, 0 (noise aside)."""
  rng = np.random.default_rng(0)
  reflectance = np.array([[1.0, 1.0, 1.0, 0.0]])
  cosine = np.array([[1.0, 1.0, 0.0, 1.0]])
  full = renderer._IR_FULL_SCALE_M  # pylint: disable=protected-access
  distance = np.array([[full, 2 * full, full, full]])
  ir = renderer._infrared(reflectance, cosine, distance, rng)  # pylint: disable=protected-access
  np.testing.assert_allclose(ir[0], [255, 255 / 4, 0, 0], atol=8)


@pytest.mark.parametrize('spec, label, index', CLIPS)
def test_joints_project_onto_the_actor(spec, label, index):
  """Each joint inside the frame is within a pixel of the actor's pixels; all 25 are found
  on most frames; the head is above the feet."""
  clip = renderer.render_clip(spec, label, index, ir_and_joints=True)
  joints, size = clip['joints'], spec.resolution
  assert joints.shape == (spec.num_frames, 1, 25, 2) and joints.dtype == np.float32
  actor = actor_pixels(spec, label, index, clip['depth_mm'])
  inside = np.isfinite(joints[:, 0]).all(-1)
  assert inside.mean() > 0.9, inside.sum(-1)
  for t in range(spec.num_frames):
    for column, row in joints[t, 0, inside[t]] * size - 0.5:  # pixel centres at integers
      r, c = round(row), round(column)
      assert actor[t, max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].any(), (t, row, column)
  head, feet = renderer.KINECT_V2_SPHERES.index(9), renderer.KINECT_V2_SPHERES.index(0)
  assert (joints[:, 0, head, 1] < joints[:, 0, feet, 1]).all()


def test_tiny_ir_skeleton_builds_and_stores_what_the_renderer_gives(tmp_path, monkeypatch):
  """The records hold all four modalities; RGB and depth are byte for byte the `tiny` build's
  records, infrared and joints the renderer's (joints padded with NaN to two bodies)."""
  monkeypatch.setenv(raw_clips.WORKERS_ENV, '1')
  builder = Builder(config='tiny_ir_skeleton', data_dir=tmp_path)
  builder.download_and_prepare()
  sizes = {'train': 96, 'validation': 32, 'test': 64}
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
      **sizes,
      **{records.frames_split(s): 4 * 8 * n for s, n in sizes.items()},
  }
  built = builder_test_utils.read_built(builder)
  assert len(built) == sum(sizes.values())
  for sample_id in ('S01V01A00R001', 'S02V03A05R001', 'S04V02A07R002'):
    _, example = built[sample_id]
    clip = next(c for c in renderer.all_clips(TINY) if c.sample_id == sample_id)
    _, rgbd = synthetic_records.example(TINY, clip)
    for key in ('rgb', 'depth'):
      assert list(example[key]) == rgbd[key], (sample_id, key)
    rendered = renderer.render_clip(TINY, clip.label, clip.index, ir_and_joints=True)
    ir = np.stack([records.decode_frame('ir', frame) for frame in example['ir']])
    np.testing.assert_array_equal(ir, rendered['ir'])
    joints = np.stack([records.decode_frame('skeleton', frame) for frame in example['skeleton']])
    assert joints.shape == (8, 2, 25, 2)
    np.testing.assert_array_equal(joints[:, :1], rendered['joints'])
    assert np.isnan(joints[:, 1]).all()


def test_unknown_modality_is_refused_by_name():
  clip = renderer.all_clips(TINY)[0]
  with pytest.raises(ValueError, match=r"renders no \['thermal'\]"):
    synthetic_records.example(TINY, clip, ('rgb', 'thermal'))
