"""NTU RGB+D 60 raw data: ids, splits, skeleton files, RGB->depth alignment, conversion.

Facts used (see `shared/datasets/README.md`, section 1):

* Id `SsssCcccPpppRrrrAaaa`: setup, camera, performer, replication, action (1-based).
* RGB `nturgb+d_rgb/<ID>_rgb.avi` (1920x1080), masked depth
  `nturgb+d_depth_masked/<ID>/MDepth-%08d.png` (512x424, uint16 mm), skeletons
  `nturgb+d_skeletons/<ID>.skeleton`; each folder either directly under the raw
  root or inside per-setup folders (`nturgbd_rgb_s001/nturgb+d_rgb/...`).
* RGB frame f <-> `MDepth` f (1-based), as in the official MATLAB code; so
  are infrared frame f (`nturgb+d_ir/<ID>_ir.avi`, the depth camera's
  512x424 frame) and skeleton frame f, which the `*_ir_skeleton` configs store
  (`read_ir`, `skeleton_joints`).

Alignment. RGB and depth come from different cameras, with no released
calibration, but the cameras were fixed within a setup. So one affine map
RGB->depth is fitted per (setup, camera) group from the skeleton joints'
(colorX, colorY) <-> (depthX, depthY) pairs, as the dataset's maintainer advises:
joints that are NaN, zero or outside either frame are dropped, then RANSAC
(3-point hypotheses, seeded) finds the inliers within `INLIER_PX` depth pixels
and least squares refits on them. The threshold leaves room for the parallax
between the two cameras (about 5 cm apart: a few depth pixels between near
and far joints), which no affine map removes. At most `FIT_FILES_PER_GROUP`
skeleton files per group (evenly spread over its sorted ids) are read: the
map needs thousands of joints, not all 950 files of a group. Every sample of
a group uses the group's map, including the 302 without skeletons; a group
with no usable skeleton file falls back to the affine matrices published in
shahroudy/NTURGB-D issue #39 for its camera (fitted on setup 1, so only
approximate elsewhere), with a warning.

Maps are fitted in the nominal frame coordinates (RGB 1920x1080, depth
512x424) and scaled to the decoded sizes when warping, so a frame of any
size goes through the same code. Each RGB frame is box-reduced by the whole
part of the warp's shrink factor (2 for real data, to avoid aliasing), warped
into the depth frame with the inverse map, and then both modalities are
resized to the output size.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import re

from absl import logging
from etils import epath
import numpy as np
from PIL import Image

from data_builders import raw_clips
from modistill_jax.data import protocols
from modistill_jax.data import records
from modistill_jax.data import skeletons

CLASS_NAMES = (
    'drink water',
    'eat meal/snack',
    'brushing teeth',
    'brushing hair',
    'drop',
    'pickup',
    'throw',
    'sitting down',
    'standing up (from sitting position)',
    'clapping',
    'reading',
    'writing',
    'tear up paper',
    'wear jacket',
    'take off jacket',
    'wear a shoe',
    'take off a shoe',
    'wear on glasses',
    'take off glasses',
    'put on a hat/cap',
    'take off a hat/cap',
    'cheer up',
    'hand waving',
    'kicking something',
    'reach into pocket',
    'hopping (one foot jumping)',
    'jump up',
    'make a phone call/answer phone',
    'playing with phone/tablet',
    'typing on a keyboard',
    'pointing to something with finger',
    'taking a selfie',
    'check time (from watch)',
    'rub two hands together',
    'nod head/bow',
    'shake head',
    'wipe face',
    'salute',
    'put the palms together',
    'cross hands in front (say stop)',
    'sneeze/cough',
    'staggering',
    'falling',
    'touch head (headache)',
    'touch chest (stomachache/heart pain)',
    'touch back (backache)',
    'touch neck (neckache)',
    'nausea or vomiting condition',
    'use a fan (with hand or paper)/feeling warm',
    'punching/slapping other person',
    'kicking other person',
    'pushing other person',
    'pat on back of other person',
    'point finger at the other person',
    'hugging other person',
    'giving something to other person',
    "touch other person's pocket",
    'handshaking',
    'walking towards each other',
    'walking apart from each other',
)

ID_PATTERN = re.compile(r'S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})')
RGB_DIR, DEPTH_DIR, SKELETON_DIR = 'nturgb+d_rgb', 'nturgb+d_depth_masked', 'nturgb+d_skeletons'
IR_DIR = 'nturgb+d_ir'
DEPTH_FRAME = re.compile(r'MDepth-(\d+)\.png')
RGB_SIZE = (1920, 1080)  # Nominal (width, height) of the frames the skeleton coordinates use.
DEPTH_SIZE = (512, 424)

# The reference's (ncgarcia/modality-distillation) splits.
CS_TRAIN_SUBJECTS = frozenset(
    (2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
)
CS_VAL_SUBJECTS = frozenset((1,))
CV_TEST_CAMERAS = frozenset((1,))
CV_VAL_PER_CLASS = 31  # int(1882 / 60): the reference's per-class validation draw.

# Alignment.
INLIER_PX = 5.0
FIT_FILES_PER_GROUP = 40
FIT_MAX_POINTS = 50_000
RANSAC_ITERATIONS = 200
MIN_INLIERS = 30
# RGB->depth affine maps from shahroudy/NTURGB-D issue #39, fitted on setup 1, per camera.
ISSUE_39_AFFINES = {
    1: ((0.3456, 0.0028, -82.2), (-0.0014, 0.3469, 13.1)),
    2: ((0.3429, 0.0009, -72.9), (0.0003, 0.3436, 17.6)),
    3: ((0.3451, 0.0009, -73.3), (0.0015, 0.3451, 22.2)),
}

Affine = tuple[tuple[float, float, float], tuple[float, float, float]]


def parse_id(sample_id: str) -> dict[str, int]:
  match = ID_PATTERN.fullmatch(sample_id)
  if not match:
    raise ValueError(f'Not an NTU sample id: {sample_id!r}')
  return dict(
      zip(('setup', 'camera', 'subject', 'replication', 'action'), map(int, match.groups()))
  )


# ----------------------------------------------------------------------------------------------
# Splits.


def atomic_splits(sample_ids: Iterable[str]) -> dict[str, str]:
  """`{sample id: atomic split}` (see `modistill_jax.data.protocols`).

  The cross-view validation draw follows the reference: per class, sort the
  class's camera-2/3 ids, reset `np.random.seed(0)`, draw 31 without
  replacement. It is made over the ids given (all present samples); a class
  with fewer than 31 such ids (partial raw data) puts them all in validation.
  """
  ids = sorted(set(sample_ids))
  meta = {i: parse_id(i) for i in ids}
  by_class = collections.defaultdict(list)
  for i in ids:
    if meta[i]['camera'] not in CV_TEST_CAMERAS:
      by_class[meta[i]['action']].append(i)
  cv_val = set()
  for class_ids in by_class.values():
    np.random.seed(0)
    picks = np.random.choice(len(class_ids), min(CV_VAL_PER_CLASS, len(class_ids)), replace=False)
    cv_val.update(class_ids[p] for p in picks)
  splits = {}
  for i in ids:
    subject, camera = meta[i]['subject'], meta[i]['camera']
    cs = (
        'train' if subject in CS_TRAIN_SUBJECTS else 'val' if subject in CS_VAL_SUBJECTS else 'test'
    )
    cv = 'test' if camera in CV_TEST_CAMERAS else 'val' if i in cv_val else 'train'
    splits[i] = protocols.ntu_atomic_split(cs, cv)
  return splits


# ----------------------------------------------------------------------------------------------
# Skeletons and alignment.


class SkeletonError(ValueError):
  """A skeleton file that does not follow the documented format."""


def read_skeleton_frames(text: str) -> list[list[tuple[str, np.ndarray]]]:
  """Per frame, `(body id, (joints, 4) float64 depthX, depthY, colorX, colorY)` of each body.

  Frames with 0 bodies are empty lists; NaN, zero and out-of-frame joints are
  kept here (`valid_pairs`, `skeleton_joints` drop them).
  """
  lines = iter(text.split('\n'))
  frames = []
  try:
    for _ in range(int(next(lines))):
      bodies = []
      for _ in range(int(next(lines))):  # Bodies in this frame (can be 0).
        info = next(lines).split()  # Body info: 10 fields, the body id first.
        joints = []
        for _ in range(int(next(lines))):  # Joints (25).
          fields = next(lines).split()
          if len(fields) != 12:
            raise SkeletonError(f'joint line has {len(fields)} fields, not 12')
          joints.append([float(fields[3]), float(fields[4]), float(fields[5]), float(fields[6])])
        bodies.append((info[0] if info else '', np.asarray(joints, np.float64).reshape(-1, 4)))
      frames.append(bodies)
  except (StopIteration, ValueError) as e:
    raise SkeletonError(f'malformed skeleton file: {e or "ends early"}') from e
  return frames


def read_skeleton_pairs(text: str) -> np.ndarray:
  """`(N, 4)` float64 `colorX, colorY, depthX, depthY` of every joint of every body.

  Frames with 0 bodies contribute nothing; NaN, zero and out-of-frame joints
  are kept here and dropped by `valid_pairs`.
  """
  rows = [joints[:, [2, 3, 0, 1]] for bodies in read_skeleton_frames(text) for _, joints in bodies]
  return np.concatenate(rows) if rows else np.zeros((0, 4))


def skeleton_joints(frames: Sequence[Sequence[tuple[str, np.ndarray]]]) -> np.ndarray:
  """`(T, MAX_BODIES, 25, 2)` float32 joints registered to the stored frames (`skeletons.py`).

  The stored frames are the whole depth frame resized, so a joint's (depthX,
  depthY), pixel centres at integers of the nominal 512x424 frame, becomes the
  fractions `((depthX + 0.5) / 512, (depthY + 0.5) / 424)`. Joints that are
  not finite, zero, or outside the frame are NaN. Of the bodies a file tracks
  (false detections on furniture included), the `MAX_BODIES` tracked in the
  most frames are kept, each in one slot throughout (ties: first seen first).

  Raises:
    raw_clips.SampleError: no frame has a valid joint.
  """

  def valid(joints: np.ndarray) -> np.ndarray:
    xy = joints[:, :2]
    ok = np.isfinite(xy).all(axis=1) & (np.abs(xy) > 0).any(axis=1)
    return (
        ok
        & (xy[:, 0] >= 0)
        & (xy[:, 0] < DEPTH_SIZE[0])
        & (xy[:, 1] >= 0)
        & (xy[:, 1] < DEPTH_SIZE[1])
    )

  seen = collections.Counter()
  first = {}
  for f, bodies in enumerate(frames):
    for body_id, joints in bodies:
      first.setdefault(body_id, f)
      seen[body_id] += bool(valid(joints).any())
  kept = sorted((b for b in seen if seen[b]), key=lambda b: (-seen[b], first[b]))
  slots = {b: i for i, b in enumerate(kept[: skeletons.MAX_BODIES])}
  if not slots:
    raise raw_clips.SampleError('no tracked joint in the skeleton file')
  out = np.full((len(frames), skeletons.MAX_BODIES, 25, 2), np.nan, np.float32)
  for f, bodies in enumerate(frames):
    for body_id, joints in bodies:
      if body_id in slots and len(joints) == 25:
        ok = valid(joints)
        out[f, slots[body_id], ok] = (joints[ok, :2] + 0.5) / DEPTH_SIZE
  return out


def valid_pairs(pairs: np.ndarray) -> np.ndarray:
  """Drops joints that are not finite, zero, or outside the RGB or depth frame."""
  color, depth = pairs[:, :2], pairs[:, 2:]
  ok = np.isfinite(pairs).all(axis=1)
  ok &= (np.abs(color) > 0).any(axis=1) & (np.abs(depth) > 0).any(axis=1)
  for xy, (w, h) in ((color, RGB_SIZE), (depth, DEPTH_SIZE)):
    ok &= (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
  return pairs[ok]


@dataclasses.dataclass(frozen=True)
class AffineFit:
  matrix: np.ndarray  # (2, 3): depth = matrix @ [colorX, colorY, 1].
  inliers: int
  points: int
  rms_px: float
  median_px: float


def fit_affine(
    src: np.ndarray,
    dst: np.ndarray,
    threshold: float = INLIER_PX,
    iterations: int = RANSAC_ITERATIONS,
    seed: int = 0,
) -> AffineFit:
  """Robust affine `dst ~ A [src; 1]`: RANSAC, then least squares on the inliers."""
  n = len(src)
  if n < 3:
    raise ValueError(f'An affine fit needs 3 points, got {n}.')
  rng = np.random.default_rng(seed)
  x = np.concatenate([src, np.ones((n, 1))], axis=1)

  def solve(idx):
    return np.linalg.lstsq(x[idx], dst[idx], rcond=None)[0]  # (3, 2)

  def errors(a):
    return np.linalg.norm(x @ a - dst, axis=1)

  best = np.zeros(n, bool)
  for _ in range(iterations):
    a = solve(rng.choice(n, 3, replace=False))
    inliers = errors(a) < threshold
    if inliers.sum() > best.sum():
      best = inliers
  if best.sum() < 3:
    raise ValueError('No affine map explains three of the points.')
  for _ in range(3):  # Refit and re-select until the inlier set settles.
    a = solve(best)
    err = errors(a)
    updated = err < threshold
    if updated.sum() < 3 or (updated == best).all():
      break
    best = updated
  return AffineFit(
      matrix=a.T,
      inliers=int(best.sum()),
      points=n,
      rms_px=float(np.sqrt(np.mean(err[best] ** 2))),
      median_px=float(np.median(err[best])),
  )


def group_mapping(group: tuple[int, int], skeleton_paths: Sequence[epath.Path]) -> Affine:
  """The RGB->depth map of one (setup, camera) group; logs its residual."""
  setup, camera = group
  spread = (
      np.linspace(0, len(skeleton_paths) - 1, min(FIT_FILES_PER_GROUP, len(skeleton_paths)))
      .round()
      .astype(int)
  )
  chunks = []
  for path in (skeleton_paths[i] for i in sorted(set(spread.tolist()))):
    try:
      chunks.append(valid_pairs(read_skeleton_pairs(path.read_text())))
    except (OSError, UnicodeDecodeError, SkeletonError) as e:
      logging.warning('[ntu_rgbd] alignment ignores %s: %s', path.name, e)
  pairs = np.concatenate(chunks) if chunks else np.zeros((0, 4))
  if len(pairs) > FIT_MAX_POINTS:
    pairs = pairs[np.random.default_rng(0).choice(len(pairs), FIT_MAX_POINTS, replace=False)]
  fit = None
  if len(pairs) >= MIN_INLIERS:
    fit = fit_affine(pairs[:, :2], pairs[:, 2:])
  if fit is None or fit.inliers < MIN_INLIERS:
    logging.warning(
        '[ntu_rgbd] S%03dC%03d: %d usable joints; using the issue-#39 map of camera '
        '%d instead of a fit.',
        setup,
        camera,
        len(pairs),
        camera,
    )
    return ISSUE_39_AFFINES[camera]
  logging.info(
      '[ntu_rgbd] S%03dC%03d RGB->depth affine from %d joints (%d files): %d inliers, '
      'residual rms %.2f px, median %.2f px (depth pixels); matrix %s',
      setup,
      camera,
      fit.points,
      len(chunks),
      fit.inliers,
      fit.rms_px,
      fit.median_px,
      np.array2string(fit.matrix, precision=4, suppress_small=True).replace('\n', ''),
  )
  return tuple(tuple(float(v) for v in row) for row in fit.matrix)


def warp_to_depth(
    rgb: Image.Image, rgb_to_depth: Affine, depth_size: tuple[int, int]
) -> Image.Image:
  """Resamples an RGB frame into the depth frame (`depth_size` = (W, H) as decoded)."""
  # Nominal map -> decoded pixels: depth_px = D @ M @ C^-1 @ rgb_px.
  m = np.vstack([np.asarray(rgb_to_depth, np.float64), [0, 0, 1]])
  to_rgb_px = np.diag([rgb.width / RGB_SIZE[0], rgb.height / RGB_SIZE[1], 1.0])
  to_depth_px = np.diag([depth_size[0] / DEPTH_SIZE[0], depth_size[1] / DEPTH_SIZE[1], 1.0])
  forward = to_depth_px @ m @ np.linalg.inv(to_rgb_px)
  return raw_clips.warp_affine(rgb, forward, depth_size)


# ----------------------------------------------------------------------------------------------
# Finding and converting samples.


@dataclasses.dataclass(frozen=True)
class NtuSample:
  """One sample's files; `ir_path`/`skeleton_path` only where the build stores them."""

  sample_id: str
  split: str
  rgb_path: str
  depth_dir: str
  rgb_to_depth: Affine
  ir_path: str = ''
  skeleton_path: str = ''


def _is_sample_dir(name: str) -> bool:
  return ID_PATTERN.fullmatch(name) is not None


def _index(
    folders: Sequence[epath.Path], pattern: re.Pattern[str], want_dirs: bool
) -> dict[str, epath.Path]:
  """`{sample id: path}` over modality folders; the first of duplicates wins."""
  found = {}
  for folder in folders:
    for entry in sorted(folder.iterdir()):
      match = pattern.fullmatch(entry.name)
      if match and entry.is_dir() == want_dirs:
        if match.group(1) in found:
          logging.warning(
              '[ntu_rgbd] %s found twice; using %s', match.group(1), found[match.group(1)]
          )
        else:
          found[match.group(1)] = entry
  return found


def find_samples(
    root: epath.Path, modalities: Sequence[str] = records.MODALITIES
) -> tuple[list[NtuSample], list[raw_clips.Skip]]:
  """Finds the samples under `root` and fits the alignment of every group.

  With 'ir' or 'skeleton' among `modalities`, a sample without its infrared
  video or skeleton file is skipped (the 302 samples of the official
  missing-skeleton list among them).
  """
  names = (RGB_DIR, DEPTH_DIR, SKELETON_DIR, *((IR_DIR,) if 'ir' in modalities else ()))
  folders = collections.defaultdict(list)
  for folder in raw_clips.find_dirs(root, lambda n: n in names, _is_sample_dir):
    folders[folder.name].append(folder)
  ids = r'(S\d{3}C\d{3}P\d{3}R\d{3}A\d{3})'
  rgb = _index(folders[RGB_DIR], re.compile(ids + r'_rgb\.avi'), want_dirs=False)
  depth = _index(folders[DEPTH_DIR], re.compile(ids), want_dirs=True)
  skeleton_files = _index(folders[SKELETON_DIR], re.compile(ids + r'\.skeleton'), want_dirs=False)
  ir = _index(folders[IR_DIR], re.compile(ids + r'_ir\.avi'), want_dirs=False)
  if not rgb and not depth:
    raise FileNotFoundError(
        f'No NTU RGB+D sample under {root}: expected folders named {RGB_DIR}/ (holding '
        f'<ID>_rgb.avi) and {DEPTH_DIR}/ (holding <ID>/MDepth-%08d.png), plus {SKELETON_DIR}/ '
        f'(<ID>.skeleton) for the alignment, either directly in it or inside per-setup folders '
        f'such as nturgbd_rgb_s001/{RGB_DIR}/. Found {RGB_DIR}: {folders[RGB_DIR]}, '
        f'{DEPTH_DIR}: {folders[DEPTH_DIR]}.'
    )
  logging.info(
      '[ntu_rgbd] %d RGB videos, %d depth folders, %d skeleton files in %s',
      len(rgb),
      len(depth),
      len(skeleton_files),
      root,
  )
  splits = atomic_splits(set(rgb) | set(depth))

  skeletons_by_group = collections.defaultdict(list)
  for sample_id in sorted(skeleton_files):
    meta = parse_id(sample_id)
    skeletons_by_group[meta['setup'], meta['camera']].append(skeleton_files[sample_id])
  groups = sorted({(m['setup'], m['camera']) for m in map(parse_id, splits)})
  mappings = {g: group_mapping(g, skeletons_by_group[g]) for g in groups}

  samples, skipped = [], []
  for sample_id, split in sorted(splits.items()):
    if sample_id not in rgb:
      skipped.append(raw_clips.Skip(sample_id, split, f'no RGB video {sample_id}_rgb.avi'))
    elif sample_id not in depth:
      skipped.append(raw_clips.Skip(sample_id, split, f'no depth folder {DEPTH_DIR}/{sample_id}'))
    elif 'ir' in modalities and sample_id not in ir:
      skipped.append(raw_clips.Skip(sample_id, split, f'no infrared video {sample_id}_ir.avi'))
    elif 'skeleton' in modalities and sample_id not in skeleton_files:
      skipped.append(raw_clips.Skip(sample_id, split, f'no skeleton file {sample_id}.skeleton'))
    else:
      meta = parse_id(sample_id)
      samples.append(
          NtuSample(
              sample_id,
              split,
              str(rgb[sample_id]),
              str(depth[sample_id]),
              mappings[meta['setup'], meta['camera']],
              ir_path=str(ir[sample_id]) if 'ir' in modalities else '',
              skeleton_path=(str(skeleton_files[sample_id]) if 'skeleton' in modalities else ''),
          )
      )
  return samples, skipped


def depth_frames(folder: epath.Path) -> Mapping[int, epath.Path]:
  frames = {}
  for entry in folder.iterdir():
    match = DEPTH_FRAME.fullmatch(entry.name)
    if match:
      frames[int(match.group(1))] = entry
  return frames


def convert(sample: NtuSample, height: int, width: int) -> dict:
  """One sample -> one example; raises `SampleError` on bad input."""
  depth_files = depth_frames(epath.Path(sample.depth_dir))
  if not depth_files:
    raise raw_clips.SampleError(f'no MDepth-*.png in {DEPTH_DIR}/{sample.sample_id}')
  depth_images = {f: raw_clips.read_image(path) for f, path in sorted(depth_files.items())}
  depth_size = next(iter(depth_images.values())).size
  if any(im.size != depth_size for im in depth_images.values()):
    raise raw_clips.SampleError('depth frames of different sizes')

  def warp(image):
    aligned = warp_to_depth(image.convert('RGB'), sample.rgb_to_depth, depth_size)
    return raw_clips.resize_rgb(aligned, height, width)

  num_rgb, rgb = raw_clips.decode_video(epath.Path(sample.rgb_path), depth_images, warp)
  common = set(rgb)
  frames_raw = {'rgb': num_rgb, 'depth': len(depth_files)}
  if sample.ir_path:
    frames_raw['ir'], ir = read_ir(epath.Path(sample.ir_path), depth_images, height, width)
    common &= set(ir)
  if sample.skeleton_path:
    path = epath.Path(sample.skeleton_path)
    try:
      joints = skeleton_joints(read_skeleton_frames(path.read_text()))
    except (OSError, UnicodeDecodeError, SkeletonError) as e:
      raise raw_clips.SampleError(f'bad skeleton file {path.name}: {e}') from e
    frames_raw['skeleton'] = len(joints)
    common &= set(range(1, len(joints) + 1))  # Skeleton frame f <-> depth frame f, 1-based.
  common = sorted(common)
  if not common:
    raise raw_clips.SampleError(
        f'no depth frame number within the {num_rgb} RGB frames'
        + ''.join(f', {frames_raw[m]} {m} frames' for m in ('ir', 'skeleton') if m in frames_raw)
    )
  depth = raw_clips.depth_clip(
      [depth_images[f] for f in common], [depth_files[f].name for f in common]
  )
  frames = {
      'rgb': np.stack([rgb[f] for f in common]),
      'depth': raw_clips.depth_clip_to_code(depth, height, width),
  }
  if sample.ir_path:
    frames['ir'] = np.stack([ir[f] for f in common])
  if sample.skeleton_path:
    frames['skeleton'] = joints[np.asarray(common) - 1]
  meta = parse_id(sample.sample_id)
  return records.make_clip(
      frames=frames,
      frames_raw=frames_raw,
      label=meta['action'] - 1,
      sample_id=sample.sample_id,
      subject=meta['subject'],
      view=meta['camera'],
      setup=meta['setup'],
      replication=meta['replication'],
  )


def read_ir(
    path: epath.Path, depth_images: Mapping[int, Image.Image], height: int, width: int
) -> tuple[int, dict[int, np.ndarray]]:
  """`(frames in the video, {frame: (height, width) uint8})` of an infrared video.

  Infrared comes from the depth camera, so its frame f is depth frame f's
  view, in the same pixels: each decoded frame must be the depth frames' size
  (else the sample is skipped), and is resized as RGB is (bilinear).
  """
  depth_size = next(iter(depth_images.values())).size

  def gray(image: Image.Image) -> np.ndarray:
    if image.size != depth_size:
      raise raw_clips.SampleError(
          f'infrared frames of {path.name} are {image.width}x{image.height}, the depth frames '
          f"{depth_size[0]}x{depth_size[1]}: not the depth camera's frame"
      )
    return np.asarray(image.convert('L').resize((width, height), Image.BILINEAR))

  return raw_clips.decode_video(path, depth_images, gray)
