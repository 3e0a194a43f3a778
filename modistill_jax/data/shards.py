"""The ArrayRecord shard files of a split: checked on opening, read with errors that say where.

A damaged shard otherwise surfaces as Riegeli's `Corrupted Riegeli/records
file ... chunk at 39846574`, hours into a run, naming neither the file nor the
record, and the same command crashes at the same place again. Two defences:

* `check_shards`, when a split is opened: every shard file exists and its
  ArrayRecord index opens and counts the records the dataset's metadata
  (`shard_lengths`) lists. It reads only each file's footer and index (on
  `gs://` by two bounded reads, `ranged_records`), so it costs a few reads per
  shard, not a pass over the data (measured: 0.1 ms a shard locally, 3.6 ms on
  `gs://` through the test emulator, 16 threads, with ArrayRecord's reader),
  and catches what copies and interrupted downloads usually leave: missing and
  truncated files.
* `ShardedRecords`, when a record is read: a record whose bytes fail Riegeli's
  checksums (damage inside a file, which only reading the data can find) or do
  not parse raises `DatasetShardError` naming the shard file, the record's
  index in the split and in that file, and what to do.

`open_split` does both for `pipeline.load_source`, on both record sets of a
split (its clip table and its frame rows, see `records.py`), and returns them
as `ClipRecords`: clips by index whose frames are read one by one when used.

The records are read through `RecordFiles`, ArrayRecord readers with a small
read buffer, rather than the ones TFDS opens: those fetch 32 KiB per read,
which for a random read of one small record (a clip-table row, a 64x64 frame,
a 13 KiB 224x224 JPEG) is largely bytes of its neighbours, each time. On
`gs://`, `ranged_records` reads each record with one request for its bytes
(ArrayRecord's GCS reader asks for the rest of the file each time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import bisect
import concurrent.futures
import dataclasses
import operator
import os
import threading
from typing import Any

from array_record.python import array_record_module
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from modistill_jax.data import ranged_records
from modistill_jax.data import records as records_lib

# Shard files whose index is read at once when a split is opened: the reads
# wait on storage (a network round trip on gs://), not on the CPU.
CHECK_THREADS = 16
# The ArrayRecord reader's file buffer (TFDS and Grain open readers with 32 KiB). A record
# larger than it is read straight into place, so a record costs one read system call with any
# buffer size measured (0, 1 KiB, 4 KiB, 16 KiB, 32 KiB); the bytes read grow with the buffer
# (docs/performance.md, "Bytes from storage").
READ_BUFFER_BYTES = 1024
# No read-ahead: training reads records at random (what TFDS and Grain set too).
READER_OPTIONS = 'readahead_buffer_size:0'


class DatasetShardError(RuntimeError):
  """A shard file of a built dataset is missing, truncated or damaged."""


@dataclasses.dataclass(frozen=True)
class Shard:
  """The records `skip .. skip + take - 1` of one shard file, as a split reads them.

  Attributes:
    path: the shard file.
    skip: the file's first record in the split.
    take: records of the file in the split.
    num_records: records the dataset's metadata says the file holds.
  """

  path: str
  skip: int
  take: int
  num_records: int


@dataclasses.dataclass(frozen=True)
class BuiltSplit:
  """Where a split's records come from, for error messages that say what to do.

  Attributes:
    name: the split as the user asked for it, e.g. `ntu_rgbd/cross_subject/train`.
    tfds_split: the TFDS split expression read, e.g. `cstrain_cvtrain+cstrain_cvval`.
    version_dir: the built version folder holding the shard files.
    rebuild_command: the command that rebuilds that version folder.
    shards: the split's shard files, in the order of its record indices.
  """

  name: str
  tfds_split: str
  version_dir: str
  rebuild_command: str
  shards: tuple[Shard, ...]

  def remedy(self) -> str:
    return (
        f'The built dataset is damaged: delete {self.version_dir} and rebuild it with '
        f'`{self.rebuild_command}`, or replace the file with an intact copy.'
    )


def rebuild_command(dataset: str, data_dir: str, builder_config: str | None) -> str:
  """The `tfds build` command that writes `dataset[/builder_config]` into `data_dir` again."""
  command = f'tfds build data_builders/{dataset} --data_dir={data_dir}'
  if builder_config:
    command += f' --config={builder_config}'
  if dataset != 'synthetic_rgbd':  # the only download-free builder
    command += f' --manual_dir=<raw {dataset} folder> (see data_builders/{dataset}/README.md)'
  return command


def _shard_problem(shard: Shard) -> str | None:
  """Why `shard` cannot be read as its metadata describes it, or None if its index agrees."""
  try:
    if shard.path.startswith('gs://'):  # its postscript and footer, by two bounded reads
      num_records = ranged_records.gcs_reader(shard.path).num_records()
    else:
      reader = array_record_module.ArrayRecordReader(shard.path)
      num_records = reader.num_records() if reader.ok() else None
      reader.close()  # raises Riegeli's error when the reader failed
    error = ''
  except (RuntimeError, OSError, ranged_records.RecordFormatError) as e:  # some with no message
    num_records, error = None, str(e)
  if num_records is None:
    # Only now a separate look at the file, which costs a round trip on gs://.
    path = epath.Path(shard.path)
    if not path.exists():
      return 'is missing'
    return (
        f'cannot be opened as ArrayRecord ({path.stat().length} bytes): its footer or '
        'index is unreadable, as in a truncated or overwritten file'
        + (f' ({error})' if error else '')
    )
  if num_records != shard.num_records:
    return f'holds {num_records} records, but the dataset metadata lists {shard.num_records}'
  return None


def check_shards(split: BuiltSplit) -> None:
  """Raises `DatasetShardError` unless every shard of `split` opens with the listed record count.

  Reads only each file's footer and index; damage inside a record's data shows
  when `ShardedRecords` reads it.
  """
  with concurrent.futures.ThreadPoolExecutor(max(1, min(CHECK_THREADS, len(split.shards)))) as pool:
    problems = list(pool.map(_shard_problem, split.shards))
  found = [f'{shard.path} {problem}' for shard, problem in zip(split.shards, problems) if problem]
  if found:
    raise DatasetShardError(
        f'{split.name} (TFDS split {split.tfds_split!r}): {len(found)} of {len(split.shards)} '
        'shard files cannot be read:\n  ' + '\n  '.join(found) + '\n' + split.remedy()
    )


def open_shard(path: str):
  """A reader of one shard file's records: `read(positions)`, the records at those indices.

  On `gs://`, `ranged_records.gcs_reader`: one bounded range request per record
  (ArrayRecord's own GCS reader asks for the rest of the file each time). Elsewhere
  ArrayRecord's reader with `READ_BUFFER_BYTES` reads.
  """
  if path.startswith('gs://'):
    return ranged_records.gcs_reader(path)
  return array_record_module.ArrayRecordReader(
      path, options=READER_OPTIONS, file_reader_buffer_size=READ_BUFFER_BYTES
  )


class RecordFiles(Sequence):
  """A split's raw records by index, read from its shard files with `READ_BUFFER_BYTES` reads.

  Stands in for the ArrayRecord data source under a TFDS data source (its
  `data_source`), which reads the same records through 32 KiB reads. Readers
  open on a shard's first read, once per process; pickles without them, for
  Grain's worker processes.
  """

  def __init__(self, split: BuiltSplit):
    self._shards = split.shards
    self._ends = np.cumsum([shard.take for shard in split.shards]).tolist()
    self._readers = [None] * len(split.shards)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return self._ends[-1] if self._ends else 0

  def _reader(self, i: int):
    if self._readers[i] is None:
      with self._lock:
        if self._readers[i] is None:
          self._readers[i] = open_shard(self._shards[i].path)
    return self._readers[i]

  def __getitem__(self, index) -> bytes:
    index = operator.index(index)
    i = bisect.bisect_right(self._ends, index)
    position = self._shards[i].skip + index - (self._ends[i - 1] if i else 0)
    return self._reader(i).read([position])[0]

  def __getstate__(self):
    state = self.__dict__.copy()
    state['_readers'] = [None] * len(self._shards)
    del state['_lock']
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()


def record_files_source(builder: tfds.core.DatasetBuilder, split: BuiltSplit):
  """`builder.as_data_source(split)`, reading its records through `RecordFiles`."""
  source = builder.as_data_source(split=split.tfds_split)
  source.data_source = RecordFiles(split)
  return source


class ShardedRecords(Sequence):
  """A split's decoded records by index, whose read errors name the shard file and record.

  Wraps a TFDS data source (`builder.as_data_source(split)`); pickles with it,
  so Grain's worker processes read through it too. With `parse`, reads the
  raw records under it (`source.data_source`) and decodes them with `parse`
  instead of TFDS's generic decoding (`records.parse_row`).
  """

  def __init__(
      self,
      source: Sequence[dict[str, Any]],
      split: BuiltSplit,
      parse: Callable[[bytes], dict[str, Any]] | None = None,
  ):
    if len(source) != sum(shard.take for shard in split.shards):
      raise ValueError(
          f'{split.name}: the data source has {len(source)} records but its '
          f'shards list {sum(s.take for s in split.shards)}.'
      )
    self._source = source
    self._parse = parse
    self.split = split

  def __len__(self) -> int:
    return len(self._source)

  @property
  def data_source(self) -> Sequence[dict[str, Any]]:
    """The TFDS data source read (its `data_source` attribute reads the raw records)."""
    return self._source

  def __getitem__(self, index):
    index = operator.index(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f'record {index} of {self.split.name}, which has {len(self)} records')
    index %= len(self)
    try:
      if self._parse is None:
        return self._source[index]
      return self._parse(self._source.data_source[index])
    except Exception as e:  # pylint: disable=broad-except  (any failure is this record's)
      shard, position = self.locate(index)
      raise DatasetShardError(
          f'Cannot read record {index} of {self.split.name} (TFDS split '
          f'{self.split.tfds_split!r}): record {position} of {shard.num_records} in shard file '
          f'{shard.path}: {type(e).__name__}: {e}\n{self.split.remedy()}'
      ) from e

  def locate(self, index: int) -> tuple[Shard, int]:
    """`(shard, record index within the shard file)` of the split's record `index`."""
    for shard in self.split.shards:
      if index < shard.take:
        return shard, shard.skip + index
      index -= shard.take
    raise IndexError(f'record index beyond the {len(self)} records of {self.split.name}')


class FrameSequence(Sequence):
  """One modality's frames of a clip: `[t]` reads frame `t`'s record, and only it.

  Checks that the record read is that frame (its `sample_id`, `frame` and
  modality), so a dataset whose rows are not where its clip table says stops
  with an error instead of training on other clips' frames.
  """

  def __init__(
      self, frames: ShardedRecords, positions: np.ndarray, sample_id: bytes, modality: str
  ):
    self._frames = frames
    self._positions = positions
    self._sample_id = sample_id
    self._modality = modality

  def __len__(self) -> int:
    return len(self._positions)

  def __getitem__(self, t):
    t = operator.index(t)
    row = self._frames[int(self._positions[t])]
    if (
        row['sample_id'] != self._sample_id
        or row['frame'] != t % len(self)
        or len(row[self._modality]) != 1
    ):
      raise DatasetShardError(
          f'{self._frames.split.name}: the clip table places {self._modality} frame {t} of '
          f'{self._sample_id!r} at frame record {int(self._positions[t])}, which holds '
          f"frame {row['frame']} of {row['sample_id']!r}. {self._frames.split.remedy()}"
      )
    return row[self._modality][0]


class ClipRecords(Sequence):
  """A split's clips by index: the clip-table row, with `rgb`/`depth` as `FrameSequence`s.

  Reading a clip reads its small clip-table row; a frame's bytes are read when
  the pipeline takes that frame, so a clip costs the frames it samples, of the
  modalities it decodes. Pickles (for Grain's worker processes) with the two
  record sets it reads.

  Attributes:
    clip_table: the clip-table rows, by clip index.
    frames: the frame rows of the split's atomic splits, concatenated.
    split: the clip table's `BuiltSplit` (`frames.split` is the frame rows').
  """

  def __init__(
      self,
      clips: ShardedRecords,
      frames: ShardedRecords,
      clip_counts: Sequence[int],
      frame_counts: Sequence[int],
  ):
    """`clip_counts`/`frame_counts`: rows of each atomic split, in the split expression's order.

    A clip row lists its frames' rows within its own atomic split's frame
    rows; offsetting them by the frame rows of the atomic splits before it
    makes them indices into `frames`.
    """
    self.clip_table = clips
    self.frames = frames
    self.split = clips.split
    self._clip_ends = np.cumsum(clip_counts)
    self._frame_starts = np.concatenate([[0], np.cumsum(frame_counts)[:-1]]).astype(np.int64)

  def __len__(self) -> int:
    return len(self.clip_table)

  def __getitem__(self, index) -> dict[str, Any]:
    row = dict(self.clip_table[index])
    index = operator.index(index) % len(self)
    offset = self._frame_starts[np.searchsorted(self._clip_ends, index, side='right')]
    for modality in records_lib.stored_modalities(row):
      row[modality] = FrameSequence(
          self.frames, row.pop(f'{modality}_records') + offset, row['sample_id'], modality
      )
    return row


def _built_split(
    builder: tfds.core.DatasetBuilder, tfds_split: str, *, name: str, rebuild_command: str
) -> BuiltSplit:
  return BuiltSplit(
      name=name,
      tfds_split=tfds_split,
      version_dir=os.fspath(builder.data_dir),
      rebuild_command=rebuild_command,
      shards=tuple(
          Shard(
              path=os.fspath(f.filename), skip=f.skip, take=f.take, num_records=f.examples_in_shard
          )
          for f in builder.info.splits[tfds_split].file_instructions
      ),
  )


def open_split(
    builder: tfds.core.DatasetBuilder, tfds_split: str, *, name: str, rebuild_command: str
) -> ClipRecords:
  """The clips of `tfds_split` of a built dataset, after `check_shards` passed on its files.

  Args:
    builder: the built dataset (`tfds.builder_from_directory`).
    tfds_split: a TFDS split expression over clip-table splits, e.g. `'train'`
      or `'view1+view2'`; their frame rows are read from the matching
      `records.frames_split`s.
    name: the split as the user knows it, for messages.
    rebuild_command: what rebuilds the dataset (`rebuild_command`), for messages.

  Raises:
    DatasetShardError: a shard file is missing or does not open with the
      record count the metadata lists, or the dataset has no frame rows (a
      build of the version-1 layout, which held the frames in the clip rows).
  """
  parts = tfds_split.split('+')
  frame_parts = [records_lib.frames_split(p) for p in parts]
  missing = [p for p in frame_parts if p not in builder.info.splits]
  if missing:
    raise DatasetShardError(
        f'{name}: {builder.data_dir} has no frame record split {missing[0]!r}: it was built '
        f'with an older record layout (frames inside the clip rows). Rebuild it with '
        f'`{rebuild_command}` (a new version folder is written beside the old one).'
    )
  splits = {}
  for what, expression in (('clips', tfds_split), ('frames', '+'.join(frame_parts))):
    splits[what] = _built_split(
        builder,
        expression,
        name=name if what == 'clips' else f'{name} (frame rows)',
        rebuild_command=rebuild_command,
    )
    check_shards(splits[what])
  return ClipRecords(
      clips=ShardedRecords(
          record_files_source(builder, splits['clips']), splits['clips'], records_lib.parse_row
      ),
      frames=ShardedRecords(
          record_files_source(builder, splits['frames']), splits['frames'], records_lib.parse_row
      ),
      clip_counts=[builder.info.splits[p].num_examples for p in parts],
      frame_counts=[builder.info.splits[p].num_examples for p in frame_parts],
  )
