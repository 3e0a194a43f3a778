"""Modality descriptions: records round trips, the pipeline's batches, heat-maps on the device."""

from __future__ import annotations

import concurrent.futures
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modistill_jax import modalities
from modistill_jax.data import pipeline
from modistill_jax.data import preprocess
from modistill_jax.data import records
from modistill_jax.data import skeletons

T, H, W = 4, 24, 32


def ntu_joints(t: int) -> np.ndarray:
  """`(t, 1, 25, 2)` fractions: body 0's joints on a line, joint 3 untracked in frame 1 (or 0)."""
  u = np.linspace(0.1, 0.9, 25, dtype=np.float32)
  joints = np.stack([u, np.full(25, 0.5, np.float32)], axis=-1)[None, None].repeat(t, axis=0)
  joints[min(1, t - 1), 0, 3] = np.nan
  return joints


def clip_of_all(sample_id: str = 'all', label: int = 1) -> dict:
  rng = np.random.default_rng(0)
  return records.make_clip(
      frames={
          'rgb': rng.integers(0, 256, (T, H, W, 3), np.uint8),
          'depth': rng.integers(0, 253, (T, H, W), np.uint8),
          'ir': rng.integers(0, 256, (T, H, W), np.uint8),
          'skeleton': ntu_joints(T),
      },
      frames_raw={'rgb': T, 'depth': T + 1, 'ir': T, 'skeleton': T + 2},
      label=label,
      sample_id=sample_id,
  )


def test_every_modality_is_described_in_record_order():
  assert modalities.NAMES == ('rgb', 'depth', 'ir', 'skeleton')
  assert records.MODALITIES == ('rgb', 'depth')
  assert modalities.ordered(['skeleton', 'rgb']) == ('rgb', 'skeleton')
  with pytest.raises(ValueError, match="Unknown modality 'thermal'"):
    modalities.get('thermal')
  with pytest.raises(ValueError, match='distinct'):
    modalities.ordered(['ir', 'ir'])


def test_rgbd_features_are_those_it_always_had():
  features = records.clip_features(['a', 'b'])
  assert list(features.keys()) == [
      'rgb',
      'depth',
      'rgb_records',
      'depth_records',
      'frame',
      'label',
      'sample_id',
      'subject',
      'view',
      'setup',
      'replication',
      'num_frames',
      'rgb_frames_raw',
      'depth_frames_raw',
  ]
  assert records.CLIP_FIELDS == records.clip_fields(('rgb', 'depth'))
  extended = records.clip_features(['a'], ('skeleton', 'rgb', 'depth', 'ir'))
  assert {'ir', 'skeleton', 'ir_records', 'skeleton_frames_raw'} <= set(extended.keys())


def test_each_modality_round_trips_through_its_records():
  clip = clip_of_all()
  rows = records.split_rows([clip], 'train', shuffled=False)
  frames = [row for _, row in rows[records.frames_split('train')]]
  _, table_row = rows['train'][0]
  assert len(frames) == 4 * T
  assert records.stored_modalities(table_row) == modalities.NAMES
  assert table_row['skeleton_frames_raw'] == T + 2 and table_row['depth_frames_raw'] == T + 1
  for m in modalities.NAMES:
    for t, position in enumerate(table_row[f'{m}_records']):
      row = frames[position]
      assert row['frame'] == t and row[m] == [clip[m][t]]
      assert all(row[o] == [] for o in modalities.NAMES if o != m)
  np.testing.assert_array_equal(records.decode_frame('ir', clip['ir'][2]).shape, (H, W))
  joints = records.decode_frame('skeleton', clip['skeleton'][1])
  assert joints.shape == (2, 25, 2) and np.isnan(joints[1]).all() and np.isnan(joints[0, 3]).all()
  np.testing.assert_array_equal(joints[0, 4], ntu_joints(T)[1, 0, 4])


def test_serialized_rows_parse_with_every_stored_modality():
  clip = clip_of_all()
  features = records.clip_features(['a', 'b'], modalities.NAMES)
  rows = records.split_rows([clip], 'train', shuffled=False)
  _, table_row = rows['train'][0]
  parsed = records.parse_row(features.serialize_example(table_row))
  assert records.stored_modalities(parsed) == modalities.NAMES
  np.testing.assert_array_equal(parsed['skeleton_records'], table_row['skeleton_records'])
  assert parsed['ir_frames_raw'] == T


@pytest.mark.parametrize(
    'clip, message',
    [
        (np.zeros((T, H, W), np.float32), 'infrared must be uint8'),
        (np.zeros((T, H, W, 3), np.uint8), r'infrared must be \(T, H, W\)'),
    ],
)
def test_bad_infrared_clips_are_refused(clip, message):
  with pytest.raises(ValueError, match=message):
    records.make_clip(
        frames={'rgb': np.zeros((T, H, W, 3), np.uint8), 'ir': clip},
        frames_raw={'rgb': T, 'ir': T},
        label=0,
        sample_id='bad',
    )


@pytest.mark.parametrize(
    'joints, message',
    [
        (np.zeros((T, 1, 17, 2), np.float32), '17 joints per body is not a known skeleton layout'),
        (np.full((T, 1, 25, 2), 1.5, np.float32), 'fractions of the frame'),
        (np.zeros((T, 3, 25, 2), np.float32), r'bodies <= 2'),
    ],
)
def test_bad_joints_are_refused(joints, message):
  with pytest.raises(ValueError, match=message):
    skeletons.check_joints(joints, 'bad.csv')


def test_skeleton_frames_decode_in_many_threads_at_once():
  """The input pipeline decodes frames in threads; on CPython 3.11 two `.npy` header parses at
  once could raise "AST constructor recursion depth mismatch" (a full-size run stopped on it).

  Thread switches every microsecond make the parses overlap: without the lock in
  `skeletons.decode`, 3.11.7 raised the error within a second here.
  """
  joints = np.random.default_rng(0).random((skeletons.MAX_BODIES, 25, 2), np.float32)
  data = skeletons.encode(joints)

  def decode_many(_):
    return all(np.array_equal(skeletons.decode(data), joints) for _ in range(2000))

  interval = sys.getswitchinterval()
  sys.setswitchinterval(1e-6)
  try:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      assert all(pool.map(decode_many, range(8)))
  finally:
    sys.setswitchinterval(interval)


def test_modalities_of_different_lengths_are_refused():
  with pytest.raises(ValueError, match='different lengths'):
    records.make_clip(
        frames={'rgb': np.zeros((T, H, W, 3), np.uint8), 'skeleton': ntu_joints(T - 1)},
        frames_raw={'rgb': T, 'skeleton': T},
        label=0,
        sample_id='short',
    )


def test_pipeline_yields_infrared_and_segments_in_output_pixels():
  clips = [clip_of_all(f's{i}', i % 2) for i in range(4)]
  size = (12, 16)  # half the stored size: infrared resized, joints scaled
  batches = pipeline.eval_iterator(
      clips,
      global_batch_size=4,
      num_frames=T,
      image_size=size,
      process_index=0,
      process_count=1,
      modalities=('ir', 'skeleton'),
  )
  batch = next(iter(batches))
  assert set(batch) == {'ir', 'skeleton', 'label', 'mask', 'index'}
  assert batch['ir'].shape == (4, T, *size, 1) and batch['ir'].dtype == np.uint8
  assert batch['skeleton'].shape == (4, T, 2, skeletons.SEGMENTS, 2, 2)
  assert batch['skeleton'].dtype == np.float32
  segments = batch['skeleton'][0, 0, 0]
  u = np.linspace(0.1, 0.9, 25)
  np.testing.assert_allclose(segments[:25, 0, 0], u * 16 - 0.5, rtol=1e-5)
  np.testing.assert_allclose(segments[:25, 0, 1], 0.5 * 12 - 0.5)
  # Limb 0 joins spine_base (0) and spine_mid (1).
  np.testing.assert_allclose(segments[25, :, 0], [u[0] * 16 - 0.5, u[1] * 16 - 0.5], rtol=1e-5)
  assert np.isnan(batch['skeleton'][0, 1, 0, 3]).all()  # untracked joint of frame 1
  assert np.isnan(batch['skeleton'][0, :, 1]).all()  # no second body


def test_flipped_joints_mirror_like_the_frames():
  joints = skeletons.check_joints(ntu_joints(1), 'x')[0]
  plain = skeletons.segments(joints, (H, W), flip=False)
  flipped = skeletons.segments(joints, (H, W), flip=True)
  np.testing.assert_allclose(flipped[0, :25, 0, 0], W - 1 - plain[0, :25, 0, 0], rtol=1e-5)
  np.testing.assert_array_equal(flipped[0, :25, 0, 1], plain[0, :25, 0, 1])


def test_heat_maps_peak_at_joints_and_along_limbs():
  joints = np.full((2, 25, 2), np.nan, np.float32)
  joints[0, 0] = (10.5 / 64, 20.5 / 48)  # spine_base at pixel (x=10, y=20)
  joints[0, 1] = (40.5 / 64, 20.5 / 48)  # spine_mid at (40, 20): limb 0 runs along row 20
  segments = skeletons.segments(joints, (48, 64), flip=False)
  image = np.asarray(skeletons.heat_maps(jnp.asarray(segments[None]), (48, 64)))[0]
  assert image.shape == (48, 64, 3)
  np.testing.assert_allclose(image[20, 10, 0], 255.0, rtol=1e-5)  # a joint
  np.testing.assert_allclose(image[20, 40, 0], 255.0, rtol=1e-5)
  assert image[20, 25, 0] < 1.0  # between the joints, 15 px (> 3 sigma) from either
  np.testing.assert_allclose(image[20, 25, 1], 255.0, rtol=1e-5)  # on the limb
  sigma = 48 / 56
  np.testing.assert_allclose(image[22, 25, 1], 255.0 * np.exp(-4 / (2 * sigma**2)), rtol=1e-4)
  np.testing.assert_allclose(image[..., 2], np.maximum(image[..., 0], image[..., 1]))
  assert image[40, 60].max() < 1e-3  # far from everything; the NaN joints add nothing


def test_network_inputs_are_three_channel_images():
  rng = np.random.default_rng(1)
  size = (H, W)
  batch = {
      'rgb': rng.integers(0, 256, (2, T, H, W, 3), np.uint8),
      'depth': rng.integers(0, 253, (2, T, H, W, 1), np.uint8),
      'ir': rng.integers(0, 256, (2, T, H, W, 1), np.uint8),
      'skeleton': np.stack(
          [
              np.stack(
                  [
                      skeletons.segments(skeletons.check_joints(ntu_joints(1), 'x')[0], size, False)
                      for _ in range(T)
                  ]
              )
          ]
          * 2
      ),
  }
  for name in modalities.NAMES:
    description = modalities.get(name)
    assert batch[name].shape[2:] == description.batch_shape(size)
    for encoding in description.encodings:
      image = description.network_input(jnp.asarray(batch[name]), size, encoding)
      assert image.shape == (2, T, H, W, description.channels), (name, encoding)
      assert float(image.min()) >= 0 and float(image.max()) <= 255
      noisy = description.noise(jax.random.key(0), image, 0.1)
      assert noisy.shape == image.shape and not np.array_equal(noisy, image)
      assert not np.asarray(description.void(image)).any()
  ir = modalities.IR.network_input(jnp.asarray(batch['ir']), size, 'gray')
  np.testing.assert_array_equal(ir, np.repeat(batch['ir'], 3, axis=-1))
  depth = modalities.DEPTH.network_input(jnp.asarray(batch['depth']), size, 'jet')
  np.testing.assert_array_equal(depth, preprocess.depth_image(jnp.asarray(batch['depth']), 'jet'))


def test_reading_a_modality_the_dataset_lacks_names_it():
  rgbd = [
      records.make_example(
          rgb=np.zeros((T, H, W, 3), np.uint8),
          depth_code=np.zeros((T, H, W), np.uint8),
          label=0,
          sample_id='rgbd',
          rgb_frames_raw=T,
          depth_frames_raw=T,
      )
  ]
  batches = pipeline.eval_iterator(
      rgbd,
      global_batch_size=1,
      num_frames=2,
      image_size=(H, W),
      process_index=0,
      process_count=1,
      modalities=('rgb', 'ir'),
  )
  with pytest.raises(ValueError, match=r"'rgbd': the dataset holds no infrared frames"):
    next(iter(batches))
