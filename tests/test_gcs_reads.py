"""Records read from gs:// by bounded byte ranges: the same bytes as on disk, and few of them.

The GCS emulator counts what its downloads serve (`gcs_emulator.Downloads`);
the dataset is the input measurement's NTU-size records (224x224 camera-like
frames, `tools/pipeline_speed.py`), where the bytes a clip decodes are those
of real JPEG and PNG frames.
"""

import os
import pickle
import urllib.request

from array_record.python import array_record_module
from etils import epath
import numpy as np
import pytest
import tensorflow_datasets as tfds

from gcs_emulator import Downloads  # pylint: disable=unused-import
from modistill_jax.data import ranged_records
from modistill_jax.data import shards
from tools import pipeline_speed

BLOCK = ranged_records.BLOCK_SIZE


@pytest.fixture(scope='module')
def ntu_size_records(tmp_path_factory):
  """Two clips of 70-100 camera-like frames at 224x224, current layout, on local disk."""
  root = str(tmp_path_factory.mktemp('ntu_size'))
  clips, _ = pipeline_speed.write_datasets(root, num_clips=2, size=224, version_1=False)
  return root, clips


def test_emulator_answers_suffix_ranges_and_counts_what_it_serves(gcs_emulator, gcs_bucket):
  data = np.random.default_rng(0).bytes(1_500_000)  # over 1 MiB, as a shard file whose footer
  (epath.Path(gcs_bucket) / 'blob').write_bytes(data)  # ArrayRecord reads by a suffix range
  url = (
      f'{gcs_emulator.url}/download/storage/v1/b/{gcs_bucket.removeprefix("gs://")}/o/blob'
      '?alt=media'
  )

  def get(byte_range):
    before = gcs_emulator.downloads()
    request = urllib.request.Request(url, headers={'Range': byte_range} if byte_range else {})
    with urllib.request.urlopen(request, timeout=30) as response:
      answer = response.status, response.headers.get('Content-Range'), response.read()
    return answer, gcs_emulator.downloads() - before

  size = len(data)
  assert get('bytes=-100') == (
      (206, f'bytes {size - 100}-{size - 1}/{size}', data[-100:]),
      Downloads(requests=1, bytes=100),
  )
  whole = (206, f'bytes 0-{size - 1}/{size}', data)
  assert get(f'bytes=-{size + 5}') == (whole, Downloads(1, size))
  assert get('bytes=10-19') == ((206, f'bytes 10-19/{size}', data[10:20]), Downloads(1, 10))
  assert get(None) == ((200, None, data), Downloads(1, size))


def test_ranged_reader_reads_every_record_as_array_record_does(ntu_size_records, monkeypatch):
  """On local files (a read function over the file), across 64 KiB block boundaries."""
  crossed = 0  # records whose chunk a block header interrupts
  paths = sorted(epath.Path(ntu_size_records[0], pipeline_speed.CURRENT).glob('*.array_record-*'))
  assert len(paths) == 2
  for path in paths:
    with open(path, 'rb') as f:
      requests = []

      def read_range(start, end, f=f, requests=requests):
        requests.append((start, end))
        f.seek(start)
        return f.read(end - start)

      reader = ranged_records.RangedShardReader(read_range, os.path.getsize(path))
      expected = array_record_module.ArrayRecordReader(str(path)).read_all()
      assert reader.num_records() == len(expected) > 0
      positions = list(range(len(expected)))[::-1]
      assert reader.read(positions) == [expected[p] for p in positions]
    index = reader.index()
    # Two requests for the index, then one per record: exactly its chunk's bytes.
    assert len(requests) == 2 + len(expected)
    assert sorted(requests[2:]) == list(zip(index.chunk_starts[:-1], index.chunk_starts[1:]))
    crossed += sum((b - 1) // BLOCK != a // BLOCK for a, b in requests[2:])
    with pytest.raises(IndexError, match=f'record {len(expected)} of a file of {len(expected)} '):
      reader.read([len(expected)])
  assert crossed > 10
  # A postscript chunk longer than the first read of the last block is read whole.
  monkeypatch.setattr(ranged_records, 'POSTSCRIPT_READ', ranged_records.BLOCK_HEADER_SIZE + 48)
  data = path.read_bytes()
  whole = ranged_records.read_index(lambda start, end: data[start:end], len(data))
  np.testing.assert_array_equal(whole.chunk_starts, index.chunk_starts)
  np.testing.assert_array_equal(whole.first_records, index.first_records)


def test_records_that_are_not_array_record_are_refused_by_name():
  with pytest.raises(ranged_records.RecordFormatError, match='not a whole number of 64 KiB'):
    ranged_records.read_index(lambda a, b: b'', 1000)
  # A chunk header: hash, data size, data hash, then type 't' and 7 bytes of count, decoded size.
  transposed = bytes(24) + bytes([ord('t')]) + bytes(15)
  with pytest.raises(ranged_records.RecordFormatError, match='a transposed chunk'):
    ranged_records.chunk_records(transposed)


def test_a_clip_from_gs_is_the_local_clip_and_serves_at_most_1_5x_its_frames(
    ntu_size_records, gcs_emulator, gcs_bucket
):
  root, local = ntu_size_records
  remote, version_dir, opening = pipeline_speed.open_on_gcs(
      root, gcs_bucket, gcs_emulator.downloads
  )
  assert opening.requests > 0
  for record_set in ('clip_table', 'frames'):
    shard_path = getattr(remote, record_set).split.shards[0].path
    assert shard_path.startswith('gs://')
    assert isinstance(shards.open_shard(shard_path), ranged_records.RangedShardReader)
    on_gcs = getattr(remote, record_set).data_source.data_source
    on_disk = getattr(local, record_set).data_source.data_source
    assert len(on_gcs) == len(on_disk) > 0
    assert [on_gcs[i] for i in range(len(on_gcs))] == [on_disk[i] for i in range(len(on_disk))]
  # Grain's worker processes get the clips pickled: their readers open again there.
  unpickled = pickle.loads(pickle.dumps(remote))
  assert unpickled[1]['depth'][7] == local[1]['depth'][7]
  sizes = {m: [[len(f) for f in local[c][m]] for c in range(len(local))] for m in ('rgb', 'depth')}
  assert np.mean(np.concatenate(sizes['rgb'])) > 8 * 1024  # JPEG frames of camera-like size
  for modalities in pipeline_speed.STAGES.values():
    requests, served, decoded, cpu = pipeline_speed.served_per_clip(
        remote,
        gcs_emulator.downloads,
        modalities=modalities,
        num_clips=6,
        frame_bytes=lambda c, m, t: sizes[m][c][t],
    )
    # One request for the clip-table row, one per frame read; each no larger than its record.
    assert requests == 1 + 5 * len(modalities)
    assert decoded < served <= 1.5 * decoded, modalities
    assert cpu > 0
  # A shard file cut short (at a block boundary: the last block is then frame data, not the
  # postscript) or missing on gs:// is named when the split is opened.
  shard = epath.Path(remote.frames.split.shards[0].path)
  shard.write_bytes(shard.read_bytes()[: 3 * BLOCK])
  open_again = lambda: shards.open_split(
      tfds.builder_from_directory(version_dir), 'train', name='x', rebuild_command='-'
  )
  with pytest.raises(shards.DatasetShardError, match=f'{shard} cannot be opened as ArrayRecord'):
    open_again()
  shard.unlink()
  with pytest.raises(shards.DatasetShardError, match=f'{shard} is missing'):
    open_again()
