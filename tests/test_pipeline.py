"""The Grain input pipeline: alignment, exact evaluation, host sharding, resumption.

Clips are built in memory with `records.make_example`; frame `t` of record `r`
encodes `t` in the red channel and a left-to-right ramp in blue (RGB), or `t`
in the codes of its left half and 0 in its right half (depth), so a batch tells
which frames were sampled and whether they were mirrored.
"""

import cv2
from etils import epath
import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from modistill_jax.data import pipeline
from modistill_jax.data import records
from modistill_jax.data import shards

SIZE = 16
STEP = 12  # intensity step per frame number: survives JPEG at quality 90
NUM_FRAMES = 5


def make_clip(index: int, length: int) -> dict:
  t = np.arange(length, dtype=np.uint8)[:, None, None]
  ramp = np.broadcast_to(np.linspace(0, 240, SIZE, dtype=np.uint8), (length, SIZE, SIZE))
  frame_code = np.broadcast_to(t * STEP, (length, SIZE, SIZE))
  zeros = np.zeros((length, SIZE, SIZE), np.uint8)
  rgb = np.stack([frame_code, zeros, ramp], -1)
  depth = np.where(np.arange(SIZE) < SIZE // 2, frame_code + 1, 0).astype(np.uint8)
  return records.make_example(
      rgb=rgb,
      depth_code=depth,
      label=index % 7,
      sample_id=f'clip{index}',
      rgb_frames_raw=length,
      depth_frames_raw=length,
  )


def make_records(count: int) -> list[dict]:
  return [make_clip(i, length=3 + (i * 5) % 17) for i in range(count)]


RECORDS = make_records(23)


def frame_numbers(clips: np.ndarray, channel: int) -> np.ndarray:
  """`(..., T, H, W, 3)` -> the frame number each frame encodes, `(..., T)`."""
  return np.rint(clips[..., channel].mean(axis=(-1, -2)) / STEP).astype(int)


def mirrored(clips: np.ndarray) -> np.ndarray:
  """Whether each frame's ramp runs right to left, `(..., T)`."""
  ramp = clips[..., 2].astype(int)
  return ramp[..., 0].mean(-1) > ramp[..., -1].mean(-1)


def depth_frame_numbers(clips: np.ndarray) -> np.ndarray:
  """`(..., T, H, W, 1)` depth codes -> the frame number each frame encodes, `(..., T)`."""
  return (clips[..., 0].max(axis=(-1, -2)).astype(int) - 1) // STEP


def depth_mirrored(clips: np.ndarray) -> np.ndarray:
  """Whether each depth frame's coded half is on the right, `(..., T)`."""
  return clips[..., 0, 0].mean(-1) < clips[..., -1, 0].mean(-1)


def train(records_=RECORDS, **kwargs):
  defaults = dict(
      global_batch_size=4,
      num_frames=NUM_FRAMES,
      image_size=(SIZE, SIZE),
      seed=0,
      process_index=0,
      process_count=1,
  )
  return pipeline.train_iterator(records_, **{**defaults, **kwargs})


def take(iterator, count: int) -> list[dict]:
  return [next(iterator) for _ in range(count)]


def assert_same_batches(a: list[dict], b: list[dict]):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_train_batch_layout():
  iterator = train(global_batch_size=6, image_size=(8, 12))
  batch = next(iterator)
  iterator.close()
  assert batch['rgb'].shape == (6, NUM_FRAMES, 8, 12, 3)
  assert batch['depth'].shape == (6, NUM_FRAMES, 8, 12, 1)
  assert batch['rgb'].dtype == batch['depth'].dtype == np.uint8
  assert batch['label'].dtype == np.int32 and batch['label'].shape == (6,)
  assert batch['index'].dtype == np.int32 and batch['mask'].dtype == np.bool_
  assert batch['mask'].all()
  np.testing.assert_array_equal(batch['label'], batch['index'] % 7)


def test_modalities_share_frames_and_flip():
  iterator = train(global_batch_size=8)
  batches = take(iterator, 12)
  iterator.close()
  rgb = np.concatenate([b['rgb'] for b in batches])
  depth = np.concatenate([b['depth'] for b in batches])
  index = np.concatenate([b['index'] for b in batches])
  rgb_frames, depth_frames = frame_numbers(rgb, 0), depth_frame_numbers(depth)
  np.testing.assert_array_equal(rgb_frames, depth_frames)
  lengths = np.array([RECORDS[i]['num_frames'] for i in index])
  assert np.all(np.diff(rgb_frames, axis=1) >= 0)
  assert np.all(rgb_frames < lengths[:, None])
  long_enough = lengths >= NUM_FRAMES
  assert np.all(np.diff(rgb_frames[long_enough], axis=1) > 0)
  flips = mirrored(rgb)
  np.testing.assert_array_equal(flips, depth_mirrored(depth))
  assert np.all(flips == flips[:, :1])  # one decision per clip
  assert 0.25 < flips[:, 0].mean() < 0.75
  uniform = np.array(
      [
          np.array_equal(f, np.rint(np.linspace(0, n - 1, NUM_FRAMES)))
          for f, n in zip(rgb_frames, lengths)
      ]
  )
  assert 0.25 < uniform[long_enough].mean() < 0.9  # uniform half the time, plus chance


def test_no_flip_and_all_uniform_when_disabled():
  iterator = train(global_batch_size=8, flip=False, uniform_prob=1.0)
  batch = next(iterator)
  iterator.close()
  assert not mirrored(batch['rgb']).any() and not depth_mirrored(batch['depth']).any()
  for frames, i in zip(frame_numbers(batch['rgb'], 0), batch['index']):
    np.testing.assert_array_equal(
        frames, np.rint(np.linspace(0, RECORDS[i]['num_frames'] - 1, NUM_FRAMES))
    )


def test_resize_from_larger_jpeg_and_png():
  big = [
      records.make_example(
          rgb=np.full((4, 64, 48, 3), 200, np.uint8),
          depth_code=np.full((4, 64, 48), 50, np.uint8),
          label=0,
          sample_id='big',
          rgb_frames_raw=4,
          depth_frames_raw=4,
      )
  ]
  iterator = train(big, global_batch_size=2, image_size=(16, 12))
  batch = next(iterator)
  iterator.close()
  assert batch['rgb'].shape == (2, NUM_FRAMES, 16, 12, 3)
  np.testing.assert_allclose(batch['rgb'].mean(), 200, atol=2)
  assert batch['depth'].shape == (2, NUM_FRAMES, 16, 12, 1) and (batch['depth'] == 50).all()


def test_only_the_asked_modalities_are_decoded(monkeypatch):
  clips = make_records(9)  # this test's own frame objects: no other test's threads decode them
  decoded = []
  real_decode = records.decode_frame
  monkeypatch.setattr(
      records,
      'decode_frame',
      lambda modality, data: decoded.append(data) or real_decode(modality, data),
  )
  iterator = train(clips, global_batch_size=8, modalities=('rgb',))
  rgb_only = take(iterator, 3)
  iterator.close()
  ids = {m: {id(f) for r in clips for f in r[m]} for m in ('rgb', 'depth')}
  assert any(id(f) in ids['rgb'] for f in decoded)
  assert not any(id(f) in ids['depth'] for f in decoded)
  monkeypatch.undo()
  iterator = train(clips, global_batch_size=8)
  both = take(iterator, 3)
  iterator.close()
  for full, rgb in zip(both, rgb_only):
    assert set(rgb) == {'rgb', 'label', 'mask', 'index'}
    for key in rgb:  # the same clips, frames and flips as with both modalities
      np.testing.assert_array_equal(rgb[key], full[key])
  batch = next(iter(evaluate(RECORDS, 4, modalities=('depth',))))
  assert 'rgb' not in batch and batch['depth'].shape == (4, NUM_FRAMES, SIZE, SIZE, 1)


@pytest.mark.parametrize('modalities', [(), ('rgb', 'rgb'), ('rgb', 'flow')])
def test_unknown_or_repeated_modalities_are_refused(modalities):
  with pytest.raises(ValueError, match='modalities must be distinct names'):
    train(modalities=modalities)


def test_resize_is_the_serving_resize():
  """RGB stored at another size reaches the model as `predict` would prepare it; depth codes
  are resized to the nearest code, never blended."""
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (3, 40, 30, 3), dtype=np.uint8)
  codes = rng.integers(0, 253, (3, 40, 30), dtype=np.uint8)
  clip = [
      records.make_example(
          rgb=frames,
          depth_code=codes,
          label=0,
          sample_id='odd',
          rgb_frames_raw=3,
          depth_frames_raw=3,
      )
  ]
  batch = next(
      iter(
          pipeline.eval_iterator(
              clip,
              global_batch_size=1,
              num_frames=3,
              image_size=(SIZE, 12),
              process_index=0,
              process_count=1,
          )
      )
  )
  served = [
      pipeline.resize_frame(Image.fromarray(records.decode_image(f)), (SIZE, 12))
      for f in clip[0]['rgb']
  ]
  np.testing.assert_array_equal(batch['rgb'][0], np.stack([np.asarray(f) for f in served]))
  rows, cols = (np.arange(SIZE) * 40) // SIZE, (np.arange(12) * 30) // 12
  np.testing.assert_array_equal(batch['depth'][0, ..., 0], codes[:, rows][:, :, cols])


def test_same_seed_same_stream_other_seed_differs():
  streams = []
  for seed in (3, 3, 4):
    iterator = train(seed=seed)
    streams.append(take(iterator, 8))
    iterator.close()
  assert_same_batches(streams[0], streams[1])
  index = [np.concatenate([b['index'] for b in s]) for s in streams]
  assert not np.array_equal(index[0], index[2])


def test_epochs_cover_records_and_reshuffle():
  iterator = train(global_batch_size=1)
  order = np.concatenate([b['index'] for b in take(iterator, 3 * len(RECORDS))])
  iterator.close()
  epochs = order.reshape(3, len(RECORDS))
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(len(RECORDS)))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])


@pytest.mark.parametrize('process_count', [2, 3, 4])
def test_train_hosts_split_each_epoch(process_count):
  """Host p reads positions p, p + P, ... of the global stream: every record once per epoch."""
  global_batch_size = 2 * process_count
  local_streams = []
  for process_index in range(process_count):
    iterator = train(
        global_batch_size=global_batch_size,
        process_index=process_index,
        process_count=process_count,
    )
    batches = take(iterator, 2 * len(RECORDS) // global_batch_size + 1)
    iterator.close()
    assert all(len(b['index']) == 2 for b in batches)
    local_streams.append(np.concatenate([b['index'] for b in batches]))
  first_epoch = np.concatenate(
      [
          stream[: len(range(p, len(RECORDS), process_count))]
          for p, stream in enumerate(local_streams)
      ]
  )
  np.testing.assert_array_equal(np.sort(first_epoch), np.arange(len(RECORDS)))
  # The global stream is the single-host one: the same clips per global batch.
  iterator = train(global_batch_size=global_batch_size)
  single = next(iterator)
  iterator.close()
  first_global = np.concatenate([s[:2] for s in local_streams])
  np.testing.assert_array_equal(np.sort(first_global), np.sort(single['index']))


def test_batch_size_not_divisible_by_hosts():
  with pytest.raises(ValueError, match='global_batch_size 6 .* process count 4'):
    train(global_batch_size=6, process_index=0, process_count=4)


def test_resume_from_state_replays_the_same_batches():
  iterator = train(global_batch_size=3)
  take(iterator, 9)  # crosses an epoch boundary (23 records)
  state = iterator.get_state()
  expected = take(iterator, 6)
  iterator.close()
  restored = train(global_batch_size=3)
  restored.set_state(state)
  assert_same_batches(take(restored, 6), expected)
  restored.close()


def test_worker_processes_give_the_same_stream_and_resume():
  reference = train(global_batch_size=4)
  expected = take(reference, 6)
  reference.close()
  iterator = train(global_batch_size=4, worker_count=2)
  assert_same_batches(take(iterator, 3), expected[:3])
  state = iterator.get_state()
  iterator.close()
  restored = train(global_batch_size=4, worker_count=2)
  restored.set_state(state)
  assert_same_batches(take(restored, 3), expected[3:])
  restored.close()


def evaluate(records_, global_batch_size, process_index=0, process_count=1, **kwargs):
  return pipeline.eval_iterator(
      records_,
      global_batch_size=global_batch_size,
      num_frames=NUM_FRAMES,
      image_size=(SIZE, SIZE),
      process_index=process_index,
      process_count=process_count,
      **kwargs,
  )


@pytest.mark.parametrize(
    'num_devices, global_batch_size', [(1, 1), (1, 5), (4, 4), (4, 8), (4, 36)]
)
def test_exact_eval_on_a_mesh(num_devices, global_batch_size):
  """Masked count and index sum over global arrays see each record once."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:num_devices]), ('data',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  batches = evaluate(RECORDS, global_batch_size)
  assert len(batches) == -(-len(RECORDS) // global_batch_size)
  assert batches.num_examples == len(RECORDS)
  count = index_sum = seen = 0
  for batch in batches:
    mask = jax.make_array_from_process_local_data(sharding, batch['mask'])
    index = jax.make_array_from_process_local_data(sharding, batch['index'])
    assert mask.shape == (global_batch_size,)
    count += int(mask.sum())
    index_sum += int((index * mask).sum())
    seen += 1
    frames = frame_numbers(batch['rgb'], 0)[batch['mask']]
    lengths = np.array([RECORDS[i]['num_frames'] for i in batch['index'][batch['mask']]])
    np.testing.assert_array_equal(frames, np.rint(np.linspace(0, lengths - 1, NUM_FRAMES, axis=-1)))
    assert not batch['rgb'][~batch['mask']].any()
    assert np.all(batch['index'][~batch['mask']] == -1)
  assert seen == len(batches)
  assert count == len(RECORDS)
  assert index_sum == sum(range(len(RECORDS)))


@pytest.mark.parametrize(
    'num_records, process_count, global_batch_size',
    [(23, 2, 4), (23, 3, 3), (23, 4, 8), (2, 4, 4), (8, 4, 4)],
)
def test_exact_eval_across_hosts(num_records, process_count, global_batch_size):
  records_ = RECORDS[:num_records]
  indices, num_batches = [], set()
  for process_index in range(process_count):
    batches = evaluate(records_, global_batch_size, process_index, process_count)
    local = list(batches)
    assert len(local) == len(batches)
    num_batches.add(len(local))
    for batch in local:
      assert len(batch['index']) == global_batch_size // process_count
      indices.extend(batch['index'][batch['mask']])
  assert len(num_batches) == 1
  max_per_host = -(-num_records // process_count)
  assert num_batches == {-(-max_per_host // (global_batch_size // process_count))}
  np.testing.assert_array_equal(np.sort(indices), np.arange(num_records))


def test_eval_passes_repeat():
  batches = evaluate(RECORDS[:5], 2)
  first, second = list(batches), list(batches)
  assert_same_batches(first, second)


class _TinyClips(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A throwaway ArrayRecord dataset named like the synthetic one, for its protocol."""

  name = 'synthetic_rgbd'
  VERSION = tfds.core.Version('0.0.1')
  pkg_dir_path = epath.Path(__file__).parent  # no metadata files: tests is no package

  def _info(self):
    return self.dataset_info_from_configs(
        features=records.clip_features([f'class{i}' for i in range(7)])
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
        **self._generate_examples('train', range(5)),
        **self._generate_examples('test', range(5, 8)),
    }

  def _generate_examples(self, split, indices):
    return records.split_rows([make_clip(i, length=4 + i) for i in indices], split)


def test_load_source_reads_built_array_records(tmp_path):
  _TinyClips(data_dir=str(tmp_path), file_format=records.FILE_FORMAT).download_and_prepare()
  source = pipeline.load_source('synthetic_rgbd', 'cross_view', 'train', data_dir=str(tmp_path))
  assert source.name == 'synthetic_rgbd/cross_view/train'
  assert source.class_names == tuple(f'class{i}' for i in range(7))
  assert len(source.records) == 5
  assert (
      pipeline.load_source('synthetic_rgbd', 'cross_view', 'validation', data_dir=str(tmp_path))
      is None
  )
  iterator = pipeline.train_iterator(
      source.records,
      global_batch_size=5,
      num_frames=NUM_FRAMES,
      image_size=(SIZE, SIZE),
      seed=0,
      process_index=0,
      process_count=1,
  )
  batch = next(iterator)
  iterator.close()
  np.testing.assert_array_equal(np.sort(batch['index']), np.arange(5))
  for i, label in zip(batch['index'], batch['label']):
    sample_id = source.records[i]['sample_id'].decode()  # TFDS Text reads back as bytes
    assert label == int(sample_id.removeprefix('clip')) % 7
  test = pipeline.load_source('synthetic_rgbd', 'cross_view', 'test', data_dir=str(tmp_path))
  batches = evaluate(test.records, 2)
  assert sum(int(b['mask'].sum()) for b in batches) == batches.num_examples == 3


def test_a_build_read_with_a_protocol_it_was_not_made_for_is_refused(tmp_path):
  """A cross-view synthetic build holds `train`, `validation`, `test`; `cross_subject` reads
  `cs_*` splits, so the build is refused naming what it holds, not read as if split by subject."""
  _TinyClips(data_dir=str(tmp_path), file_format=records.FILE_FORMAT).download_and_prepare()
  with pytest.raises(
      ValueError,
      match=r"holds the splits .*'test'.*'train'.* none of protocol "
      r"'cross_subject' \(\['cs_test', 'cs_train', 'cs_validation'\]\)",
  ):
    pipeline.load_source('synthetic_rgbd', 'cross_subject', 'train', data_dir=str(tmp_path))


def storage_bytes_read() -> int:
  """This process's bytes read through read system calls so far (`/proc/self/io` rchar)."""
  with open('/proc/self/io') as f:
    return next(int(line.split()[1]) for line in f if line.startswith('rchar:'))


def test_a_frame_read_reads_about_its_record_from_storage(tmp_path):
  """`shards.RecordFiles` reads a record's bytes and little more; TFDS's readers 32 KiB a read."""
  _TinyClips(data_dir=str(tmp_path), file_format=records.FILE_FORMAT).download_and_prepare()
  clips = pipeline.load_source(
      'synthetic_rgbd', 'cross_view', 'train', data_dir=str(tmp_path)
  ).records
  ours = clips.frames.data_source.data_source
  assert isinstance(ours, shards.RecordFiles)
  frame_split = clips.frames.split
  builder = tfds.builder_from_directory(frame_split.version_dir)
  theirs = builder.as_data_source(split=frame_split.tfds_split).data_source
  positions = np.random.default_rng(0).permutation(len(ours))[:40]
  read = {}
  for name, reader in (('ours', ours), ('tfds', theirs)):
    assert reader[0] == ours[0]  # opens the shard (index, footer) before counting
    before = storage_bytes_read()
    record_bytes = sum(len(reader[int(p)]) for p in positions)
    read[name] = storage_bytes_read() - before
  # Each read: the record's chunk (its bytes, a chunk and a block header), at least one buffer.
  per_read_limit = max(record_bytes / len(positions), shards.READ_BUFFER_BYTES) + 128
  assert record_bytes <= read['ours'] <= per_read_limit * len(positions)
  assert read['tfds'] > 3 * read['ours']


def test_reduction_factor_keeps_the_decoded_frame_at_least_the_training_size():
  assert pipeline.reduction_factor((224, 224), (112, 112)) == 2
  assert pipeline.reduction_factor((224, 224), (56, 56)) == 4
  assert pipeline.reduction_factor((224, 224), (113, 112)) == 1
  assert pipeline.reduction_factor((226, 226), (57, 57)) == 4  # libjpeg rounds up: 57x57
  assert pipeline.reduction_factor((224, 224), (224, 224)) == 1


def test_reduced_decoding_is_opt_in_and_close_to_the_full_decode():
  y, x = np.mgrid[:64, :64]
  smooth = np.stack([60 + 2 * x, 60 + 2 * y, 120 + 60 * np.sin(x / 9 + y / 13)], -1)
  smooth = np.stack([smooth, smooth[::-1]]).astype(np.uint8)  # 2 frames of 64x64
  big = [
      records.make_example(
          rgb=smooth,
          depth_code=np.tile(np.arange(64, dtype=np.uint8)[None, None] % 200, (2, 64, 1)),
          label=0,
          sample_id='big',
          rgb_frames_raw=2,
          depth_frames_raw=2,
      )
  ]
  batches = {}
  for reduced in (False, True):
    iterator = train(
        big,
        global_batch_size=1,
        num_frames=2,
        image_size=(16, 16),
        flip=False,
        reduced_decoding=reduced,
    )
    batches[reduced] = next(iterator)
    iterator.close()
  full, reduced = batches[False], batches[True]
  assert reduced['rgb'].shape == full['rgb'].shape == (1, 2, 16, 16, 3)
  difference = np.abs(reduced['rgb'].astype(int) - full['rgb'].astype(int))
  assert 0 < difference.mean() < 4  # other pixels, the same image
  np.testing.assert_array_equal(reduced['depth'], full['depth'])  # depth PNGs: never reduced
  for key in ('label', 'index', 'mask'):
    np.testing.assert_array_equal(reduced[key], full[key])


def test_reduced_decoding_of_a_jpeg_is_libjpegs_dct_scaling():
  frame = np.random.default_rng(1).integers(0, 256, (40, 24, 3), dtype=np.uint8)
  data = records.encode_jpeg(frame)
  for factor, shape in ((2, (20, 12, 3)), (4, (10, 6, 3))):
    reduced = records.decode_image_reduced(data, factor)
    assert reduced.shape == shape
    bgr = cv2.imdecode(
        np.frombuffer(data, np.uint8),
        {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}[factor],
    )
    np.testing.assert_array_equal(reduced, bgr[..., ::-1])
  assert pipeline._jpeg_size(data) == (40, 24)  # pylint: disable=protected-access
