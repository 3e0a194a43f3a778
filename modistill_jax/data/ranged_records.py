"""ArrayRecord shard files read by bounded byte ranges: on `gs://`, one GET of a record's bytes.

ArrayRecord's own reader opens a `gs://` file through the google-cloud-cpp
client, which fetches a record with a ranged GET open at its end (from the
record to the end of the shard file) and stops reading once it has the record.
GCS starts sending the rest of the file all the same: measured through the test
emulator, 690-865x the bytes of the frames a training clip decodes
(docs/performance.md, "Bytes from storage per training clip"), and no option
of the reader bounds the range. `RangedShardReader` reads a shard instead with
requests whose both ends are known, through gcsfs (the client every `gs://`
path of the project goes through):

* when the shard is first read, its postscript (the start of its last 64 KiB
  block) and then its footer: the offset of every chunk of records;
* for each record, the bytes of its chunk, `[offset, next chunk's offset)`,
  which it decodes here.

The formats decoded are Riegeli's (chunks, the block headers that interrupt
them every 64 KiB, simple chunks of records, uncompressed or Zstd) and
ArrayRecord's footer (its `layout.proto`: `RiegeliPostscript`,
`RiegeliFooterMetadata`, `ArrayRecordFooter`), both as the TFDS builders write
them (`group_size:1,transpose:false,...,zstd:3`). What this reader does not
check is Riegeli's HighwayHash of each chunk (no Python implementation is at
hand): it checks the chunk's type, its sizes and its record count against the
footer, and a damaged Zstd frame or record fails to decode or to parse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import struct
import threading

import numpy as np
import zstandard

BLOCK_SIZE = 1 << 16
BLOCK_HEADER_SIZE = 24
CHUNK_HEADER_SIZE = 40
# Bytes of the last block read for the postscript chunk (three ~15-byte records).
POSTSCRIPT_READ = 4096
# Chunk types (Riegeli's records file format).
SIMPLE_CHUNK = ord('r')
TRANSPOSED_CHUNK = ord('t')
# `compression_type` of a simple chunk's buffers.
UNCOMPRESSED, ZSTD, BROTLI = 0, ord('z'), ord('b')


class RecordFormatError(ValueError):
  """Bytes of a shard file are not the ArrayRecord layout this reader decodes."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
  """`(value, position after it)` of the little-endian base-128 integer at `data[pos]`."""
  value = shift = 0
  while True:
    if pos >= len(data):
      raise RecordFormatError('a varint runs past the end of its buffer')
    byte = data[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, pos
    shift += 7


def _proto_integers(message: bytes) -> dict[int, int | bytes]:
  """Field number -> value of a serialized proto's varint and length-delimited fields."""
  fields, pos = {}, 0
  while pos < len(message):
    key, pos = _varint(message, pos)
    if key & 7 == 0:
      fields[key >> 3], pos = _varint(message, pos)
    elif key & 7 == 2:
      size, pos = _varint(message, pos)
      fields[key >> 3], pos = message[pos : pos + size], pos + size
    else:
      raise RecordFormatError(f'unexpected wire type {key & 7} in an ArrayRecord footer proto')
  return fields


def without_block_headers(data: bytes, start: int) -> bytes:
  """`data`, the file's bytes from offset `start`, without the 24-byte block headers in it.

  Riegeli interrupts the chunks with a block header at every multiple of 64
  KiB of the file; the header belongs to neither chunk.
  """
  end = start + len(data)
  if start + (-start) % BLOCK_SIZE >= end:
    return data  # no block boundary inside
  parts, pos = [], start
  while pos < end:
    if pos % BLOCK_SIZE == 0:
      pos += BLOCK_HEADER_SIZE
      continue
    stop = min(end, pos - pos % BLOCK_SIZE + BLOCK_SIZE)
    parts.append(data[pos - start : stop - start])
    pos = stop
  return b''.join(parts)


def _decompressed(buffer: bytes, compression: int) -> bytes:
  if compression == UNCOMPRESSED:
    return buffer
  size, pos = _varint(buffer, 0)
  if compression == ZSTD:
    data = zstandard.ZstdDecompressor().decompress(buffer[pos:], max_output_size=size)
  else:
    name = 'Brotli' if compression == BROTLI else f'type {compression}'
    raise RecordFormatError(f'chunk compressed with {name}; this reader decodes Zstd only')
  if len(data) != size:
    raise RecordFormatError(f'a chunk buffer decompressed to {len(data)} bytes, not {size}')
  return data


def chunk_records(chunk: bytes) -> list[bytes]:
  """The records of one simple chunk: its header, then its data, block headers removed."""
  if len(chunk) < CHUNK_HEADER_SIZE:
    raise RecordFormatError(f'a chunk of {len(chunk)} bytes is shorter than its header')
  _, data_size, _, type_and_count, decoded_size = struct.unpack_from('<5Q', chunk)
  chunk_type, num_records = type_and_count & 0xFF, type_and_count >> 8
  if chunk_type != SIMPLE_CHUNK:
    kind = 'a transposed chunk' if chunk_type == TRANSPOSED_CHUNK else f'chunk type {chunk_type}'
    raise RecordFormatError(f'{kind} where a simple chunk of records was expected')
  data = chunk[CHUNK_HEADER_SIZE : CHUNK_HEADER_SIZE + data_size]
  if len(data) != data_size:
    raise RecordFormatError(f'a chunk holds {len(data)} bytes of data, its header {data_size}')
  sizes_size, pos = _varint(data, 1)
  sizes = _decompressed(data[pos : pos + sizes_size], data[0])
  values = _decompressed(data[pos + sizes_size :], data[0])
  if len(values) != decoded_size:
    raise RecordFormatError(f'a chunk decoded to {len(values)} bytes, its header {decoded_size}')
  records, pos, start = [], 0, 0
  for _ in range(num_records):
    size, pos = _varint(sizes, pos)
    records.append(values[start : start + size])
    start += size
  if start != decoded_size or pos != len(sizes):
    raise RecordFormatError("a chunk's record sizes do not add up to its decoded size")
  return records


@dataclasses.dataclass(frozen=True)
class ShardIndex:
  """Where a shard's records are: its chunks' offsets, and the first record of each.

  Attributes:
    chunk_starts: file offset of each chunk of records, then the footer's (the
      end of the last chunk).
    first_records: index of each chunk's first record, then the record count.
  """

  chunk_starts: np.ndarray
  first_records: np.ndarray

  @property
  def num_records(self) -> int:
    return int(self.first_records[-1])


def read_index(read_range: Callable[[int, int], bytes], size: int) -> ShardIndex:
  """The index of an ArrayRecord file of `size` bytes, from two reads: postscript, footer.

  The postscript chunk begins the file's last block (ArrayRecord's layout), the
  footer chunk runs from the offset the postscript gives to that block.
  """
  if size < BLOCK_SIZE or size % BLOCK_SIZE:
    raise RecordFormatError(
        f'{size} bytes is not a whole number of 64 KiB blocks, as an ArrayRecord file is'
    )
  postscript_start = size - BLOCK_SIZE  # the postscript chunk starts the last block
  # The postscript's records are small: its chunk fits the block's first POSTSCRIPT_READ bytes.
  head = read_range(postscript_start, postscript_start + POSTSCRIPT_READ)
  (data_size,) = struct.unpack_from('<Q', head, BLOCK_HEADER_SIZE + 8)
  if BLOCK_HEADER_SIZE + CHUNK_HEADER_SIZE + data_size > len(head):
    head = read_range(postscript_start, size)
  postscript = chunk_records(without_block_headers(head, postscript_start))
  footer_start = _proto_integers(postscript[0]).get(1)
  if not isinstance(footer_start, int) or not 0 < footer_start < postscript_start:
    raise RecordFormatError(f'the postscript gives footer offset {footer_start!r}')
  footer = chunk_records(
      without_block_headers(read_range(footer_start, postscript_start), footer_start)
  )
  metadata = _proto_integers(_proto_integers(footer[0]).get(1, b''))
  chunks = [_proto_integers(record) for record in footer[1:]]
  if metadata.get(2) != len(chunks):
    raise RecordFormatError(f'the footer lists {len(chunks)} chunks, its metadata {metadata}')
  chunk_starts = np.array([c.get(1, 0) for c in chunks] + [footer_start], np.int64)
  first_records = np.cumsum([0] + [c.get(3, 0) for c in chunks], dtype=np.int64)
  if np.any(np.diff(chunk_starts) <= 0) or first_records[-1] != metadata.get(3):
    raise RecordFormatError("the footer's chunk offsets or record counts are inconsistent")
  return ShardIndex(chunk_starts, first_records)


class RangedShardReader:
  """One ArrayRecord file's records by index, each read with one bounded range request.

  `read_range(start, end)` returns the file's bytes `[start, end)`; `size` is
  the file's length. The index is read on the first `read`, once. Thread-safe.
  """

  def __init__(self, read_range: Callable[[int, int], bytes], size: int):
    self._read_range = read_range
    self._size = size
    self._index: ShardIndex | None = None
    self._lock = threading.Lock()

  def index(self) -> ShardIndex:
    if self._index is None:
      with self._lock:
        if self._index is None:
          self._index = read_index(self._read_range, self._size)
    return self._index

  def num_records(self) -> int:
    return self.index().num_records

  def read(self, positions: Sequence[int]) -> list[bytes]:
    """The records at `positions` (indices within the file), one request each."""
    index = self.index()
    records = []
    for position in positions:
      if not 0 <= position < index.num_records:
        raise IndexError(f'record {position} of a file of {index.num_records} records')
      chunk = int(np.searchsorted(index.first_records, position, side='right')) - 1
      start, end = int(index.chunk_starts[chunk]), int(index.chunk_starts[chunk + 1])
      in_chunk = chunk_records(without_block_headers(self._read_range(start, end), start))
      expected = int(index.first_records[chunk + 1] - index.first_records[chunk])
      if len(in_chunk) != expected:
        raise RecordFormatError(f'chunk at {start} holds {len(in_chunk)} records, not {expected}')
      records.append(in_chunk[position - int(index.first_records[chunk])])
    return records


def gcs_reader(path: str) -> RangedShardReader:
  """A `RangedShardReader` of a `gs://` file, through gcsfs (`Range: bytes=a-b` GETs)."""
  import fsspec  # pylint: disable=g-import-not-at-top  (gcsfs: only for gs:// datasets)

  filesystem = fsspec.filesystem('gs')
  return RangedShardReader(
      lambda start, end: filesystem.cat_file(path, start=start, end=end), filesystem.size(path)
  )
