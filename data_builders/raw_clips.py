"""What the raw RGB-D builders (NTU RGB+D, NW-UCLA, UWA3DII) share.

Each dataset module supplies three things: how to find its samples under the
manual folder (`find_samples`), which atomic split each sample belongs to, and
how to turn one sample into a record (`convert`, a picklable module-level
function). This module supplies the rest, once:

* `RawClipBuilder`, the TFDS base class: ArrayRecord output (the pipeline reads
  with `tfds.data_source`), the `res224` (the reference's size) and `res112`
  configs, the two record sets of each non-empty atomic split (its clip table
  and its frame rows, `records.py`; each clip converted once), and the skip
  report.
* Parallel conversion on one machine. A `spawn` process pool (the parent may
  already run TensorFlow's thread pools, which `fork` would copy mid-flight)
  converts samples while the parent only writes; `MODISTILL_BUILD_WORKERS`
  sets its size (default: all CPUs; 1 converts in-process). When a Beam runner
  or Beam options are configured (`tfds build --beam_pipeline_options=...`,
  the `build` extra), `_generate_examples` returns a Beam transform instead
  and TFDS runs the conversion on Beam (`DirectRunner` here, Dataflow for NTU);
  it writes exactly the examples the process pool writes.
* Bad input: a sample whose files are missing, empty or undecodable raises
  `SampleError` in `convert` (which decodes the whole sample before returning,
  so nothing half-converted is ever written). It is left out and listed in
  `skipped.tsv` (`sample_id`, `split`, `reason`) next to the built dataset,
  `<data_dir>/<name>/<config>/<version>/skipped.tsv`, and summarised in the log.
  Under Beam the workers send their skips to a side output written next to the
  dataset, which the launching process merges into the same `skipped.tsv` once
  the pipeline has run (Beam counters `converted` and `skipped` show the
  progress in the runner's UI meanwhile).

`SplitWriter` turns converted clips into a split's two record sets, on the
process pool's path and on Beam's; the synthetic builder uses it too.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
import concurrent.futures
import dataclasses
import io
import multiprocessing
import os
import re
import time
from typing import Any, Protocol

from absl import logging
import av
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from modistill_jax.data import jet
from modistill_jax.data import records

WORKERS_ENV = 'MODISTILL_BUILD_WORKERS'
SKIP_REPORT = 'skipped.tsv'
PROGRESS_EVERY_S = 30.0


class SampleError(Exception):
  """A sample cannot be converted; the message is the reason put in the report."""


class RawSample(Protocol):
  """What the shared machinery needs of a dataset's (picklable) sample record."""

  sample_id: str
  split: str


ConvertFn = Callable[[Any, int, int], dict]


@dataclasses.dataclass
class ClipConfig(tfds.core.BuilderConfig):
  """Output frame size (every image modality is resized, not cropped, to it) and modalities.

  `modalities` are what the build stores (`modistill_jax.modalities.NAMES`):
  RGB and depth unless a dataset's config asks for more (NTU's `*_ir_skeleton`).
  """

  height: int = 224
  width: int = 224
  modalities: tuple[str, ...] = records.MODALITIES


CONFIGS = (
    ClipConfig(
        name='res224',
        height=224,
        width=224,
        description='224x224 frames, the size the reference trained on.',
    ),
    ClipConfig(
        name='res112', height=112, width=112, description='112x112 frames, for fast experiments.'
    ),
)


@dataclasses.dataclass(frozen=True)
class Skip:
  sample_id: str
  split: str
  reason: str


# ----------------------------------------------------------------------------------------------
# Reading and resizing frames.


def read_image(path: epath.Path) -> Image.Image:
  """Opens and fully decodes an image, so a corrupt file fails here, not later."""
  try:
    data = path.read_bytes()
  except OSError as e:
    raise SampleError(f'cannot read {path.name}: {e}') from e
  if not data:
    raise SampleError(f'empty file {path.name}')
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except (OSError, SyntaxError, ValueError) as e:  # PIL raises SyntaxError on broken PNG chunks.
    raise SampleError(f'undecodable {path.name}: {e}') from e
  return image


def depth_values(image: Image.Image, name: str) -> np.ndarray:
  """`(H, W)` depth of a 16-bit (mm) or 8-bit grey PNG, as int32; 0 = invalid.

  Only the ratio of depths matters to the jet colouring (normalised per clip),
  so an 8-bit depth image (UWA3DII's bit depth is unconfirmed) colours as well
  as a 16-bit one, at coarser steps. A grey image saved as RGB uses channel 0.
  """
  if image.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'L'):
    return np.asarray(image, np.int32)
  if image.mode in ('RGB', 'RGBA', 'LA'):
    return np.asarray(image, np.int32)[..., 0]
  raise SampleError(f'{name}: unexpected depth image mode {image.mode!r}')


# Depth image modes by what their values are; one clip's frames must all be of one.
DEPTH_MODES = {
    'I;16': '16-bit grey',
    'I;16B': '16-bit grey',
    'I;16L': '16-bit grey',
    'I': '32-bit grey',
    'L': '8-bit grey',
    'RGB': '8-bit RGB',
    'RGBA': '8-bit RGBA',
    'LA': '8-bit grey with alpha',
}


def depth_clip(images: Sequence[Image.Image], names: Sequence[str]) -> np.ndarray:
  """`(T, H, W)` depth of a clip's frames (`depth_values` of each), all of one image mode.

  A clip is normalised as a whole (`depth_clip_to_code`), so millimetres of
  16-bit frames and 0-255 levels of 8-bit ones in one clip would be coloured
  on one scale as if they were the same unit. Clips of different bit depths in
  one dataset are fine: each is normalised on its own.

  Raises:
    SampleError: the frames mix image modes (names the first odd one), or a mode is unknown.
  """
  modes = collections.Counter(image.mode for image in images)
  mode = modes.most_common(1)[0][0]
  for image, name in zip(images, names):
    if image.mode != mode:
      raise SampleError(
          f'depth frames of mixed bit depths: {name} is '
          f'{DEPTH_MODES.get(image.mode, image.mode)} ({image.mode}), {modes[mode]} of the '
          f'{len(images)} frames are {DEPTH_MODES.get(mode, mode)} ({mode})'
      )
  return np.stack([depth_values(image, name) for image, name in zip(images, names)])


def resize_rgb(image: Image.Image, height: int, width: int) -> np.ndarray:
  """Antialiased resize (PIL's bilinear widens its support when shrinking)."""
  return np.asarray(image.convert('RGB').resize((width, height), Image.BILINEAR))


def warp_affine(image: Image.Image, forward: np.ndarray, size: tuple[int, int]) -> Image.Image:
  """Resamples `image` into a `size` = (W, H) frame through `forward`, a 3x3 pixel map.

  `forward` maps the image's pixels to the output's (e.g. RGB -> depth). The
  image is first box-reduced by the whole part of the map's shrink factor:
  the affine resampler reads only 2x2 source pixels per output pixel, so a
  large shrink would alias.
  """
  shrink = int(1.0 / np.sqrt(abs(np.linalg.det(forward[:2, :2]))))
  if shrink > 1:
    image = image.reduce(shrink)
    forward = forward @ np.diag([shrink, shrink, 1.0])
  inverse = np.linalg.inv(forward)[:2].ravel()
  return image.transform(size, Image.AFFINE, tuple(inverse), resample=Image.BILINEAR)


def decode_video(
    path: epath.Path, wanted: Container[int], transform: Callable[[Image.Image], np.ndarray]
) -> tuple[int, dict[int, np.ndarray]]:
  """Decodes every frame; returns the frame count and `transform` of the wanted (1-based) frames.

  Frames are transformed as they are decoded, so a worker never holds a whole
  1920x1080 clip (600 MB for 100 frames).
  """
  if not path.stat().length:
    raise SampleError(f'empty file {path.name}')
  kept, count = {}, 0
  try:
    # Through `epath`, so a video on gs:// (a Dataflow job's raw data) decodes as well.
    with path.open('rb') as video, av.open(video) as container:
      stream = container.streams.video[0]
      stream.thread_type = 'AUTO'
      for count, frame in enumerate(container.decode(stream), 1):
        if count in wanted:
          kept[count] = transform(frame.to_image())
  except (av.FFmpegError, OSError, ValueError, IndexError) as e:
    raise SampleError(f'undecodable {path.name}: {e}') from e
  if not count:
    raise SampleError(f'no frame decoded from {path.name}')
  return count, kept


def depth_clip_to_code(depth_mm: np.ndarray, height: int, width: int) -> np.ndarray:
  """`(T, H0, W0)` depth in mm -> `(T, height, width)` uint8 codes (`jet.depth_to_code`).

  Resizes the depth before coding it, since codes (like jet colours) cannot be
  blended: each output pixel is the bilinear (antialiased, as `resize_rgb`)
  average of the valid depths under it, and invalid where less than half of
  its weight fell on valid pixels, so the zeros of invalid pixels never mix
  into a depth. The per-clip normalisation then runs on the resized clip.
  """
  depth = np.asarray(depth_mm, np.float32)
  valid = (depth > 0).astype(np.float32)

  def resize(plane: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(plane, mode='F').resize((width, height), Image.BILINEAR))

  resized = []
  for frame, mask in zip(depth * valid, valid):
    weight = resize(mask)
    resized.append(np.where(weight >= 0.5, resize(frame) / np.maximum(weight, 1e-6), 0.0))
  return jet.depth_to_code(np.stack(resized))


def paired_frames(
    rgb_files: Mapping[int, epath.Path],
    depth_files: Mapping[int, epath.Path],
    height: int,
    width: int,
) -> tuple[np.ndarray, np.ndarray]:
  """`(rgb (T, H, W, 3) uint8, depth codes (T, H, W))` of the frame numbers both modalities have.

  For datasets stored as one image file per frame and modality (NW-UCLA,
  UWA3DII), where either sensor can miss a frame: those are dropped, in order.

  Raises:
    SampleError: no frame number has both an RGB and a depth file, or a file is bad.
  """
  common = sorted(set(rgb_files) & set(depth_files))
  if not common:
    raise SampleError(
        f'no frame number with both RGB ({len(rgb_files)} frames) and '
        f'depth ({len(depth_files)} frames)'
    )
  rgb = np.stack([resize_rgb(read_image(rgb_files[n]), height, width) for n in common])
  depth = depth_clip(
      [read_image(depth_files[n]) for n in common], [depth_files[n].name for n in common]
  )
  return rgb, depth_clip_to_code(depth, height, width)


# ----------------------------------------------------------------------------------------------
# Searching the raw tree.


def find_dirs(
    root: epath.Path, match: Callable[[str], bool], prune: Callable[[str], bool]
) -> list[epath.Path]:
  """Folders under `root` (itself included) whose name `match`es, sorted.

  Does not descend into a matching folder, nor into folders for which
  `prune(name)` holds (sample folders): the NTU depth tree alone has millions
  of files.
  """
  found, stack = [], [epath.Path(root)]
  while stack:
    folder = stack.pop()
    if match(folder.name):
      found.append(folder)
      continue
    if folder != root and prune(folder.name):
      continue
    if '://' in os.fspath(folder):  # gs:// and the like, e.g. the raw data of a Dataflow job
      stack.extend(p for p in folder.iterdir() if p.is_dir())
    else:  # one system call per folder, where `is_dir` per entry would stat every file
      with os.scandir(folder) as entries:
        stack.extend(folder / e.name for e in entries if e.is_dir())
  return sorted(found)


def worker_count() -> int:
  value = os.environ.get(WORKERS_ENV)
  if value is None:
    return os.cpu_count() or 1
  if not value.isdigit() or int(value) < 1:
    raise ValueError(f'{WORKERS_ENV} must be a positive integer, got {value!r}.')
  return int(value)


# ----------------------------------------------------------------------------------------------
# Conversion.


def convert_or_skip(
    convert: ConvertFn, sample: RawSample, height: int, width: int
) -> tuple[RawSample, dict | None, str | None]:
  """Runs in the workers: the example, or the reason it was skipped."""
  try:
    return sample, convert(sample, height, width), None
  except SampleError as e:
    return sample, None, str(e)


class Converter:
  """Converts samples on a process pool and keeps the build's skip list."""

  def __init__(self, name: str, workers: int, on_beam: bool = False):
    self.name = name
    self.workers = workers
    self.on_beam = on_beam  # Beam converts; this only keeps the skip list and the summary.
    self.skipped: list[Skip] = []
    self.converted = 0
    self.seconds = 0.0
    self._pool: concurrent.futures.Executor | None = None

  def __enter__(self) -> Converter:
    if self.workers > 1:
      self._pool = concurrent.futures.ProcessPoolExecutor(
          self.workers, mp_context=multiprocessing.get_context('spawn')
      )
    return self

  def __exit__(self, *exc_info) -> None:
    if self._pool is not None:
      self._pool.shutdown(cancel_futures=True)
      self._pool = None

  def skip(self, skips: Iterable[Skip]) -> None:
    for s in skips:
      logging.warning('[%s] skipping %s: %s', self.name, s.sample_id, s.reason)
      self.skipped.append(s)

  def _results(
      self, convert: ConvertFn, samples: Sequence[RawSample], height: int, width: int
  ) -> Iterator[tuple[RawSample, dict | None, str | None]]:
    if self._pool is None:
      for sample in samples:
        yield convert_or_skip(convert, sample, height, width)
      return
    # Bounded in-flight work: a converted NTU clip holds tens of MB until written.
    pending, queue = set(), collections.deque(samples)
    try:
      while queue or pending:
        while queue and len(pending) < 2 * self.workers:
          pending.add(self._pool.submit(convert_or_skip, convert, queue.popleft(), height, width))
        done, pending = concurrent.futures.wait(
            pending, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for future in done:
          yield future.result()
    finally:  # The consumer may stop early (e.g. `max_examples_per_split`).
      for future in pending:
        future.cancel()

  def convert(
      self, split: str, convert: ConvertFn, samples: Sequence[RawSample], height: int, width: int
  ) -> Iterator[tuple[str, dict]]:
    """Yields `(sample_id, example)` of a split; logs progress and skips."""
    start = last_log = time.monotonic()
    done = yielded = 0
    for sample, example, reason in self._results(convert, samples, height, width):
      done += 1
      if example is None:
        self.skip([Skip(sample.sample_id, split, reason)])
      else:
        yielded += 1
        self.converted += 1
        yield sample.sample_id, example
      now = time.monotonic()
      if now - last_log >= PROGRESS_EVERY_S or done == len(samples):
        last_log = now
        logging.info(
            '[%s] %s: %d/%d samples, %.2f clips/s, %d workers',
            self.name,
            split,
            done,
            len(samples),
            done / max(now - start, 1e-9),
            self.workers,
        )
    self.seconds += time.monotonic() - start
    if not yielded:
      raise RuntimeError(
          f'[{self.name}] every sample of split {split!r} was skipped; see the '
          f'reasons logged above.'
      )

  def write_report(self, folder: epath.Path) -> None:
    """Writes `skipped.tsv` and logs the summary of the build."""
    lines = ['sample_id\tsplit\treason']
    lines += [
        f'{s.sample_id}\t{s.split}\t{s.reason}'
        for s in sorted(self.skipped, key=lambda s: s.sample_id)
    ]
    (folder / SKIP_REPORT).write_text('\n'.join(lines) + '\n')
    rate = self.converted / self.seconds if self.seconds else 0.0
    where = 'Beam pipeline, writing included' if self.on_beam else f'{self.workers} workers'
    logging.info(
        '[%s] converted %d clips in %.1f s (%.2f clips/s, %s); skipped %d, '
        'listed in %s beside the dataset files',
        self.name,
        self.converted,
        self.seconds,
        rate,
        where,
        len(self.skipped),
        SKIP_REPORT,
    )
    kinds = (re.sub(r'\S*\d\S*', '*', s.reason.split(':')[0]) for s in self.skipped)
    for reason, count in collections.Counter(kinds).most_common():
      logging.info('[%s]   %d x %s', self.name, count, reason)


def read_skip_report(path: epath.PathLike) -> list[Skip]:
  """The rows of a `skipped.tsv`."""
  rows = epath.Path(path).read_text().splitlines()[1:]
  return [Skip(*row.split('\t', 2)) for row in rows]


# ----------------------------------------------------------------------------------------------
# Conversion on Beam.

BEAM_SKIPS_DIR = 'beam_skips'  # the workers' skip rows, merged into SKIP_REPORT, then removed
_SKIPPED_TAG = 'skipped'
_COUNTERS = 'modistill'


def _beam_convert(sample: RawSample, convert: ConvertFn, height: int, width: int):
  """Runs on the Beam workers: `(key, example)`, or the skip's report row (tagged output)."""
  beam = tfds.core.lazy_imports.apache_beam
  sample, example, reason = convert_or_skip(convert, sample, height, width)
  if example is None:
    beam.metrics.Metrics.counter(_COUNTERS, 'skipped').inc()
    yield beam.pvalue.TaggedOutput(_SKIPPED_TAG, f'{sample.sample_id}\t{sample.split}\t{reason}')
    return
  beam.metrics.Metrics.counter(_COUNTERS, 'converted').inc()
  yield sample.sample_id, example


def _convert_on_beam(
    root,
    samples: Sequence[RawSample],
    convert: ConvertFn,
    height: int,
    width: int,
    skips_prefix: str,
):
  """The Beam transform of one split: samples -> `(sample_id, example)`, skips -> text shards."""
  beam = tfds.core.lazy_imports.apache_beam
  results = (
      root
      | 'Samples' >> beam.Create(samples)
      | 'Convert'
      >> beam.FlatMap(_beam_convert, convert=convert, height=height, width=width).with_outputs(
          _SKIPPED_TAG, main='examples'
      )
  )
  _ = results[_SKIPPED_TAG] | 'WriteSkips' >> beam.io.WriteToText(skips_prefix)
  return results.examples


def _frame_rows_of(item: tuple[str, dict]) -> Iterator[tuple[str, dict]]:
  return records.frame_rows(item[1])


def _entry_of(item: tuple[str, dict]) -> records.ClipEntry:
  return records.ClipEntry.of(item[1])


def _clip_rows_on_beam(entries: list[records.ClipEntry], split: str) -> list[tuple[str, dict]]:
  return list(records.clip_rows(split, sorted(entries, key=lambda e: e.fields['sample_id'])))


class SplitWriter:
  """The two record sets of each atomic split, from one conversion of its clips.

  `generators(split, examples)` gives `{frames_split(split): frame rows,
  split: clip rows}` for `_split_generators`. Without Beam they are
  generators run one after the other, as TFDS writes splits: the first writes
  each converted clip's frame rows and keeps its (frameless) clip entry, the
  second writes the clip table from those entries, once every frame row's key
  is known (`records.frame_positions`). On Beam both are transforms of one
  shared PCollection of converted clips, so each clip is converted once there
  too; the clip table is computed on one worker from the split's entries.
  """

  def __init__(self):
    self._entries: dict[str, list[records.ClipEntry]] = {}
    self._beam_examples: dict[str, Any] = {}

  def generators(self, split: str, examples: Iterable[tuple[str, dict]]) -> dict[str, Any]:
    return {
        records.frames_split(split): self._frame_rows(split, examples),
        split: self._clip_rows(split),
    }

  def _frame_rows(self, split: str, examples: Iterable[tuple[str, dict]]):
    self._entries[split] = []
    for _, example in examples:
      self._entries[split].append(records.ClipEntry.of(example))
      yield from records.frame_rows(example)

  def _clip_rows(self, split: str):
    yield from records.clip_rows(split, self._entries.pop(split))

  def beam_transforms(self, split: str, examples_transform) -> dict[str, Any]:
    """The Beam form of `generators`: `examples_transform` (root -> converted clips) runs once."""
    beam = tfds.core.lazy_imports.apache_beam

    def examples(root):
      if split not in self._beam_examples:
        self._beam_examples[split] = root.pipeline | f'{split}_convert' >> examples_transform
      return self._beam_examples[split]

    def frames(root):
      return examples(root) | beam.FlatMap(_frame_rows_of)

    def clips(root):
      return (
          examples(root)
          | beam.Map(_entry_of)
          | beam.combiners.ToList()
          | beam.FlatMap(_clip_rows_on_beam, split=split)
      )

    return {
        records.frames_split(split): beam.ptransform_fn(frames)(),
        split: beam.ptransform_fn(clips)(),
    }


def read_beam_skips(folder: epath.Path) -> list[Skip]:
  """The skip rows the Beam workers wrote under `folder` (none if it does not exist)."""
  if not folder.exists():
    return []
  rows = [row for shard in sorted(folder.iterdir()) for row in shard.read_text().splitlines()]
  return [Skip(*row.split('\t', 2)) for row in rows]


# ----------------------------------------------------------------------------------------------
# The builder.


class RawClipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the raw-data builders; subclasses set the class attributes below."""

  BUILDER_CONFIGS = list(CONFIGS)
  # Configs built only when named (`--config=NAME`): `tfds build` without `--config` builds
  # every one of `BUILDER_CONFIGS`, so a config needing raw files an RGB-D download lacks
  # (NTU's infrared) would fail the plain build. TFDS takes them as custom configs.
  ON_REQUEST_CONFIGS: Sequence[ClipConfig] = ()
  DEFAULT_BUILDER_CONFIG_NAME = 'res224'
  CLASS_NAMES: Sequence[str] = ()
  ATOMIC_SPLITS: Sequence[str] = ()
  HOMEPAGE = ''

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format or records.FILE_FORMAT, **kwargs)
    self._converter = Converter(self.name, 1)
    self._use_beam = False
    self._writer = SplitWriter()

  def _create_builder_config(self, builder_config, version):
    """An `ON_REQUEST_CONFIGS` name becomes its config; TFDS resolves the rest."""
    on_request = {c.name: c for c in self.ON_REQUEST_CONFIGS}
    if isinstance(builder_config, str) and builder_config in on_request:
      builder_config = on_request[builder_config]
    return super()._create_builder_config(builder_config, version)

  def find_samples(self, manual_dir: epath.Path) -> tuple[list[RawSample], list[Skip]]:
    """Samples found (with their atomic split) and those rejected on sight."""
    raise NotImplementedError

  def convert_function(self) -> ConvertFn:
    """The picklable module-level function turning a sample into an example."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=records.clip_features(self.CLASS_NAMES, self.builder_config.modalities),
        supervised_keys=None,
        homepage=self.HOMEPAGE,
    )

  def _download_and_prepare(self, dl_manager, download_config):
    self._use_beam = bool(download_config.beam_runner or download_config.beam_options)
    workers = 1 if self._use_beam else worker_count()
    with Converter(self.name, workers, on_beam=self._use_beam) as self._converter:
      start = time.monotonic()
      super()._download_and_prepare(dl_manager, download_config)
      if self._use_beam:
        self._converter.seconds = time.monotonic() - start
      self._converter.write_report(self.data_path)

  def _process_pipeline_result(self, pipeline_result) -> None:
    """After the Beam pipeline: its skips into the report, its counters into the summary."""
    skips_dir = self.data_path / BEAM_SKIPS_DIR
    self._converter.skip(read_beam_skips(skips_dir))
    if skips_dir.exists():
      skips_dir.rmtree()
    beam = tfds.core.lazy_imports.apache_beam
    query = pipeline_result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(_COUNTERS).with_name('converted')
    )
    self._converter.converted = sum(c.committed or 0 for c in query['counters'])

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    samples, skipped = self.find_samples(epath.Path(dl_manager.manual_dir))
    self._converter.skip(skipped)
    by_split = collections.defaultdict(list)
    for sample in samples:
      by_split[sample.split].append(sample)
    logging.info(
        '[%s] found %d samples: %s; rejected %d on sight',
        self.name,
        len(samples),
        ', '.join(f'{s} {len(by_split[s])}' for s in self.ATOMIC_SPLITS),
        len(skipped),
    )
    generators = {}
    for split in self.ATOMIC_SPLITS:
      if by_split[split]:
        generators.update(self._record_sets(split, by_split[split]))
    return generators

  def _record_sets(self, split: str, samples: Sequence[RawSample]) -> dict[str, Any]:
    """The generators (or Beam transforms) of `split`'s two record sets (`SplitWriter`)."""
    if self._use_beam:
      return self._writer.beam_transforms(split, self._generate_examples(split, samples))
    return self._writer.generators(split, self._generate_examples(split, samples))

  def _generate_examples(self, split: str, samples: Sequence[RawSample]):
    """`(sample_id, make_example clip)` of the converted samples, or the Beam transform for them."""
    config = self.builder_config
    if self._use_beam:
      beam = tfds.core.lazy_imports.apache_beam
      skips_prefix = os.fspath(self.data_path / BEAM_SKIPS_DIR / split)
      return beam.ptransform_fn(_convert_on_beam)(
          samples, self.convert_function(), config.height, config.width, skips_prefix
      )
    return self._converter.convert(
        split, self.convert_function(), samples, config.height, config.width
    )
