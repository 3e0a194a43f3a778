"""Your own RGB-D recordings: reading the documented folder layout, converting a sample.

    ROOT/labels.csv          sample,label,split[,subject,view,setup,replication]
    ROOT/classes.txt         optional: class names, one a line, in the order labels get
    ROOT/rgb_to_depth.json   optional: [[a, b, c], [d, e, f]], RGB pixel -> depth pixel
    ROOT/rgb/<sample>.mp4    (or .avi, .mkv, .mov), or ROOT/rgb/<sample>/ of numbered
                             .jpg/.jpeg/.png frames
    ROOT/depth/<sample>/     numbered .png frames, 16-bit (millimetres) or 8-bit

Mistakes in the tables (labels.csv, classes.txt, rgb_to_depth.json) stop the
build at once with `LayoutError`, naming the file and line: they concern every
sample, and a dataset built around them would be silently wrong. Problems of
one sample's files (missing, unreadable, frames of mixed sizes) raise
`raw_clips.SampleError`, so the sample is left out and listed in the skip
report while the others are built, as in the other builders.

Frames are ordered by the last number in their file name, so gaps
(1, 2, 5, ...) and mixed zero-padding (9, 010) order as the numbers do, and
RGB and depth are paired by rank: the k-th RGB frame with the k-th depth
frame. When the counts differ, the first min(RGB, depth) of each are kept and
the raw counts stay in the example (`rgb_frames_raw`, `depth_frames_raw`).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import math
import re

from etils import epath
import numpy as np
from PIL import Image

from data_builders import raw_clips
from modistill_jax.data import protocols
from modistill_jax.data import records

LABELS_FILE = 'labels.csv'
CLASSES_FILE = 'classes.txt'
AFFINE_FILE = 'rgb_to_depth.json'
RGB_DIR, DEPTH_DIR = 'rgb', 'depth'
REQUIRED_COLUMNS = ('sample', 'label', 'split')
OPTIONAL_COLUMNS = records.METADATA_KEYS
SPLITS = protocols.SPLITS
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mkv', '.mov')
RGB_FRAME_SUFFIXES = ('.jpg', '.jpeg', '.png')
DEPTH_FRAME_SUFFIXES = ('.png',)
LAST_NUMBER = re.compile(r'(\d+)\D*$')

Affine = tuple[tuple[float, float, float], tuple[float, float, float]]


class LayoutError(ValueError):
  """The folder's tables are wrong; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class CustomSample:
  """One row of labels.csv, with the files found for it (picklable, for the workers)."""

  sample_id: str
  split: str
  label: int
  line: int
  root: str
  rgb_to_depth: Affine | None
  subject: int = -1
  view: int = -1
  setup: int = -1
  replication: int = -1


@dataclasses.dataclass(frozen=True)
class Layout:
  """What the tables of a folder say: class names in label order, one sample per row."""

  class_names: tuple[str, ...]
  samples: tuple[CustomSample, ...]


def read_text(path: epath.Path) -> str:
  """A table or list file as text; raises `LayoutError` naming the line of a byte that is not UTF-8.

  Spreadsheets on some systems export Latin-1 or Windows-1252 (an accented
  name as the single byte 0xe9), which is not UTF-8.
  """
  data = path.read_bytes()
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data[: e.start].count(b'\n') + 1
    column = e.start - (data.rfind(b'\n', 0, e.start) + 1) + 1
    raise LayoutError(
        f'{path}:{line}: byte 0x{data[e.start]:02x} (byte {column} of the line) is not UTF-8 '
        'text; save the file as UTF-8 (in a spreadsheet: "CSV UTF-8").'
    ) from None


def read_class_names(root: epath.Path, labels: list[str]) -> tuple[str, ...]:
  """classes.txt's names in its order, else the sorted set of the labels used."""
  path = root / CLASSES_FILE
  if not path.exists():
    return tuple(sorted(set(labels)))
  names, first_line = [], {}
  for number, line in enumerate(read_text(path).splitlines(), 1):
    name = line.strip()
    if not name:
      continue
    if name in first_line:
      raise LayoutError(
          f'{path}:{number}: class {name!r} already listed on line ' f'{first_line[name]}.'
      )
    first_line[name] = number
    names.append(name)
  if not names:
    raise LayoutError(
        f'{path} lists no class; delete it to use the sorted labels of ' f'{LABELS_FILE}.'
    )
  return tuple(names)


def read_affine(root: epath.Path) -> Affine | None:
  """The RGB -> depth pixel map of rgb_to_depth.json, or None when there is none."""
  path = root / AFFINE_FILE
  if not path.exists():
    return None
  try:
    matrix = json.loads(read_text(path))
  except json.JSONDecodeError as e:
    raise LayoutError(f'{path}:{e.lineno}: not JSON ({e.msg}).') from e
  if (
      not isinstance(matrix, list)
      or len(matrix) != 2
      or any(not isinstance(row, list) or len(row) != 3 for row in matrix)
      or any(
          isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
          for row in matrix
          for v in row
      )
  ):
    raise LayoutError(
        f'{path} must hold a 2x3 list of finite numbers, [[a, b, c], [d, e, f]] '
        f'with depth_x = a*x + b*y + c and depth_y = d*x + e*y + f for an RGB '
        f'pixel (x, y); got {matrix!r}.'
    )
  if abs(matrix[0][0] * matrix[1][1] - matrix[0][1] * matrix[1][0]) < 1e-9:
    raise LayoutError(f'{path}: the map {matrix} is not invertible.')
  return tuple(tuple(float(v) for v in row) for row in matrix)


def _metadata(path: epath.Path, line: int, column: str, text: str) -> int:
  if not text:
    return -1
  try:
    return int(text)
  except ValueError:
    raise LayoutError(
        f'{path}:{line}: {column} must be an integer (or empty), ' f'got {text!r}.'
    ) from None


def read_layout(root: epath.PathLike) -> Layout:
  """Reads and checks labels.csv, classes.txt and rgb_to_depth.json; raises `LayoutError`."""
  root = epath.Path(root)
  path = root / LABELS_FILE
  if not path.exists():
    raise LayoutError(
        f'No {path}. The folder must hold {LABELS_FILE} (columns '
        f'{",".join(REQUIRED_COLUMNS)}), {RGB_DIR}/ and {DEPTH_DIR}/; see '
        f'data_builders/custom_rgbd/README.md.'
    )
  # A spreadsheet's UTF-8 export may start with a byte-order mark.
  reader = csv.reader(io.StringIO(read_text(path).removeprefix('\ufeff')))
  header = next((row for row in reader if any(c.strip() for c in row)), None)
  if header is None:
    raise LayoutError(
        f'{path} is empty: expected the header '
        f'{",".join(REQUIRED_COLUMNS)} and one row per sample.'
    )
  header_line = reader.line_num
  columns = [c.strip().lower() for c in header]
  missing = [c for c in REQUIRED_COLUMNS if c not in columns]
  unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
  if missing or unknown or len(set(columns)) != len(columns):
    raise LayoutError(
        f'{path}:{header_line}: header {header} must name each of {REQUIRED_COLUMNS} once, '
        f'plus any of {OPTIONAL_COLUMNS}; missing {missing}, unknown {unknown}.'
    )
  rows = []
  for row in reader:
    if not any(c.strip() for c in row):
      continue
    if len(row) != len(columns):
      raise LayoutError(
          f'{path}:{reader.line_num}: {len(row)} fields, the header has ' f'{len(columns)}.'
      )
    rows.append((reader.line_num, dict(zip(columns, (c.strip() for c in row)))))
  if not rows:
    raise LayoutError(f'{path} has a header but no sample row.')

  first_line = {}
  for line, row in rows:
    name = row['sample']
    if not name or name in ('.', '..') or '/' in name or '\\' in name:
      raise LayoutError(f'{path}:{line}: sample must be a file name (no slash), got {name!r}.')
    if name in first_line:
      raise LayoutError(
          f'{path}:{line}: sample {name!r} already on line {first_line[name]}; '
          f'sample names must be unique.'
      )
    first_line[name] = line
    if not row['label']:
      raise LayoutError(f'{path}:{line}: sample {name!r} has no label.')
    if row['split'] not in SPLITS:
      raise LayoutError(f'{path}:{line}: split must be one of {SPLITS}, got {row["split"]!r}.')

  class_names = read_class_names(root, [row['label'] for _, row in rows])
  label_index = {n: i for i, n in enumerate(class_names)}
  affine = read_affine(root)
  samples = []
  for line, row in rows:
    if row['label'] not in label_index:
      raise LayoutError(f'{path}:{line}: label {row["label"]!r} is not in {root / CLASSES_FILE}.')
    meta = {k: _metadata(path, line, k, row[k]) for k in OPTIONAL_COLUMNS if k in row}
    samples.append(
        CustomSample(
            row['sample'], row['split'], label_index[row['label']], line, str(root), affine, **meta
        )
    )
  return Layout(class_names, tuple(samples))


# ----------------------------------------------------------------------------------------------
# Finding and converting one sample's frames.


def numbered_frames(
    folder: epath.Path, suffixes: tuple[str, ...], sample: CustomSample
) -> list[epath.Path]:
  """The frame files of `folder` in the order of the last number in their names."""
  numbered = {}
  for entry in folder.iterdir():
    if entry.suffix.lower() not in suffixes or entry.name.startswith('.'):
      continue
    match = LAST_NUMBER.search(entry.stem)
    if not match:
      raise raw_clips.SampleError(f'frame without a number: {_rel(entry, sample)}')
    number = int(match.group(1))
    if number in numbered:
      raise raw_clips.SampleError(
          f'two frames numbered {number}: '
          f'{_rel(numbered[number], sample)}, {_rel(entry, sample)}'
      )
    numbered[number] = entry
  return [numbered[n] for n in sorted(numbered)]


def _rel(path: epath.Path, sample: CustomSample) -> str:
  return str(path.relative_to(sample.root))


def rgb_source(sample: CustomSample) -> epath.Path:
  """The one video file or frame folder of `sample` under rgb/."""
  folder = epath.Path(sample.root) / RGB_DIR
  found = [folder / (sample.sample_id + s) for s in VIDEO_SUFFIXES]
  found = [p for p in found if p.is_file()]
  if (folder / sample.sample_id).is_dir():
    found.append(folder / sample.sample_id)
  if not found:
    raise raw_clips.SampleError(
        f'no RGB: none of {RGB_DIR}/{sample.sample_id}'
        f'{{{",".join(VIDEO_SUFFIXES)}}} or the folder {RGB_DIR}/{sample.sample_id}/'
    )
  if len(found) > 1:
    raise raw_clips.SampleError(
        f'several RGB sources: ' f'{[_rel(p, sample) for p in found]}; keep one'
    )
  return found[0]


def depth_folder(sample: CustomSample) -> epath.Path:
  """The depth frame folder of `sample`: depth/<sample>/."""
  folder = epath.Path(sample.root) / DEPTH_DIR / sample.sample_id
  if not folder.is_dir():
    raise raw_clips.SampleError(f'no depth: no folder {DEPTH_DIR}/{sample.sample_id}/')
  return folder


def same_size(
    images: list[Image.Image], files: list[epath.Path], sample: CustomSample
) -> tuple[int, int]:
  """The frames' common (W, H); names the first frame of another size than its siblings."""
  sizes = collections.Counter(im.size for im in images)
  size = sizes.most_common(1)[0][0]
  for image, path in zip(images, files):
    if image.size != size:
      raise raw_clips.SampleError(
          f'frame of another size: {_rel(path, sample)} is {image.size[0]}x{image.size[1]}, '
          f'its siblings {size[0]}x{size[1]}'
      )
  return size


def on_line(error: raw_clips.SampleError, sample: CustomSample) -> raw_clips.SampleError:
  """The error with the sample's labels.csv line, for the skip report."""
  return raw_clips.SampleError(f'{error} ({LABELS_FILE} line {sample.line})')


def convert(sample: CustomSample, height: int, width: int) -> dict:
  """One sample -> one example; raises `SampleError` on bad input, naming the file and line."""
  try:
    return _convert(sample, height, width)
  except raw_clips.SampleError as e:
    raise on_line(e, sample) from e


def _convert(sample: CustomSample, height: int, width: int) -> dict:
  depth_dir = depth_folder(sample)
  depth_files = numbered_frames(depth_dir, DEPTH_FRAME_SUFFIXES, sample)
  if not depth_files:
    raise raw_clips.SampleError(f'no .png frame in {DEPTH_DIR}/{sample.sample_id}/')
  depth_images = [raw_clips.read_image(p) for p in depth_files]
  depth_size = same_size(depth_images, depth_files, sample)

  def to_output(image: Image.Image) -> np.ndarray:
    image = image.convert('RGB')
    if sample.rgb_to_depth is not None:
      forward = np.vstack([np.asarray(sample.rgb_to_depth, np.float64), [0.0, 0.0, 1.0]])
      image = raw_clips.warp_affine(image, forward, depth_size)
    return raw_clips.resize_rgb(image, height, width)

  source = rgb_source(sample)
  if source.is_dir():
    rgb_files = numbered_frames(source, RGB_FRAME_SUFFIXES, sample)
    if not rgb_files:
      raise raw_clips.SampleError(f'no .jpg/.jpeg/.png frame in {_rel(source, sample)}/')
    rgb_images = [raw_clips.read_image(p) for p in rgb_files[: len(depth_files)]]
    same_size(rgb_images, rgb_files, sample)
    num_rgb, rgb = len(rgb_files), [to_output(im) for im in rgb_images]
  else:
    num_rgb, decoded = raw_clips.decode_video(source, range(1, len(depth_files) + 1), to_output)
    rgb = [decoded[k] for k in sorted(decoded)]
  kept = min(num_rgb, len(depth_files))
  depth = raw_clips.depth_clip(depth_images[:kept], [_rel(p, sample) for p in depth_files[:kept]])
  return records.make_example(
      rgb=np.stack(rgb[:kept]),
      depth_code=raw_clips.depth_clip_to_code(depth, height, width),
      label=sample.label,
      sample_id=sample.sample_id,
      rgb_frames_raw=num_rgb,
      depth_frames_raw=len(depth_files),
      subject=sample.subject,
      view=sample.view,
      setup=sample.setup,
      replication=sample.replication,
  )


def find_samples(
    root: epath.Path, class_names: tuple[str, ...]
) -> tuple[list[CustomSample], list[raw_clips.Skip]]:
  """The samples of labels.csv, less those without RGB or depth files (rejected on sight).

  Fails if the class list changed since the builder was made for this folder.
  """
  layout = read_layout(root)
  if layout.class_names != tuple(class_names):
    raise LayoutError(
        f'The classes of {root} changed while building: {layout.class_names}, '
        f'the builder was made for {tuple(class_names)}.'
    )
  samples, skipped = [], []
  for sample in layout.samples:
    try:
      rgb_source(sample)
      depth_folder(sample)
    except raw_clips.SampleError as e:
      skipped.append(raw_clips.Skip(sample.sample_id, sample.split, str(on_line(e, sample))))
    else:
      samples.append(sample)
  return samples, skipped
