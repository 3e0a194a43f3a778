"""Your own RGB-D recordings: reading the documented folder layout, converting a sample.

    ROOT/labels.csv          sample,label,split[,subject,view,setup,replication]
    ROOT/classes.txt         optional: class names, one a line, in the order labels get
    ROOT/rgb_to_depth.json   optional: [[a, b, c], [d, e, f]], RGB pixel -> depth pixel
    ROOT/rgb/<sample>.mp4    (or .avi, .mkv, .mov), or ROOT/rgb/<sample>/ of numbered
                             .jpg/.jpeg/.png frames
    ROOT/depth/<sample>/     numbered .png frames, 16-bit (millimetres) or 8-bit
    ROOT/ir/<sample>/        optional: numbered .png frames of the depth camera's infrared
    ROOT/skeleton/<sample>.csv (or .npy) optional: joints in depth-frame pixels

A folder with `ir/` or `skeleton/` builds those modalities too, for every
sample (a sample without them is skipped).

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
Infrared frames and skeleton frames pair with the depth frames the same way,
by rank, and the shortest modality sets the clip's length.

Skeletons: `skeleton/<sample>.npy` holds a float array `(frames, joints, 2)` or
`(frames, bodies, joints, 2)` (at most 2 bodies) of each joint's (x, y) in the
depth frames' pixels (pixel centres at whole numbers), NaN where untracked;
`skeleton/<sample>.csv` has the header `frame,body,joint,x,y` and one row per
tracked joint (`frame` 0-based among the sample's depth frames, `body` 0 or 1).
The joint count must be a known layout (`skeletons.LAYOUTS`: 25 Kinect v2
joints, 20 Kinect v1 joints, in their SDK orders).
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
from modistill_jax.data import skeletons

LABELS_FILE = 'labels.csv'
CLASSES_FILE = 'classes.txt'
AFFINE_FILE = 'rgb_to_depth.json'
RGB_DIR, DEPTH_DIR, IR_DIR, SKELETON_DIR = 'rgb', 'depth', 'ir', 'skeleton'
IR_FRAME_SUFFIXES = ('.png',)
SKELETON_SUFFIXES = ('.csv', '.npy')
SKELETON_COLUMNS = ('frame', 'body', 'joint', 'x', 'y')
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
  modalities: tuple[str, ...] = records.MODALITIES


@dataclasses.dataclass(frozen=True)
class Layout:
  """What the tables of a folder say: class names in label order, one sample per row.

  `modalities`: what the folder holds, RGB and depth plus infrared (an `ir/`
  folder) and skeletons (a `skeleton/` folder).
  """

  class_names: tuple[str, ...]
  samples: tuple[CustomSample, ...]
  modalities: tuple[str, ...] = records.MODALITIES


def folder_modalities(root: epath.Path) -> tuple[str, ...]:
  """The modalities a folder holds: RGB and depth, and `ir/`, `skeleton/` where present."""
  extra = {'ir': IR_DIR, 'skeleton': SKELETON_DIR}
  return records.MODALITIES + tuple(m for m, d in extra.items() if (root / d).is_dir())


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
  modalities = folder_modalities(root)
  samples = []
  for line, row in rows:
    if row['label'] not in label_index:
      raise LayoutError(f'{path}:{line}: label {row["label"]!r} is not in {root / CLASSES_FILE}.')
    meta = {k: _metadata(path, line, k, row[k]) for k in OPTIONAL_COLUMNS if k in row}
    samples.append(
        CustomSample(
            row['sample'],
            row['split'],
            label_index[row['label']],
            line,
            str(root),
            affine,
            **meta,
            modalities=modalities,
        )
    )
  return Layout(class_names, tuple(samples), modalities)


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


def ir_folder(sample: CustomSample) -> epath.Path:
  """The infrared frame folder of `sample`: ir/<sample>/."""
  folder = epath.Path(sample.root) / IR_DIR / sample.sample_id
  if not folder.is_dir():
    raise raw_clips.SampleError(f'no infrared: no folder {IR_DIR}/{sample.sample_id}/')
  return folder


def skeleton_file(sample: CustomSample) -> epath.Path:
  """The one skeleton file of `sample`: skeleton/<sample>.csv or .npy."""
  folder = epath.Path(sample.root) / SKELETON_DIR
  found = [folder / (sample.sample_id + s) for s in SKELETON_SUFFIXES]
  found = [p for p in found if p.is_file()]
  if len(found) != 1:
    raise raw_clips.SampleError(
        f'{"no skeleton: none of" if not found else "several skeleton files:"} '
        f'{SKELETON_DIR}/{sample.sample_id}{{{",".join(SKELETON_SUFFIXES)}}}'
    )
  return found[0]


def read_skeleton_csv(path: epath.Path, where: str) -> np.ndarray:
  """A `frame,body,joint,x,y` table -> `(frames, bodies, joints, 2)` pixels, NaN where absent."""
  try:
    text = path.read_text().removeprefix('\ufeff')
  except (OSError, UnicodeDecodeError) as e:
    raise raw_clips.SampleError(f'{where}: unreadable: {e}') from e
  reader = csv.reader(io.StringIO(text))
  header = [c.strip().lower() for c in next(reader, [])]
  if header != list(SKELETON_COLUMNS):
    raise raw_clips.SampleError(
        f'{where}:1: header must be {",".join(SKELETON_COLUMNS)}, got {",".join(header)}'
    )
  rows = []
  for row in reader:
    if not any(c.strip() for c in row):
      continue
    try:
      if len(row) != len(SKELETON_COLUMNS):
        raise ValueError(f'{len(row)} fields, not {len(SKELETON_COLUMNS)}')
      frame, body, joint = (int(c) for c in row[:3])
      x, y = float(row[3]), float(row[4])
      if frame < 0 or body not in range(skeletons.MAX_BODIES) or joint < 0:
        raise ValueError(
            f'frame and joint must be >= 0 and body 0 to {skeletons.MAX_BODIES - 1}, '
            f'got {frame}, {body}, {joint}'
        )
    except ValueError as e:
      raise raw_clips.SampleError(f'{where}:{reader.line_num}: {e}') from e
    rows.append((frame, body, joint, x, y))
  if not rows:
    raise raw_clips.SampleError(f'{where}: no joint row')
  index = np.asarray([r[:3] for r in rows])
  joints = np.full((*(index.max(axis=0) + 1), 2), np.nan, np.float64)
  joints[index[:, 0], index[:, 1], index[:, 2]] = [r[3:] for r in rows]
  return joints


def read_skeleton(path: epath.Path, depth_size: tuple[int, int], sample: CustomSample):
  """A skeleton file -> `(frames, MAX_BODIES, joints, 2)` fractions of the depth frame."""
  where = _rel(path, sample)
  if path.suffix == '.csv':
    pixels = read_skeleton_csv(path, where)
  else:
    try:
      pixels = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
    except (OSError, ValueError) as e:
      raise raw_clips.SampleError(f'{where}: not a .npy array: {e}') from e
    if pixels.ndim == 3:
      pixels = pixels[:, None]
    if pixels.dtype.kind not in 'fiu':
      raise raw_clips.SampleError(f'{where}: joints must be numbers, got {pixels.dtype}')
  pixels = np.asarray(pixels, np.float64)
  width, height = depth_size
  inside = (
      (pixels[..., 0] >= -0.5)
      & (pixels[..., 0] <= width - 0.5)
      & (pixels[..., 1] >= -0.5)
      & (pixels[..., 1] <= height - 0.5)
  )
  if (np.isfinite(pixels).all(axis=-1) & ~inside).any():
    raise raw_clips.SampleError(
        f'{where}: joints outside the {width}x{height} depth frame; x and y must be its pixels'
    )
  try:
    return skeletons.check_joints((pixels + 0.5) / (width, height), where)
  except ValueError as e:
    raise raw_clips.SampleError(str(e)) from e


def ir_clip(
    files: list[epath.Path], depth_size: tuple[int, int], sample: CustomSample
) -> np.ndarray:
  """`(T, H0, W0)` uint8 infrared of a sample's frames, which must be the depth frames' size.

  8-bit frames are kept as they are; 16-bit ones are scaled per clip, so that
  the clip's largest value becomes 255.
  """
  images = [raw_clips.read_image(p) for p in files]
  size = same_size(images, files, sample)
  if size != depth_size:
    raise raw_clips.SampleError(
        f'infrared of another size than depth: {_rel(files[0], sample)} is '
        f'{size[0]}x{size[1]}, the depth frames {depth_size[0]}x{depth_size[1]}'
    )
  modes = {im.mode for im in images}
  if modes == {'L'}:
    return np.stack([np.asarray(im, np.uint8) for im in images])
  if modes <= {'I;16', 'I;16B', 'I;16L', 'I'}:
    values = np.stack([np.asarray(im, np.float64) for im in images])
    return np.round(values * (255 / max(values.max(), 1))).astype(np.uint8)
  raise raw_clips.SampleError(
      f'infrared frames must be 8- or 16-bit gray PNG, {_rel(files[0], sample)} and its '
      f'siblings are {sorted(modes)}'
  )


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
  frames_raw = {'rgb': num_rgb, 'depth': len(depth_files)}
  if 'ir' in sample.modalities:
    ir_files = numbered_frames(ir_folder(sample), IR_FRAME_SUFFIXES, sample)
    if not ir_files:
      raise raw_clips.SampleError(f'no .png frame in {IR_DIR}/{sample.sample_id}/')
    ir = ir_clip(ir_files, depth_size, sample)
    frames_raw['ir'] = len(ir_files)
  if 'skeleton' in sample.modalities:
    joints = read_skeleton(skeleton_file(sample), depth_size, sample)
    frames_raw['skeleton'] = len(joints)
  kept = min(frames_raw.values())
  depth = raw_clips.depth_clip(depth_images[:kept], [_rel(p, sample) for p in depth_files[:kept]])
  frames = {
      'rgb': np.stack(rgb[:kept]),
      'depth': raw_clips.depth_clip_to_code(depth, height, width),
  }
  if 'ir' in sample.modalities:
    frames['ir'] = np.stack(
        [np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in ir[:kept]]
    )
  if 'skeleton' in sample.modalities:
    frames['skeleton'] = joints[:kept]
  return records.make_clip(
      frames=frames,
      frames_raw=frames_raw,
      label=sample.label,
      sample_id=sample.sample_id,
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
      if 'ir' in sample.modalities:
        ir_folder(sample)
      if 'skeleton' in sample.modalities:
        skeleton_file(sample)
    except raw_clips.SampleError as e:
      skipped.append(raw_clips.Skip(sample.sample_id, sample.split, str(on_line(e, sample))))
    else:
      samples.append(sample)
  return samples, skipped
