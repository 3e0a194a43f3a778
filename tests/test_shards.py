"""Damaged dataset shards: caught when a split is opened, or named with the record when read.

Each test damages a copy of conftest's tiny built `synthetic_rgbd` (one shard
file per split: 8 train, 4 validation, 6 test records).
"""

import os
import pickle
import shutil

from array_record.python import array_record_module
import pytest
import tensorflow_datasets as tfds

from modistill_jax.data import pipeline
from modistill_jax.data import shards

VERSION = os.path.join('synthetic_rgbd', '0.0.1')


@pytest.fixture
def data_dir(synthetic_data_dir, tmp_path) -> str:
  """A private copy of the tiny built dataset, free to damage."""
  copy = str(tmp_path / 'tfds')
  shutil.copytree(synthetic_data_dir, copy)
  return copy


def shard_file(data_dir: str, split: str) -> str:
  return os.path.join(data_dir, VERSION, f'synthetic_rgbd-{split}.array_record-00000-of-00001')


def load(data_dir: str, split: str = 'train') -> pipeline.Source:
  return pipeline.load_source('synthetic_rgbd', 'cross_view', split, data_dir=data_dir)


def rejected_records(path: str) -> list[int] | None:
  """The records of `path` ArrayRecord's own reader rejects; None if the file does not open."""
  reader = array_record_module.ArrayRecordReader(path)
  if not reader.ok():
    return None
  rejected = []
  for i in range(reader.num_records()):
    try:
      reader.read([i])
    except RuntimeError:
      rejected.append(i)
  reader.close()
  return rejected


def damage_one_record(path: str) -> int:
  """Flips bytes inside one record of `path` (its index left intact); returns that record.

  Tries 64-byte stretches from the start of the file until ArrayRecord's own
  reader rejects exactly one record, so the test does not depend on where the
  (compressed) records lie in the file.
  """
  with open(path, 'rb') as f:
    intact = f.read()
  assert rejected_records(path) == []
  for offset in range(1024, len(intact), 1024):
    damaged = bytearray(intact)
    damaged[offset : offset + 64] = bytes(b ^ 0xFF for b in damaged[offset : offset + 64])
    with open(path, 'wb') as f:
      f.write(damaged)
    rejected = rejected_records(path)
    if rejected is not None and len(rejected) == 1:
      return rejected[0]
  raise AssertionError(f'no 64-byte stretch of {path} damages exactly one record')


def test_intact_dataset_reads_every_record(data_dir):
  source = load(data_dir)
  assert [r['sample_id'] for r in source.records] == [f'clip{i}'.encode() for i in range(8)]
  assert source.records[-1]['sample_id'] == b'clip7'
  with pytest.raises(IndexError, match='record 8 of synthetic_rgbd/cross_view/train'):
    source.records[8]  # pylint: disable=pointless-statement


def test_records_pickle_for_worker_processes(data_dir):
  # Grain's worker processes (`input.worker_count > 0`) receive the records pickled.
  records = load(data_dir).records
  copy = pickle.loads(pickle.dumps(records))
  assert copy.split == records.split
  assert [r['sample_id'] for r in copy] == [r['sample_id'] for r in records]


@pytest.mark.parametrize('keep', [0.5, 0.99])
def test_truncated_shard_fails_when_the_split_is_opened(data_dir, keep):
  path = shard_file(data_dir, 'train')
  size = os.path.getsize(path)
  os.truncate(path, int(size * keep))
  with pytest.raises(shards.DatasetShardError) as error:
    load(data_dir)
  message = str(error.value)
  assert 'synthetic_rgbd/cross_view/train' in message
  assert f'{path} cannot be opened as ArrayRecord ({int(size * keep)} bytes)' in message
  assert f'delete {os.path.join(data_dir, VERSION)} and rebuild it' in message
  assert f'`tfds build data_builders/synthetic_rgbd --data_dir={data_dir}`' in message
  load(data_dir, 'test')  # the other splits' files are intact


def test_missing_shard_fails_when_the_split_is_opened(data_dir):
  os.remove(shard_file(data_dir, 'validation'))
  with pytest.raises(
      shards.DatasetShardError,
      match=r'synthetic_rgbd/cross_view/validation '
      r"\(TFDS split 'validation'\): 1 of 1 shard files cannot be read:\n  "
      f'{shard_file(data_dir, "validation")} is missing',
  ):
    load(data_dir, 'validation')


def test_shard_with_another_record_count_fails_when_the_split_is_opened(data_dir):
  # The validation split's file (4 records) in place of the test split's (6).
  shutil.copy(shard_file(data_dir, 'validation'), shard_file(data_dir, 'test'))
  with pytest.raises(
      shards.DatasetShardError, match='holds 4 records, but the dataset metadata lists 6'
  ):
    load(data_dir, 'test')


def test_damaged_record_names_the_shard_file_and_record(data_dir):
  path = shard_file(data_dir, 'test')
  position = damage_one_record(path)
  # A union of two splits, so the record's index in the split (after the 4
  # validation records) differs from its index in its shard file.
  builder = tfds.builder_from_directory(os.path.join(data_dir, VERSION))
  records = shards.open_split(
      builder, 'validation+test', name='synthetic_rgbd/union', rebuild_command='REBUILD'
  )
  for i in range(4 + 6):
    if i != 4 + position:
      assert records[i]['sample_id']  # every other record still reads
  with pytest.raises(shards.DatasetShardError) as error:
    records[4 + position]  # pylint: disable=pointless-statement
  message = str(error.value)
  assert message.startswith(
      f'Cannot read record {4 + position} of synthetic_rgbd/union (TFDS split '
      f"'validation+test'): record {position} of 6 in shard file {path}: RuntimeError: "
      'Corrupted Riegeli/records file'
  )
  assert message.endswith(
      f'delete {os.path.join(data_dir, VERSION)} and rebuild it with '
      '`REBUILD`, or replace the file with an intact copy.'
  )


def test_damaged_record_stops_the_input_pipeline_with_its_name(data_dir):
  path = shard_file(data_dir, 'test')
  position = damage_one_record(path)
  source = load(data_dir, 'test')  # the index is intact: opening passes
  batches = pipeline.eval_iterator(
      source.records,
      global_batch_size=2,
      num_frames=2,
      image_size=(16, 16),
      process_index=0,
      process_count=1,
  )
  with pytest.raises(
      shards.DatasetShardError,
      match=f'Cannot read record {position} of synthetic_rgbd/cross_view/test '
      rf"\(TFDS split 'test'\): record {position} of 6 in shard file {path}",
  ):
    list(batches)


def test_locate_maps_split_indices_to_shard_records():
  split = shards.BuiltSplit(
      name='x',
      tfds_split='a[2:]+b',
      version_dir='/v',
      rebuild_command='c',
      shards=(
          shards.Shard('a0', skip=2, take=3, num_records=5),
          shards.Shard('a1', skip=0, take=4, num_records=4),
          shards.Shard('b0', skip=0, take=2, num_records=2),
      ),
  )
  records = shards.ShardedRecords(list(range(9)), split)
  located = [(shard.path, position) for shard, position in map(records.locate, range(9))]
  assert located == [
      ('a0', 2),
      ('a0', 3),
      ('a0', 4),
      ('a1', 0),
      ('a1', 1),
      ('a1', 2),
      ('a1', 3),
      ('b0', 0),
      ('b0', 1),
  ]
  with pytest.raises(ValueError, match='the data source has 8 records but its shards list 9'):
    shards.ShardedRecords(list(range(8)), split)
