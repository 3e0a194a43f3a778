"""Record layout 2: clip table + frame rows read as whole clips were; depth coloured on device.

A tiny dataset is written both ways: as built files in the current layout
(`records.split_rows`, TFDS's hashed order), and as the whole-clip records the
pipeline reads in memory, in the order TFDS gave version-1 builds (the hash of
the sample id salted with the split name). The pipeline must give the same
batches from both.
"""

import os
import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import hashing as tfds_hashing

from conftest import REPO_ROOT
from modistill_jax import config_lib
from modistill_jax import steps
from modistill_jax.data import jet
from modistill_jax.data import pipeline
from modistill_jax.data import preprocess
from modistill_jax.data import records
from modistill_jax.data import shards
from tools import pipeline_speed

SIZE = 16
SPLITS = {'train': 7, 'test': 5}


def make_clip(index: int) -> dict:
  rng = np.random.default_rng(index)
  length = 3 + index % 6
  depth_mm = rng.uniform(500, 4000, (length, SIZE, SIZE))
  depth_mm[:, :, :3] = 0  # invalid
  return records.make_example(
      rgb=rng.integers(0, 256, (length, SIZE, SIZE, 3), dtype=np.uint8),
      depth_code=jet.depth_to_code(depth_mm),
      label=index % 4,
      sample_id=f'clip{index:02d}',
      rgb_frames_raw=length,
      depth_frames_raw=length,
      subject=index,
  )


CLIPS = {
    split: [make_clip(i + 100 * n) for i in range(size)]
    for n, (split, size) in enumerate(SPLITS.items())
}


def version1_order(split: str) -> list[dict]:
  """The split's whole clips in the order TFDS wrote version-1 builds."""
  hasher = tfds_hashing.Hasher(split)
  return sorted(CLIPS[split], key=lambda c: hasher.hash_key(c['sample_id']))


@pytest.fixture(scope='module')
def built(tmp_path_factory) -> tfds.core.DatasetBuilder:
  data_dir = str(tmp_path_factory.mktemp('layout'))
  rows = {}
  for split, clips in CLIPS.items():
    rows.update(records.split_rows(clips, split))
  tfds.dataset_builders.store_as_tfds_dataset(
      name='synthetic_rgbd',
      version='2.0.0',
      data_dir=data_dir,
      features=records.clip_features([f'class{i}' for i in range(4)]),
      split_datasets=rows,
      file_format=records.FILE_FORMAT,
  )
  return tfds.builder_from_directory(os.path.join(data_dir, 'synthetic_rgbd', '2.0.0'))


def open_split(builder, split: str) -> shards.ClipRecords:
  return shards.open_split(builder, split, name=split, rebuild_command='REBUILD')


def assert_same_batches(a, b):
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.slow
def test_built_clips_are_the_version1_clips_in_the_version1_order(built):
  for split in SPLITS:
    clips = open_split(built, split)
    expected = version1_order(split)
    assert len(clips) == len(expected)
    for clip, whole in zip(clips, expected):
      assert clip['sample_id'].decode() == whole['sample_id']
      for key in records.CLIP_FIELDS[2:] + ('label',):
        assert clip[key] == whole[key], key
      for modality in records.MODALITIES:
        assert list(clip[modality]) == whole[modality], modality


@pytest.mark.slow
def test_fast_row_parsing_is_tfds_decoding(built):
  for split in ('test', records.frames_split('test')):
    source = built.as_data_source(split=split)
    for i in range(len(source)):
      fast = records.parse_row(source.data_source[i])
      slow = source[i]
      assert fast.keys() == slow.keys()
      for key, value in fast.items():
        if key in records.MODALITIES:
          assert value == list(slow[key]), key
        else:
          np.testing.assert_array_equal(value, slow[key], err_msg=key)


@pytest.mark.slow
def test_pipeline_gives_the_version1_batches(built):
  clips, whole = open_split(built, 'train'), version1_order('train')
  kwargs = dict(
      global_batch_size=3,
      num_frames=4,
      image_size=(SIZE, SIZE),
      seed=5,
      process_index=0,
      process_count=1,
  )
  batches = {}
  for name, source in (('built', clips), ('whole', whole)):
    iterator = pipeline.train_iterator(source, **kwargs)
    batches[name] = [next(iterator) for _ in range(6)]  # more than 2 epochs
    iterator.close()
  assert_same_batches(batches['built'], batches['whole'])
  test, test_whole = open_split(built, 'test'), version1_order('test')
  eval_kwargs = dict(
      global_batch_size=2, num_frames=4, image_size=(SIZE, SIZE), process_index=0, process_count=1
  )
  assert_same_batches(
      pipeline.eval_iterator(test, **eval_kwargs), pipeline.eval_iterator(test_whole, **eval_kwargs)
  )


@pytest.mark.slow
def test_a_union_of_splits_reads_each_clip_its_own_frames(built):
  union = shards.open_split(built, 'test+train', name='union', rebuild_command='REBUILD')
  expected = version1_order('test') + version1_order('train')
  for clip, whole in zip(union, expected, strict=True):
    assert clip['sample_id'].decode() == whole['sample_id']
    for modality in records.MODALITIES:
      assert list(clip[modality]) == whole[modality]


@pytest.mark.slow
def test_a_misplaced_frame_row_is_refused(built):
  clips = open_split(built, 'train')
  row = clips.clip_table[0]
  wrong = shards.FrameSequence(clips.frames, row['rgb_records'][::-1], row['sample_id'], 'rgb')
  with pytest.raises(shards.DatasetShardError, match='the clip table places rgb frame 0'):
    wrong[0]  # pylint: disable=pointless-statement


@pytest.mark.slow
def test_an_rgb_only_stage_opens_no_depth_bytes(built):
  clips = open_split(built, 'train')
  frame_reads = pipeline_speed.count_reads(clips.frames.data_source)
  depth_rows = {int(p) for i in range(len(clips)) for p in clips.clip_table[i]['depth_records']}
  clip = clips[3]
  _ = clip['rgb'][0], clip['rgb'][2]
  assert frame_reads.indices == [int(clips.clip_table[3]['rgb_records'][t]) for t in (0, 2)]
  for modalities, reads_depth in ((('rgb',), False), (('rgb', 'depth'), True)):
    frame_reads.reset()
    iterator = pipeline.train_iterator(
        clips,
        global_batch_size=7,
        num_frames=2,
        image_size=(SIZE, SIZE),
        seed=0,
        process_index=0,
        process_count=1,
        modalities=modalities,
    )
    next(iterator)
    iterator.close()
    assert frame_reads.num_bytes > 0
    assert bool(depth_rows & set(frame_reads.indices)) == reads_depth, modalities


def test_jet_on_the_device_is_the_host_jet_bit_for_bit():
  rng = np.random.default_rng(0)
  clips = [
      rng.uniform(400, 4500, (3, 8, 8)),
      np.full((2, 4, 4), 1234.0),
      np.zeros((2, 4, 4)),
      np.linspace(1, 5000, 3 * 256).reshape(3, 16, 16),
  ]
  clips[0][:, :2] = 0
  for depth_mm in clips:
    codes = jet.depth_to_code(depth_mm)
    on_device = preprocess.depth_image(jnp.asarray(codes[..., None]), 'jet')
    np.testing.assert_array_equal(on_device, jet.depth_to_jet(depth_mm))
    np.testing.assert_array_equal(
        preprocess.depth_image(jnp.asarray(codes[..., None]), 'gray'),
        preprocess.jet_to_gray(jet.depth_to_jet(depth_mm)),
    )
  every_code = np.arange(jet.MAX_CODE + 1, dtype=np.uint8)[:, None]
  assert len(np.unique(jet.JET_OF_CODE[: jet.MAX_CODE + 1], axis=0)) == jet.MAX_CODE + 1
  np.testing.assert_array_equal(
      preprocess.depth_image(jnp.asarray(every_code), 'gray'),
      preprocess.jet_to_gray(jet.JET_OF_CODE[every_code[:, 0]]),
  )


def test_model_inputs_and_depth_noise_are_those_of_stored_jet_frames():
  """Codes reach the network, clean or with Table 2's noise, as stored jet frames did."""
  depth_mm = np.random.default_rng(1).uniform(1, 9, (2, 3, 4, 4))
  depth_mm[0, :, 0] = 0
  codes = {'depth': np.stack([jet.depth_to_code(d) for d in depth_mm])[..., None]}
  coloured = {'depth': np.stack([jet.depth_to_jet(d) for d in depth_mm])}
  key = np.asarray(jnp.zeros(2, jnp.uint32))
  noise = lambda clips: preprocess.depth_noise(key, clips, 0.3)
  for encoding in preprocess.DEPTH_ENCODINGS:
    config = config_lib.base_config().input
    config.depth_encoding = encoding
    for transform in (None, noise):
      np.testing.assert_array_equal(
          steps.model_inputs(codes, config, ('depth',), jnp.float32, transform)['depth'],
          steps.model_inputs(coloured, config, ('depth',), jnp.float32, transform)['depth'],
      )


def test_old_layout_build_is_refused_with_the_rebuild_command(tmp_path):
  tfds.dataset_builders.store_as_tfds_dataset(
      name='old',
      version='1.0.0',
      data_dir=str(tmp_path),
      features=pipeline_speed.old_layout_features(['a']),
      split_datasets={
          'train': [
              ('x', {'rgb': [b'j'], 'depth': [b'p'], 'label': 0, 'sample_id': 'x', 'num_frames': 1})
          ]
      },
      file_format=records.FILE_FORMAT,
  )
  builder = tfds.builder_from_directory(str(tmp_path / 'old' / '1.0.0'))
  with pytest.raises(
      shards.DatasetShardError,
      match="no frame record split 'train_frames'.*" 'Rebuild it with `REBUILD`',
  ):
    open_split(builder, 'train')


@pytest.mark.slow
def test_input_benchmark_command_measures_both_stages_in_both_layouts(tmp_path):
  """`python -m tools.pipeline_speed`, shrunk: every figure it exists to print."""
  command = [sys.executable, '-m', 'tools.pipeline_speed', '--clips=1', '--size=16']
  command += ['--seconds=0.2', '--workers=0', '--split_size=20', f'--dir={tmp_path}']
  command += ['--gcs_emulator', '--gcs_clips=2']
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO_ROOT)
  out = subprocess.run(
      command, env=env, capture_output=True, text=True, timeout=300, check=True, cwd=REPO_ROOT
  )
  assert re.search(
      r'gs:// \(GCS emulator\): opening the split and its 2 shard files through the pipeline\'s '
      r'readers: \d+ downloads, [\d.]+ KiB',
      out.stdout,
  )
  for stage, modalities in pipeline_speed.STAGES.items():
    assert re.search(
        rf'\[{re.escape(stage)}\] gs:// per training clip: {1 + 5 * len(modalities)}\.0 requests, '
        r"[\d.]+ KiB served \([\d.]+x the frames decoded\), [\d.]+ ms of CPU; through TFDS's "
        r'readers [\d.]+ requests, [\d.]+ KiB \([\d.]+x\), [\d.]+ ms of CPU',
        out.stdout,
    )
    assert re.search(rf'\[{re.escape(stage)}\] bytes read per training clip: current', out.stdout)
    assert re.search(
        rf'\[{re.escape(stage)}\] pipeline, 0 workers: current [\d.]+ clips/s', out.stdout
    )
    assert re.search(rf'\[{re.escape(stage)}\] decode only, 1 thread', out.stdout)
    assert re.search(
        rf'\[{re.escape(stage)}\] bytes from storage per training clip \(rchar\): [\d.]+ KiB '
        r"\([\d.]+x the frames decoded\); through TFDS's readers [\d.]+ KiB",
        out.stdout,
    )
    assert re.search(
        rf'\[{re.escape(stage)}\] CPU per training clip, 1 thread: [\d.]+ ms at 16', out.stdout
    )
  assert re.search(
      r'\[rgb\] CPU per training clip.*; at 8: [\d.]+ ms decoding in full, [\d.]+ ms with '
      r'reduced_decoding',
      out.stdout,
  )
  assert not os.listdir(tmp_path)  # the datasets went with their temporary folder

  bad = subprocess.run(command + ['--workers=0,two'], env=env, capture_output=True, text=True)
  assert bad.returncode != 0 and '--workers=0,two: not a list of integers' in bad.stderr
