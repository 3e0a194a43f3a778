"""Built TFDS clip records -> per-host uint8 batches for a data-parallel trainer.

Why Grain over TFDS ArrayRecord (`tfds.data_source`):

* Random access. A clip is a small clip-table row plus one record per frame
  and modality (`records.py`); a training example reads its row and the 5
  frames it samples, of the modalities the stage decodes, nothing else.
  Random access lets the pipeline shuffle the whole split globally and shard
  by index without reading the other hosts' records.
* Checkpointable iterators. A Grain iterator's position is a small JSON state
  (`get_state`/`set_state`), saved with the train state through Orbax
  (`grain.checkpoint.CheckpointSave(iterator)` / `CheckpointRestore(iterator)`
  as an item of the `ocp.CheckpointManager`), so a resumed run sees exactly the
  batches an uninterrupted run would have. tf.data can only do this by
  serialising buffers.
* Determinism independent of parallelism. Everything random is a function of
  the seed and an index, so the stream is the same for any number of worker
  processes (`mp_prefetch` interleaves its workers' strided slices back into
  the original order).

Training stream (`train_iterator`), per host:

1. Record indices `0..N-1`, shuffled globally and reshuffled every epoch
   (Grain's index shuffle, keyed by seed + epoch), repeated forever.
2. Host `p` of `P` takes positions `p, p + P, ...` of that global stream: its
   rows of every global batch. Every record is read by exactly one host per
   epoch, and a global batch holds the same clips whatever the host count (in
   another order). Sharding the records first and shuffling per host with one
   seed would instead put records `k*P .. k*P + P - 1` (neighbours in the
   builder's order) into the same global batch.
3. Each clip's randomness (uniform or random frames, flip) comes from a
   generator seeded by `(seed, epoch, record index)`, not by stream position
   as Grain's `random_map` does: with a position-keyed generator the `j`-th
   clip of every host would share its augmentation draws.
4. Read and decode only the sampled frames (`records.decode_frame`, OpenCV),
   resize when the stored size differs (RGB: Pillow bilinear, as serving
   does; depth codes: nearest, since blending codes would invent depths),
   flip.
   Decoding runs in `ReadOptions` threads (`cv2.imdecode` releases the GIL for
   the whole decode) inside each of `worker_count` processes (`mp_prefetch`;
   0 keeps everything in this process).
5. Batch `global_batch_size // P` clips in this process, and prefetch the next
   batches in a thread, so the trainer's `next()` overlaps the device step.

Evaluation (`eval_iterator`): host `p` reads `records[p::P]`, padded with
`mask=False` entries (`index=-1`, zero frames) to `ceil(ceil(N / P) / local
batch)` batches on every host, so all hosts run the same number of steps and
every record counts exactly once (big_vision's `make_for_inference` scheme).

Batches are dicts of numpy arrays: `rgb` uint8 `(B, T, H, W, 3)`, `depth` uint8
`(B, T, H, W, 1)` depth codes (`jet.depth_to_code`; only the `modalities`
asked for: a stage reads and decodes just what it uses), `label` int32 `(B,)`,
`mask` bool `(B,)`, `index` int32 `(B,)` (record index in the split); a dataset
built with them also has `ir` uint8 `(B, T, H, W, 1)` intensities and
`skeleton` float32 `(B, T, 2, 49, 2, 2)` joint and limb segments in output
pixels (`skeletons.segments`). Each modality's frames are decoded, resized and
flipped as its description says (`modistill_jax.modalities`). The jet
colouring, heat-map rendering, normalisation and noise run on the device
(`preprocess.py`, `skeletons.heat_maps`), so host-to-device transfers stay
uint8 (or a few hundred bytes of joints) and depth a third of its jet size.

Throughput, and how `worker_count` and the thread counts below were chosen:
`docs/performance.md` (input pipeline), measured with
`python -m tools.pipeline_speed`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import math
import os
import time

from absl import flags
import cv2
from etils import epath
import grain
import jax
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from modistill_jax import modalities as modalities_lib
from modistill_jax.data import protocols
from modistill_jax.data import records as records_lib
from modistill_jax.data import sampling
from modistill_jax.data import shards
from modistill_jax.data import skeletons

Batch = dict[str, np.ndarray]

# Threads decoding clips inside each process (main process or worker):
# `cv2.imdecode` releases the GIL, so threads use the cores without pickling.
# READ_THREADS and BATCH_PREFETCH stay constants rather than `config.input`
# fields: the knob that scales with a host's cores is `input.worker_count`
# (each worker runs READ_THREADS threads), and neither changes what a run
# computes; `docs/performance.md` has the measurements they come from.
READ_THREADS = 4
# The modalities read unless a stage asks for others: an RGB-D build's.
MODALITIES = records_lib.MODALITIES
# Batches prefetched after batching, so the trainer never waits on stacking.
BATCH_PREFETCH = 2


@dataclasses.dataclass(frozen=True)
class Source:
  """A protocol's split, readable by index."""

  records: Sequence[dict]
  class_names: tuple[str, ...]
  name: str


def _data_root(data_dir: str | None) -> epath.Path:
  """The TFDS data dir: `data_dir`, else `$TFDS_DATA_DIR`, else TFDS's default."""
  return epath.Path(data_dir or os.environ.get('TFDS_DATA_DIR', tfds.core.constants.DATA_DIR))


def built_dataset_dir(
    dataset: str, *, data_dir: str | None = None, builder_config: str | None = None
) -> str:
  """The folder of the newest built version of `dataset[/builder_config]`.

  Resolved from the files alone (local or `gs://`), never from registered
  builder code: a builder registered in the same process (`import data_builders`) would otherwise
  substitute its own default config and version for what was built.
  """
  if not dataset:  # configs/custom.py leaves it to the command line.
    raise ValueError('No dataset named: set --config.dataset=NAME, the name it was built under.')
  root = _data_root(data_dir)
  root = root / dataset / builder_config if builder_config else root / dataset
  versions = []
  if root.is_dir():
    for path in root.iterdir():
      parts = path.name.split('.')
      if (
          len(parts) == 3
          and all(p.isdigit() for p in parts)
          and (path / 'dataset_info.json').exists()
      ):
        versions.append(tuple(int(p) for p in parts))
  if not versions:
    built = (
        sorted(p.name for p in root.iterdir() if not p.name.startswith('.'))
        if root.is_dir()
        else []
    )
    hint = (
        f'; it holds {built}: set config.builder_config to one of them'
        if built
        else '; build it first (see data_builders/<name>/README.md)'
    )
    raise FileNotFoundError(f'No built {dataset} dataset in {root}{hint}.')
  return str(root / '.'.join(map(str, max(versions))))


def load_source(
    dataset: str,
    protocol: str,
    split: str,
    *,
    data_dir: str | None = None,
    builder_config: str | None = None,
) -> Source | None:
  """The records of `split` ('train', 'validation', 'test') of a built dataset.

  The dataset is opened from its built files (the newest version in
  `data_dir`, see `built_dataset_dir`), not from builder code: the trainer
  reads what was built without importing `data_builders`, and a builder edited
  since cannot change how existing records are read.

  Every shard file of the split is checked first (`shards.check_shards`: it
  exists, and its index opens with the record count the metadata lists), so a
  missing or truncated file stops the run before training starts; a record
  damaged inside a file raises `shards.DatasetShardError` naming the file and
  the record when it is read.

  Returns:
    None when the protocol has no such split (e.g. no validation set).

  Raises:
    shards.DatasetShardError: a shard file is missing or does not open with the
      record count the dataset's metadata lists.
  """
  version_dir = built_dataset_dir(dataset, data_dir=data_dir, builder_config=builder_config)
  builder = tfds.builder_from_directory(version_dir)
  split_sizes = {name: info.num_examples for name, info in builder.info.splits.items()}
  expression = protocols.split_expression(dataset, protocol, split, split_sizes)
  if expression is None:
    return None
  name = f'{dataset}/{protocol}/{split}'
  rebuild = shards.rebuild_command(dataset, os.fspath(_data_root(data_dir)), builder_config)
  return Source(
      records=shards.open_split(builder, expression, name=name, rebuild_command=rebuild),
      class_names=tuple(builder.info.features['label'].names),
      name=name,
  )


def resize_frame(image: Image.Image, image_size: tuple[int, int]) -> Image.Image:
  """RGB at `image_size` `(H, W)`, bilinear: how every sampled frame reaches the model.

  Public so that inference on frames from elsewhere (`modistill_jax.predict`
  reads video files) prepares them exactly as training and evaluation do.
  """
  height, width = image_size
  image = image.convert('RGB')
  if image.size != (width, height):
    image = image.resize((width, height), Image.BILINEAR)
  return image


def reduction_factor(stored_size: tuple[int, int], image_size: tuple[int, int]) -> int:
  """The largest of 4, 2 that a stored JPEG can be decoded down by and still cover `image_size`."""
  for factor in (4, 2):
    if all(-(-s // factor) >= i for s, i in zip(stored_size, image_size)):
      return factor
  return 1


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
  """`(H, W)` from a baseline or progressive JPEG's SOF marker, or None if not found."""
  i = 2
  while i + 9 < len(data) and data[i] == 0xFF:
    marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], 'big')
    if marker in (0xC0, 0xC1, 0xC2):
      return int.from_bytes(data[i + 5 : i + 7], 'big'), int.from_bytes(data[i + 7 : i + 9], 'big')
    i += 2 + length
  return None


def _decode_rgb_reduced(data: bytes, image_size: tuple[int, int]) -> np.ndarray:
  """An RGB frame decoded at the smallest DCT-scaled size still covering `image_size`."""
  stored = _jpeg_size(data) if data[:2] == b'\xff\xd8' else None
  factor = reduction_factor(stored, image_size) if stored else 1
  if factor == 1:
    return records_lib.decode_image(data)
  return records_lib.decode_image_reduced(data, factor)


def _resize_image(frame: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
  """Pillow bilinear, as serving does (`predict` calls `resize_frame` too): the same pixels."""
  if frame.ndim == 3:
    return np.asarray(resize_frame(Image.fromarray(frame), image_size))
  height, width = image_size
  return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def _decode_frame(
    modality: str,
    data: bytes,
    image_size: tuple[int, int],
    flip: bool,
    reduced_decoding: bool = False,
) -> np.ndarray:
  """A stored frame -> its batch form at `image_size`, maybe flipped (`Modality.batch_shape`).

  How a frame is brought to `image_size` is its description's `resample`:
  RGB and infrared bilinearly (Pillow, as serving does), depth codes nearest
  (blending codes would invent depths), skeleton joints by scaling their
  coordinates into segments (`skeletons.segments`). With `reduced_decoding`,
  an RGB JPEG stored at 2x or 4x `image_size` or more is decoded at half or a
  quarter size (`records.decode_image_reduced`) before the resize: other
  pixels than a full decode's, so it is opt-in.
  """
  description = modalities_lib.get(modality)
  if description.resample == 'joints':
    return skeletons.segments(records_lib.decode_frame(modality, data), image_size, flip)
  if reduced_decoding and description.resample == 'image':
    frame = _decode_rgb_reduced(data, image_size)
  else:
    frame = records_lib.decode_frame(modality, data)
  height, width = image_size
  if frame.shape[:2] != (height, width):
    if description.resample == 'nearest':
      frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_NEAREST)
    else:
      # Stored at another size (e.g. a res112 build for a 224 model).
      frame = _resize_image(frame, image_size)
  # OpenCV mirrors in C without the GIL; a reversed numpy view would cost a
  # strided copy in `np.stack`.
  if flip:
    frame = cv2.flip(frame, 1)
  return frame if frame.ndim == 3 else frame[..., None]


def _decode_clip(
    record: dict,
    indices: np.ndarray,
    image_size: tuple[int, int],
    flip: bool,
    modalities: tuple[str, ...],
    reduced_decoding: bool = False,
) -> dict[str, np.ndarray]:
  """The frames `indices` of each modality, flipped alike when `flip`."""
  for m in modalities:
    if m not in record:
      raise ValueError(
          f"{record['sample_id']!r}: the dataset holds no {modalities_lib.get(m).title} frames "
          f'(it holds {records_lib.stored_modalities(record)}); build it with a config '
          'that stores them (see its data_builders README).'
      )
  return {
      m: np.stack(
          [_decode_frame(m, record[m][i], image_size, flip, reduced_decoding) for i in indices]
      )
      for m in modalities
  }


def frame_shape(modality: str, image_size: tuple[int, int]) -> tuple[int, ...]:
  """The shape of one frame of `modality` in a batch."""
  return modalities_lib.get(modality).batch_shape(image_size)


def _num_frames(record: dict) -> int:
  counts = {m: len(record[m]) for m in records_lib.stored_modalities(record)}
  if len(set(counts.values())) != 1:
    raise ValueError(
        f"{record['sample_id']!r}: frames per modality {counts}; the record format requires "
        'aligned modalities.'
    )
  return next(iter(counts.values()))


def _example(clips: dict[str, np.ndarray], label: int, mask: bool, index: int) -> Batch:
  return {**clips, 'label': np.int32(label), 'mask': np.bool_(mask), 'index': np.int32(index)}


def _checked_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
  modalities = tuple(modalities)
  distinct = len(set(modalities)) == len(modalities)
  if not modalities or not distinct or not set(modalities) <= set(modalities_lib.NAMES):
    raise ValueError(
        f'modalities must be distinct names among {modalities_lib.NAMES}, got {modalities}.'
    )
  return modalities


@dataclasses.dataclass(frozen=True)
class _EpochOf:
  """`(position in the repeated stream, record index)` -> `(epoch, record index)`."""

  num_records: int

  def __call__(self, position: int, record_index: int) -> tuple[int, int]:
    return position // self.num_records, record_index


@dataclasses.dataclass(frozen=True)
class _TrainClip:
  """`(epoch, record index)` -> one augmented training example."""

  records: Sequence[dict] = dataclasses.field(repr=False)  # Grain logs the transform's repr
  num_frames: int
  image_size: tuple[int, int]
  seed: int
  uniform_prob: float
  flip: bool
  modalities: tuple[str, ...]
  reduced_decoding: bool = False

  def __call__(self, epoch_and_index: tuple[int, int]) -> Batch:
    epoch, index = epoch_and_index
    rng = np.random.default_rng([self.seed, epoch, index])
    record = self.records[index]
    indices = sampling.train_indices(_num_frames(record), self.num_frames, rng, self.uniform_prob)
    flip = self.flip and rng.random() < 0.5
    clips = _decode_clip(
        record, indices, self.image_size, flip, self.modalities, self.reduced_decoding
    )
    return _example(clips, record['label'], True, index)


@dataclasses.dataclass(frozen=True)
class _EvalClip:
  """Record index -> uniformly sampled example; -1 -> a masked-out zero example."""

  records: Sequence[dict] = dataclasses.field(repr=False)
  num_frames: int
  image_size: tuple[int, int]
  modalities: tuple[str, ...]
  reduced_decoding: bool = False

  def __call__(self, index: int) -> Batch:
    if index < 0:
      return _example(
          {
              m: np.zeros(
                  (self.num_frames, *frame_shape(m, self.image_size)),
                  modalities_lib.get(m).batch_dtype,
              )
              for m in self.modalities
          },
          0,
          False,
          -1,
      )
    record = self.records[index]
    indices = sampling.uniform_indices(_num_frames(record), self.num_frames)
    clips = _decode_clip(
        record, indices, self.image_size, False, self.modalities, self.reduced_decoding
    )
    return _example(clips, record['label'], True, index)


def _hosts(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count}).')
  return process_index, process_count


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
        f'global_batch_size {global_batch_size} must be a positive multiple of the '
        f'process count {process_count}.'
    )
  return global_batch_size // process_count


def _decoded_and_batched(
    ds: grain.MapDataset,
    local_batch_size: int,
    worker_count: int,
    worker_buffer_size: int,
    drop_remainder: bool,
) -> grain.IterDataset:
  """Decode in threads (and worker processes), batch here, prefetch batches."""
  if worker_count and not flags.FLAGS.is_parsed():
    # Grain's worker processes read absl flags; outside an absl app (tests,
    # notebooks, scripts) nothing parsed them, and the defaults are what we want.
    flags.FLAGS.mark_as_parsed()
  ds = ds.to_iter_dataset(
      grain.ReadOptions(
          num_threads=READ_THREADS, prefetch_buffer_size=max(READ_THREADS, local_batch_size)
      )
  )
  ds = ds.mp_prefetch(
      grain.MultiprocessingOptions(
          num_workers=worker_count, per_worker_buffer_size=worker_buffer_size
      )
  )
  ds = ds.batch(local_batch_size, drop_remainder=drop_remainder)
  return grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=BATCH_PREFETCH)


def train_iterator(
    records: Sequence[dict],
    *,
    global_batch_size: int,
    num_frames: int,
    image_size: tuple[int, int],
    seed: int,
    uniform_prob: float = 0.5,
    flip: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    modalities: Sequence[str] = MODALITIES,
    reduced_decoding: bool = False,
) -> grain.DatasetIterator:
  """Endless, per-epoch reshuffled batches: this host's rows of each global batch.

  Args:
    records: the split, random access (`Source.records`, or `make_example`
      clips in memory): `records[i]` is a dict whose `rgb`/`depth` sequences
      give a frame's encoded bytes by index.
    global_batch_size: clips per step over all hosts; divisible by the host count.
    num_frames: frames sampled per clip.
    image_size: `(H, W)` of the output frames.
    seed: determines the order and every augmentation.
    uniform_prob: probability of uniformly spaced frames (else random ones).
    flip: flip half the clips horizontally (all frames, both modalities).
    process_index, process_count: this host and the host count; default JAX's.
    worker_count: decoding processes; 0 decodes in threads of this process.
    worker_buffer_size: decoded clips each worker keeps ready.
    modalities: the clips to read, decode and return (a stage's `inputs`);
      the others' frames are never read.
    reduced_decoding: decode RGB JPEGs stored at 2x or 4x `image_size` or
      more at half or a quarter size with libjpeg's DCT scaling, then resize
      (`input.reduced_decoding`; other pixels than the default full decode).

  Returns:
    A Grain iterator of batch dicts (see the module docstring) with
    `get_state()`/`set_state()`; `close()` it to stop the workers. With
    `worker_count > 0` the calling script needs an `if __name__ == '__main__'`
    guard: workers start by re-importing `__main__`, and Grain waits forever
    on a worker that died doing so.
  """
  process_index, process_count = _hosts(process_index, process_count)
  local_batch_size = _local_batch_size(global_batch_size, process_count)
  if not records:
    raise ValueError('Cannot train on an empty split.')
  ds = grain.MapDataset.range(len(records)).seed(seed).shuffle().repeat()
  ds = ds.map_with_index(_EpochOf(len(records)))
  ds = ds[process_index::process_count]
  ds = ds.map(
      _TrainClip(
          records,
          num_frames,
          tuple(image_size),
          seed,
          uniform_prob,
          flip,
          _checked_modalities(modalities),
          reduced_decoding,
      )
  )
  ds = _decoded_and_batched(
      ds, local_batch_size, worker_count, worker_buffer_size, drop_remainder=True
  )
  return iter(ds)


@dataclasses.dataclass(frozen=True)
class EvalBatches:
  """One pass over a split: `num_batches` batches on every host.

  Attributes:
    dataset: the Grain pipeline; each iteration starts a fresh pass.
    num_batches: batches per host, the same on every host.
    num_examples: records in the split over all hosts, i.e. the sum of `mask`
      over the assembled global batches of one pass.
  """

  dataset: grain.IterDataset
  num_batches: int
  num_examples: int

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[Batch]:
    return iter(self.dataset)


def eval_iterator(
    records: Sequence[dict],
    *,
    global_batch_size: int,
    num_frames: int,
    image_size: tuple[int, int],
    process_index: int | None = None,
    process_count: int | None = None,
    worker_count: int = 0,
    modalities: Sequence[str] = MODALITIES,
    reduced_decoding: bool = False,
) -> EvalBatches:
  """Every record exactly once over all hosts, uniformly sampled, padded with mask=False.

  Arguments as for `train_iterator`.
  """
  process_index, process_count = _hosts(process_index, process_count)
  local_batch_size = _local_batch_size(global_batch_size, process_count)
  max_per_host = math.ceil(len(records) / process_count)
  num_batches = math.ceil(max_per_host / local_batch_size)
  indices = np.full(num_batches * local_batch_size, -1, np.int64)
  own = np.arange(process_index, len(records), process_count)
  indices[: len(own)] = own
  ds = grain.MapDataset.source(indices.tolist())
  ds = ds.map(
      _EvalClip(
          records,
          num_frames,
          tuple(image_size),
          _checked_modalities(modalities),
          reduced_decoding,
      )
  )
  ds = _decoded_and_batched(
      ds, local_batch_size, worker_count, worker_buffer_size=2, drop_remainder=False
  )
  return EvalBatches(dataset=ds, num_batches=num_batches, num_examples=len(records))


def usable_cores() -> int:
  """Cores this process may run on."""
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def timed_clips_per_s(iterator, seconds: float) -> float:
  """Clips/s of a batch iterator over `seconds`, after two untimed batches; closes it."""
  try:
    for _ in range(2):
      next(iterator)
    clips, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      clips += len(next(iterator)['label'])
    return clips / (time.perf_counter() - start)
  finally:
    iterator.close()


def measure_clips_per_s(
    records: Sequence[dict],
    *,
    num_frames: int = 5,
    image_size: tuple[int, int] = (224, 224),
    batch_size: int = 32,
    worker_count: int = 0,
    seconds: float = 10.0,
    modalities: Sequence[str] = MODALITIES,
    reduced_decoding: bool = False,
) -> float:
  """Training-pipeline throughput alone (clips/s), after two warm-up batches."""
  iterator = train_iterator(
      records,
      global_batch_size=batch_size,
      num_frames=num_frames,
      image_size=image_size,
      seed=0,
      process_index=0,
      process_count=1,
      worker_count=worker_count,
      modalities=modalities,
      reduced_decoding=reduced_decoding,
  )
  return timed_clips_per_s(iterator, seconds)


def measure_decode_clips_per_s(
    records: Sequence[dict],
    *,
    num_frames: int = 5,
    seconds: float = 10.0,
    modalities: Sequence[str] = MODALITIES,
) -> float:
  """Decoding alone in one thread: `num_frames` frames per modality and clip, clips/s.

  The pipeline's own decoder (`records.decode_frame`) on the frames it would
  sample; times the number of cores, the most any pipeline can deliver.
  """
  clips, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    record = records[clips % len(records)]
    for i in sampling.uniform_indices(_num_frames(record), num_frames):
      for modality in modalities:
        records_lib.decode_frame(modality, record[modality][i])
    clips += 1
  return clips / (time.perf_counter() - start)
