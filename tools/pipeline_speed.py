"""Measures the input pipeline on NTU-size records written to disk, in both record layouts.

    python -m tools.pipeline_speed                  # both stages, 0 workers
    python -m tools.pipeline_speed --workers=0,2 --seconds=30 --clips=24
    python -m tools.pipeline_speed --gcs_emulator   # bytes read from gs:// too

Run from the repository's root folder. Writes `--clips` clips of 70 to 100
frames at 224x224 (NTU RGB+D's length and the reference's size) into a
temporary folder twice, as TFDS ArrayRecord datasets: once in the current
layout (`records.py`: clip table, one record per frame and modality, depth as
8-bit codes) and once in the version-1 layout it replaced (one record per clip
holding every frame, depth as jet-coloured PNG), kept here, out of the
library, only to compare against. Then, for an RGB-only stage (steps 1-RGB
and 4) and an RGB+depth stage (steps 2 and 3), reading from those files:

* the training pipeline's clips/s (`pipeline.train_iterator`, local batch 32),
  and per usable core;
* the decode bound: one thread decoding the frames a clip samples, times the
  cores (the most any pipeline can deliver);
* bytes read per training clip (counted under the TFDS data source, the raw
  ArrayRecord records) against the bytes of the encoded frames the clip
  decodes, and the bytes the process read from storage for them (the read
  system calls' bytes, `/proc/self/io` rchar, where Linux has it), through
  the pipeline's readers (`shards.RecordFiles`) and through TFDS's own;
* with `--gcs_emulator`, the same clips read from `gs://`: the current-layout
  dataset is copied into a bucket of the test GCS emulator
  (`tests/gcs_emulator.py`, which needs the `test` extra), and the bytes its
  downloads serve, the requests and this process's CPU time per training
  clip are measured, through the pipeline's readers (`ranged_records`,
  bounded ranges) and through TFDS's (ArrayRecord's GCS reader);
* CPU time per training clip in one thread (reading, decoding, resizing,
  flipping: `pipeline`'s per-clip work, process CPU time, so other load on the
  machine does not inflate it), at `--size` and, for RGB, at half of it
  decoded in full or at reduced size (`input.reduced_decoding`): what sizes a
  host's cores per accelerator.

The clips are indexed as a split of `--split-size` records (NTU RGB+D's
cross-subject training split by default; index `i` reads clip `i % clips`),
because Grain's index shuffle costs more per record the smaller the split.
Frames are photographic-like: a lit room with smooth gradients, a textured
floor and wall, a moving figure and sensor noise, so JPEG and PNG sizes and
decode times are those of camera frames rather than of flat colours or of pure
noise. The files were just written, so they are read from the page cache.
"""

from __future__ import annotations

from collections.abc import Sequence
import contextlib
import dataclasses
import os
import tempfile
import threading
import time
from typing import Any
import uuid

from absl import app
from absl import flags
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from modistill_jax.data import jet
from modistill_jax.data import pipeline
from modistill_jax.data import records
from modistill_jax.data import sampling
from modistill_jax.data import shards

SPLIT = 'train'
# The current-layout dataset's version folder under the folder the datasets are written to.
CURRENT = os.path.join('speed_current', '2.0.0')
STAGES = {'rgb': ('rgb',), 'rgb+depth': ('rgb', 'depth')}


def synthetic_clip(
    rng: np.random.Generator, index: int, num_frames: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
  """`(rgb (T, H, W, 3) uint8, depth (T, H, W) mm)`: a textured lit room, a figure walking."""
  t = np.arange(num_frames, dtype=np.float32)[:, None, None]
  y, x = np.mgrid[:size, :size].astype(np.float32)
  horizon = 0.55 * size
  floor = y > horizon
  # Texture: fixed random waves (wood grain, fabric, plaster) and fine grain, then sensor noise.
  texture = rng.normal(0, 4, (size, size)).astype(np.float32)
  for octave in range(4):
    kx, ky = rng.uniform(0.02, 0.3, 2) * 2**octave
    texture += np.sin(kx * x + ky * y + rng.uniform(0, 2 * np.pi)) * 12 / (octave + 1)
  wall = np.stack([120 + 60 * x / size, 110 + 40 * y / size, 100 + 30 * (1 - x / size)], -1)
  ground = np.stack([90 + 50 * (y - horizon) / size, 70 + 30 * x / size, 50 + 20 * y / size], -1)
  room = np.where(floor[..., None], ground, wall) + texture[..., None]
  light = 0.75 + 0.25 * np.exp(-((x - 0.3 * size) ** 2 + (y - 0.2 * size) ** 2) / (0.5 * size) ** 2)
  room = room * light[..., None]
  centre = size * (0.2 + 0.6 * t / max(num_frames - 1, 1))
  body = ((x - centre) ** 2 / (0.08 * size) ** 2 + (y - 0.5 * size) ** 2 / (0.3 * size) ** 2) < 1
  head = ((x - centre) ** 2 + (y - 0.17 * size) ** 2) < (0.05 * size) ** 2
  figure = body | head
  shirt = np.array([150, 50 + 10 * (index % 7), 40], np.float32) + texture[..., None] * 0.5
  rgb = np.where(figure[..., None], shirt * light[..., None], room)
  rgb = np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)
  wall_mm = 3500.0 + 500.0 * np.abs(x - size / 2) / size
  floor_mm = 1500.0 + 2000.0 * (size - y) / (size - horizon)
  depth_mm = np.where(
      figure, 2500.0 - 100 * np.sin(x / size * np.pi), np.where(floor, floor_mm, wall_mm)
  )
  depth_mm = depth_mm + rng.normal(0, 8, depth_mm.shape)
  depth_mm = np.where((x < 0.05 * size) | (rng.random(depth_mm.shape) < 0.01), 0.0, depth_mm)
  return rgb, depth_mm


def old_layout_features(class_names: Sequence[str]) -> tfds.features.FeaturesDict:
  """The version-1 clip record: every frame in the clip's one record, jet PNG depth."""
  frames = tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_))
  return tfds.features.FeaturesDict(
      {
          'rgb': frames,
          'depth': frames,
          'label': tfds.features.ClassLabel(names=list(class_names)),
          'sample_id': tfds.features.Text(),
          'num_frames': tfds.features.Scalar(dtype=np.int32),
      }
  )


def write_datasets(
    root: str, num_clips: int, size: int, seed: int = 0, version_1: bool = True
) -> tuple[shards.ClipRecords, Sequence[dict] | None]:
  """Writes the clips in both layouts under `root`; returns `(current, version 1)` readers.

  Without `version_1`, writes the current layout only (version 1 is None).
  """
  rng = np.random.default_rng(seed)
  examples, old_rows = [], []
  for i in range(num_clips):
    num_frames = int(rng.integers(70, 101))
    rgb, depth_mm = synthetic_clip(rng, i, num_frames, size)
    example = records.make_example(
        rgb=rgb,
        depth_code=jet.depth_to_code(depth_mm),
        label=i % 10,
        sample_id=f'speed{i:04d}',
        rgb_frames_raw=num_frames,
        depth_frames_raw=num_frames,
    )
    examples.append(example)
    if version_1:
      old_rows.append(
          (
              example['sample_id'],
              {
                  'rgb': example['rgb'],
                  'label': i % 10,
                  'sample_id': example['sample_id'],
                  'num_frames': num_frames,
                  'depth': [records.encode_png(f) for f in jet.depth_to_jet(depth_mm)],
              },
          )
      )
  class_names = [f'class{i}' for i in range(10)]
  tfds.dataset_builders.store_as_tfds_dataset(
      name='speed_current',
      version='2.0.0',
      features=records.clip_features(class_names),
      split_datasets=records.split_rows(examples, SPLIT),
      data_dir=root,
      file_format=records.FILE_FORMAT,
  )
  current = tfds.builder_from_directory(os.path.join(root, 'speed_current', '2.0.0'))
  current = shards.open_split(current, SPLIT, name='speed_current', rebuild_command='-')
  if not version_1:
    return current, None
  tfds.dataset_builders.store_as_tfds_dataset(
      name='speed_old',
      version='1.0.0',
      features=old_layout_features(class_names),
      split_datasets={SPLIT: old_rows},
      data_dir=root,
      file_format=records.FILE_FORMAT,
  )
  old = tfds.builder_from_directory(os.path.join(root, 'speed_old', '1.0.0'))
  return current, old.as_data_source(split=SPLIT)


class CountingReads:
  """Wraps the raw record reader under a TFDS data source: which records, and their bytes."""

  def __init__(self, reader):
    self._reader = reader
    self._lock = threading.Lock()
    self.indices: list[int] = []
    self.num_bytes = 0

  def __len__(self) -> int:
    return len(self._reader)

  def _count(self, index: int, record: bytes) -> bytes:
    with self._lock:
      self.indices.append(index)
      self.num_bytes += len(record)
    return record

  def __getitem__(self, index):
    return self._count(index, self._reader[index])

  def __getitems__(self, indices):
    return [self._count(i, r) for i, r in zip(indices, self._reader.__getitems__(indices))]

  def reset(self) -> None:
    with self._lock:
      self.indices, self.num_bytes = [], 0


def count_reads(tfds_source) -> CountingReads:
  """Puts a `CountingReads` under a TFDS ArrayRecord data source (`builder.as_data_source`)."""
  counter = CountingReads(tfds_source.data_source)
  tfds_source.data_source = counter
  return counter


def tfds_read(clips: shards.ClipRecords, version_dir: str) -> shards.ClipRecords:
  """`clips` of the same files, read through the ArrayRecord readers TFDS opens (32 KiB reads)."""
  builder = tfds.builder_from_directory(version_dir)
  sharded = [
      shards.ShardedRecords(
          builder.as_data_source(split=x.split.tfds_split), x.split, records.parse_row
      )
      for x in (clips.clip_table, clips.frames)
  ]
  return shards.ClipRecords(sharded[0], sharded[1], [len(sharded[0])], [len(sharded[1])])


@dataclasses.dataclass(frozen=True)
class Repeated(Sequence):
  """`clips[i % len(clips)]` for `i < size`: a few clips indexed as a split of `size` records."""

  clips: Sequence[Any]
  size: int

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index):
    return self.clips[index % len(self.clips)]


@dataclasses.dataclass(frozen=True)
class _OldLayoutClip:
  """The version-1 pipeline's training map: the whole record read, the sampled frames decoded.

  Its jet PNG depth decodes as 3-channel images (`records.decode_image`); the
  rest is `pipeline._TrainClip`'s sampling, flip and stacking.
  """

  records: Sequence[dict] = dataclasses.field(repr=False)
  num_frames: int
  seed: int
  modalities: tuple[str, ...]

  def __call__(self, epoch_and_index: tuple[int, int]) -> dict[str, np.ndarray]:
    epoch, index = epoch_and_index
    rng = np.random.default_rng([self.seed, epoch, index])
    record = self.records[index]
    indices = sampling.train_indices(len(record['rgb']), self.num_frames, rng, 0.5)
    flip = rng.random() < 0.5
    clips = {
        m: np.stack([records.decode_image(record[m][i]) for i in indices]) for m in self.modalities
    }
    if flip:
      clips = {m: np.ascontiguousarray(c[:, :, ::-1]) for m, c in clips.items()}
    return {**clips, 'label': np.int32(record['label']), 'index': np.int32(index)}


def measure_old_layout_clips_per_s(
    old_records: Sequence[dict],
    *,
    modalities: Sequence[str],
    num_frames: int = 5,
    batch_size: int = 32,
    seconds: float = 10.0,
    worker_count: int = 0,
) -> float:
  """The version-1 layout through the same Grain stages as `pipeline.train_iterator`."""
  import grain  # pylint: disable=import-outside-toplevel  (only this comparison needs it here)

  ds = grain.MapDataset.range(len(old_records)).seed(0).shuffle().repeat()
  ds = ds.map_with_index(pipeline._EpochOf(len(old_records)))  # pylint: disable=protected-access
  ds = ds.map(_OldLayoutClip(old_records, num_frames, 0, tuple(modalities)))
  ds = pipeline._decoded_and_batched(  # pylint: disable=protected-access
      ds, batch_size, worker_count, worker_buffer_size=2, drop_remainder=True
  )
  return pipeline.timed_clips_per_s(iter(ds), seconds)


def measure_old_layout_decode_clips_per_s(
    old_records: Sequence[dict],
    *,
    modalities: Sequence[str],
    num_frames: int = 5,
    seconds: float = 10.0,
) -> float:
  """One thread decoding what a version-1 clip samples (jet PNG depth), clips/s."""
  clips, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    record = old_records[clips % len(old_records)]
    for i in sampling.uniform_indices(len(record['rgb']), num_frames):
      for modality in modalities:
        records.decode_image(record[modality][i])
    clips += 1
  return clips / (time.perf_counter() - start)


def storage_bytes_read() -> int | None:
  """This process's bytes read by read system calls so far (`/proc/self/io` rchar), or None."""
  try:
    with open('/proc/self/io') as f:
      return next(int(line.split()[1]) for line in f if line.startswith('rchar:'))
  except OSError:
    return None


def read_clips(
    read: Sequence[dict], *, modalities: Sequence[str], num_frames: int, num_clips: int, frame_bytes
) -> int:
  """Reads `num_clips` clips as `pipeline._TrainClip` does; returns the frames' encoded bytes.

  A clip's record(s), then its sampled frames of `modalities`.
  `frame_bytes(clip, modality, t)` gives a frame's encoded size without
  counting a read.
  """
  decoded = 0
  rng = np.random.default_rng(0)
  for k in range(num_clips):
    clip = read[k % len(read)]
    indices = sampling.train_indices(len(clip['rgb']), num_frames, rng, 0.5)
    for modality in modalities:
      for t in indices:
        _ = clip[modality][t]
        decoded += frame_bytes(k % len(read), modality, t)
  return decoded


def bytes_per_clip(
    read: Sequence[dict],
    counters: Sequence[CountingReads],
    *,
    modalities: Sequence[str],
    num_frames: int = 5,
    num_clips: int = 64,
    frame_bytes=None,
) -> tuple[float, float, float | None]:
  """`(record bytes, bytes from storage, encoded bytes of the frames decoded)` per training clip.

  Means over `num_clips` clips read by `read_clips`. Bytes from storage is
  rchar's increase (None without `/proc/self/io`).
  """
  for counter in counters:
    counter.reset()
  before = storage_bytes_read()
  decoded = read_clips(
      read,
      modalities=modalities,
      num_frames=num_frames,
      num_clips=num_clips,
      frame_bytes=frame_bytes,
  )
  after = storage_bytes_read()
  storage = (after - before) / num_clips if before is not None and after is not None else None
  return sum(c.num_bytes for c in counters) / num_clips, storage, decoded / num_clips


def upload_tree(local: str, remote: epath.Path) -> None:
  """Copies the folder `local` to `remote` (e.g. a `gs://` folder), file by file."""
  for root, _, files in os.walk(local):
    for name in files:
      path = os.path.join(root, name)
      target = remote / os.path.relpath(path, local)
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_bytes(epath.Path(path).read_bytes())


def served_per_clip(
    read: Sequence[dict],
    downloads,
    *,
    modalities: Sequence[str],
    num_frames: int = 5,
    num_clips: int = 32,
    frame_bytes=None,
) -> tuple[float, float, float, float]:
  """`(requests, bytes served, frames' encoded bytes, CPU seconds)` per training clip on gs://.

  `read`'s clips come from a GCS emulator whose `downloads()` counts the
  download requests it answered and their bytes (`tests/gcs_emulator.py`);
  open its readers first (`open_readers`), so that no shard's index is read
  while counting. CPU seconds are this process's (the client's requests and
  decoding of the chunks, not the emulator's work), reading in one thread.
  """
  before = downloads()
  start = time.process_time()
  decoded = read_clips(
      read,
      modalities=modalities,
      num_frames=num_frames,
      num_clips=num_clips,
      frame_bytes=frame_bytes,
  )
  cpu = time.process_time() - start
  served = downloads() - before
  return (
      served.requests / num_clips,
      served.bytes / num_clips,
      decoded / num_clips,
      cpu / num_clips,
  )


def open_on_gcs(root: str, bucket: str, downloads) -> tuple[shards.ClipRecords, str, Any]:
  """The current-layout dataset under `root`, copied into `bucket` (`gs://...`), opened.

  Returns `(its clips, its version folder on gs://, what opening them served)`:
  the `downloads()` of opening the split, checking its shard files and reading
  one record of each, so each file's index. This process's `gs://` clients
  must already point at the emulator whose `downloads` counts what it serves
  (`tests/gcs_emulator.py`).
  """
  version_dir = f'{bucket}/{CURRENT}'
  upload_tree(os.path.join(root, CURRENT), epath.Path(version_dir))
  before = downloads()
  builder = tfds.builder_from_directory(version_dir)
  clips = shards.open_split(builder, SPLIT, name='speed_current on gs://', rebuild_command='-')
  open_readers(clips)
  return clips, version_dir, downloads() - before


def open_readers(clips: shards.ClipRecords) -> None:
  """Opens the reader of every shard file `clips` reads, by reading each file's first record.

  A reader reads its file's index when it opens (`ranged_records` on gs://, at
  its first read).
  """
  for records_read in (clips.clip_table, clips.frames):
    first = 0
    for shard in records_read.split.shards:
      _ = records_read.data_source.data_source[first]
      first += shard.take


def cpu_seconds_per_clip(
    read: Sequence[dict],
    *,
    modalities: Sequence[str],
    image_size: tuple[int, int],
    reduced_decoding: bool = False,
    num_clips: int = 64,
) -> float:
  """Process CPU seconds of one training clip's read, decode, resize and flip, in one thread."""
  clip = pipeline._TrainClip(  # pylint: disable=protected-access  (the pipeline's own work)
      read, 5, image_size, 0, 0.5, True, tuple(modalities), reduced_decoding
  )
  clip((0, 0))  # opens the readers
  start = time.process_time()
  for k in range(num_clips):
    clip((1, k % len(read)))
  return (time.process_time() - start) / num_clips


def define_flags() -> None:
  """The command line's flags, defined only when it runs (tests import this module beside
  other commands' flags)."""
  flags.DEFINE_integer('clips', 16, 'Distinct clips written (70 to 100 frames each).')
  flags.DEFINE_integer(
      'split_size', 40_320, 'Records the split is indexed as (NTU RGB+D cross-subject train).'
  )
  flags.DEFINE_integer('size', 224, 'Frame height and width.')
  flags.DEFINE_integer('batch_size', 32, 'Clips per batch of the training pipeline.')
  flags.DEFINE_list('workers', ['0'], 'Grain worker processes to measure, e.g. 0,1,2.')
  flags.DEFINE_float('seconds', 20.0, 'Seconds each rate is measured over.')
  flags.DEFINE_string('dir', None, 'Where to write the datasets (default: a temporary folder).')
  flags.DEFINE_bool(
      'gcs_emulator',
      False,
      'Also read the clips from gs:// on the test GCS emulator (tests/gcs_emulator.py, the '
      '`test` extra) and count the bytes and requests it serves per training clip.',
  )
  flags.DEFINE_integer('gcs_clips', 16, 'Training clips read from gs:// per reader and stage.')


def worker_counts(values: Sequence[str]) -> list[int]:
  """`--workers` as integers, or a usage error naming the value that is not one."""
  try:
    counts = [int(v) for v in values]
  except ValueError as e:
    raise app.UsageError(f'--workers={",".join(values)}: not a list of integers ({e}).') from e
  if not counts or min(counts) < 0:
    raise app.UsageError(f'--workers={",".join(values)}: give worker counts of 0 or more.')
  return counts


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  args = flags.FLAGS
  workers_list = worker_counts(args.workers)

  with tempfile.TemporaryDirectory(dir=args.dir) as root, contextlib.ExitStack() as stack:
    start = time.perf_counter()
    current, old = write_datasets(root, args.clips, args.size)
    written = time.perf_counter() - start
    size_of = lambda name: sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, files in os.walk(os.path.join(root, name))
        for f in files
    )
    frames = sum(len(current.clip_table[i]['rgb_records']) for i in range(len(current)))
    cores = pipeline.usable_cores()
    print(
        f'{args.clips} clips, {frames} frames ({frames / args.clips:.0f} a clip) at '
        f'{args.size}x{args.size}, written in {written:.0f} s: current layout '
        f'{size_of("speed_current") / 2**20:.1f} MiB, version 1 {size_of("speed_old") / 2**20:.1f}'
        f' MiB; read as a {args.split_size}-record split; {cores} usable cores; '
        f'load {os.getloadavg()[0]:.2f}'
    )
    rgb_bytes = [[len(f) for f in current[i]['rgb']] for i in range(len(current))]
    depth_bytes = [[len(f) for f in current[i]['depth']] for i in range(len(current))]
    old_depth = [[len(f) for f in old[i]['depth']] for i in range(len(old))]
    print(
        f'mean frame: JPEG {np.mean(np.concatenate(rgb_bytes)) / 1024:.1f} KiB, depth PNG '
        f'{np.mean(np.concatenate(depth_bytes)) / 1024:.1f} KiB (version 1 jet PNG '
        f'{np.mean(np.concatenate(old_depth)) / 1024:.1f} KiB)'
    )
    counters = {
        'current': [
            count_reads(current.clip_table.data_source),
            count_reads(current.frames.data_source),
        ],
        'old': [count_reads(old)],
    }
    sizes = {'rgb': rgb_bytes, 'depth': depth_bytes}
    old_sizes = {'rgb': rgb_bytes, 'depth': old_depth}
    tfds_readers = tfds_read(current, os.path.join(root, CURRENT))
    if args.gcs_emulator:
      from tests import gcs_emulator  # pylint: disable=g-import-not-at-top  (the test extra)

      emulator = stack.enter_context(gcs_emulator.running_emulator())
      os.environ.update(emulator.env)
      gcs_emulator.reset_epath_backend_choice()
      bucket = emulator.create_bucket(f'speed-{uuid.uuid4().hex[:12]}')
      gcs_ranged, version_dir, opening = open_on_gcs(root, bucket, emulator.downloads)
      gcs_tfds = tfds_read(gcs_ranged, version_dir)
      open_readers(gcs_tfds)
      num_shards = len(current.clip_table.split.shards) + len(current.frames.split.shards)
      print(
          f'gs:// (GCS emulator): opening the split and its {num_shards} shard files through '
          f"the pipeline's readers: {opening.requests} downloads, {opening.bytes / 1024:.1f} KiB"
      )
    for stage, modalities in STAGES.items():
      read, storage, decoded = bytes_per_clip(
          current,
          counters['current'],
          modalities=modalities,
          frame_bytes=lambda c, m, t: sizes[m][c][t],
      )
      _, tfds_storage, _ = bytes_per_clip(
          tfds_readers,
          [],
          modalities=modalities,
          frame_bytes=lambda c, m, t: sizes[m][c][t],
      )
      old_read, _, old_decoded = bytes_per_clip(
          old,
          counters['old'],
          modalities=modalities,
          frame_bytes=lambda c, m, t: old_sizes[m][c][t],
      )
      print(
          f'[{stage}] bytes read per training clip: current {read / 1024:.0f} KiB for '
          f'{decoded / 1024:.0f} KiB of frames decoded ({read / decoded:.2f}x); version 1 '
          f'{old_read / 1024:.0f} KiB for {old_decoded / 1024:.0f} KiB '
          f'({old_read / old_decoded:.1f}x)'
      )
      if storage is not None:
        print(
            f'[{stage}] bytes from storage per training clip (rchar): {storage / 1024:.1f} KiB '
            f"({storage / decoded:.2f}x the frames decoded); through TFDS's readers "
            f'{tfds_storage / 1024:.1f} KiB ({tfds_storage / decoded:.2f}x)'
        )
      if args.gcs_emulator:
        (requests, served, decoded, gcs_cpu), (tfds_requests, tfds_served, _, tfds_cpu) = (
            served_per_clip(
                read,
                emulator.downloads,
                modalities=modalities,
                num_clips=args.gcs_clips,
                frame_bytes=lambda c, m, t: sizes[m][c][t],
            )
            for read in (gcs_ranged, gcs_tfds)
        )
        print(
            f'[{stage}] gs:// per training clip: {requests:.1f} requests, {served / 1024:.1f} KiB '
            f'served ({served / decoded:.2f}x the frames decoded), {gcs_cpu * 1e3:.2f} ms of '
            f"CPU; through TFDS's readers {tfds_requests:.1f} requests, "
            f'{tfds_served / 1024:.1f} KiB ({tfds_served / decoded:.1f}x), '
            f'{tfds_cpu * 1e3:.2f} ms of CPU'
        )
      size, half = (args.size, args.size), (args.size // 2, args.size // 2)
      cpu = cpu_seconds_per_clip(current, modalities=modalities, image_size=size)
      line = f'[{stage}] CPU per training clip, 1 thread: {cpu * 1e3:.2f} ms at {args.size}'
      if modalities == ('rgb',):
        full, reduced = (
            cpu_seconds_per_clip(
                current, modalities=modalities, image_size=half, reduced_decoding=r
            )
            for r in (False, True)
        )
        line += (
            f'; at {half[0]}: {full * 1e3:.2f} ms decoding in full, {reduced * 1e3:.2f} ms with '
            f'reduced_decoding ({full / reduced:.2f}x)'
        )
      print(line)
      for workers in workers_list:
        rate = pipeline.measure_clips_per_s(
            Repeated(current, args.split_size),
            image_size=(args.size, args.size),
            batch_size=args.batch_size,
            worker_count=workers,
            seconds=args.seconds,
            modalities=modalities,
        )
        old_rate = measure_old_layout_clips_per_s(
            Repeated(old, args.split_size),
            modalities=modalities,
            batch_size=args.batch_size,
            seconds=args.seconds,
            worker_count=workers,
        )
        print(
            f'[{stage}] pipeline, {workers} workers: current {rate:.1f} clips/s '
            f'({rate / cores:.1f} per core), version 1 {old_rate:.1f} clips/s '
            f'({old_rate / cores:.1f} per core): {rate / old_rate:.2f}x'
        )
      bound = pipeline.measure_decode_clips_per_s(
          current, seconds=args.seconds, modalities=modalities
      )
      old_bound = measure_old_layout_decode_clips_per_s(
          old, modalities=modalities, seconds=args.seconds
      )
      print(
          f'[{stage}] decode only, 1 thread: current {bound:.1f} clips/s (x {cores} cores = '
          f'{bound * cores:.1f}), version 1 {old_bound:.1f} clips/s (x {cores} = '
          f'{old_bound * cores:.1f})'
      )


if __name__ == '__main__':
  define_flags()
  app.run(main)
