"""Skeleton joints: how records store them, and the joint and limb heat-maps a stream reads.

A skeleton frame is stored as coordinates, not as an image: a few hundred
bytes where a rendered frame would be tens of kilobytes, and renderable at
whatever size the model reads. Its record holds the `.npy` bytes of a float32
`(MAX_BODIES, joints, 2)` array: each joint's `(u, v)` position as a fraction
of the stored frame's width and height (0 is the left/top edge, 1 the
right/bottom one, so a pixel centre `x` of a `W`-wide frame is `(x + 0.5) / W`),
NaN for an untracked joint or an absent body. Being fractions of the stored
frame, they are registered to the other modalities' pixels whatever size the
pipeline resizes those to.

The joint count names the skeleton's layout (`LAYOUTS`): which joints its limbs
join. The pipeline turns a frame into fixed-size segments in output pixels,
`(MAX_BODIES, SEGMENTS, 2 ends, (x, y))`: the joints first, as zero-length
segments (padded with NaN up to `MAX_JOINTS`), then the limbs (padded up to
`MAX_LIMBS`), so batches of every layout have one shape and the device needs no
layout. `heat_maps` renders them on the device into the 3-channel image the
network reads: a Gaussian bump of `sigma = image height / 56` (4 pixels at 224)
around each joint (channel 0), around each limb's segment (channel 1), and
their maximum (channel 2, the whole figure), each 0..255.
"""

from __future__ import annotations

import io
import threading

import jax
import jax.numpy as jnp
import numpy as np

MAX_BODIES = 2
# Kinect v2 (NTU RGB+D), 25 joints, in the dataset's order: spine_base, spine_mid, neck, head,
# shoulder/elbow/wrist/hand L, the same R, hip/knee/ankle/foot L, the same R, spine_shoulder,
# hand_tip_L, thumb_L, hand_tip_R, thumb_R (0-based indices below).
KINECT_V2_LIMBS = (
    (0, 1), (1, 20), (20, 2), (2, 3),
    (20, 4), (4, 5), (5, 6), (6, 7), (7, 21), (7, 22),
    (20, 8), (8, 9), (9, 10), (10, 11), (11, 23), (11, 24),
    (0, 12), (12, 13), (13, 14), (14, 15),
    (0, 16), (16, 17), (17, 18), (18, 19),
)  # fmt: skip
# Kinect v1 (Microsoft's SDK order, also NW-UCLA's), 20 joints: hip_center, spine,
# shoulder_center, head, shoulder/elbow/wrist/hand L, the same R, hip/knee/ankle/foot L, the same R.
KINECT_V1_LIMBS = (
    (0, 1), (1, 2), (2, 3),
    (2, 4), (4, 5), (5, 6), (6, 7),
    (2, 8), (8, 9), (9, 10), (10, 11),
    (0, 12), (12, 13), (13, 14), (14, 15),
    (0, 16), (16, 17), (17, 18), (18, 19),
)  # fmt: skip
# Layouts by joint count -> the limbs joining them.
LAYOUTS = {25: KINECT_V2_LIMBS, 20: KINECT_V1_LIMBS}
MAX_JOINTS = max(LAYOUTS)
MAX_LIMBS = max(len(limbs) for limbs in LAYOUTS.values())
SEGMENTS = MAX_JOINTS + MAX_LIMBS
# A joint's Gaussian width, as a fraction of the rendered image's height.
SIGMA_OF_HEIGHT = 1 / 56


def check_joints(joints: np.ndarray, where: str) -> np.ndarray:
  """`joints` as float32 `(T, MAX_BODIES, J, 2)` fractions of a known layout, or ValueError.

  Args:
    joints: a clip's joints, `(T, bodies, J, 2)` with `bodies <= MAX_BODIES`
      (fewer are padded with NaN); NaN where untracked.
    where: what the error names (a sample id, a file).
  """
  joints = np.asarray(joints, np.float32)
  if joints.ndim != 4 or joints.shape[-1] != 2 or not 1 <= joints.shape[1] <= MAX_BODIES:
    raise ValueError(
        f'{where}: joints must be (frames, bodies <= {MAX_BODIES}, joints, 2), got {joints.shape}.'
    )
  if joints.shape[2] not in LAYOUTS:
    raise ValueError(
        f'{where}: {joints.shape[2]} joints per body is not a known skeleton layout '
        f'(joint counts {sorted(LAYOUTS)}).'
    )
  finite = joints[np.isfinite(joints)]
  if finite.size and (finite.min() < 0 or finite.max() > 1):
    raise ValueError(
        f'{where}: joint positions must be fractions of the frame (0 to 1, NaN if '
        f'untracked), got {finite.min():.3f} to {finite.max():.3f}.'
    )
  if joints.shape[1] < MAX_BODIES:
    pad = np.full((joints.shape[0], MAX_BODIES - joints.shape[1], *joints.shape[2:]), np.nan)
    joints = np.concatenate([joints, pad.astype(np.float32)], axis=1)
  return joints


def encode(joints: np.ndarray) -> bytes:
  """One frame's `(MAX_BODIES, J, 2)` float32 joints -> the `.npy` bytes a record stores."""
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(joints, np.float32), allow_pickle=False)
  return buffer.getvalue()


# `np.load` parses a `.npy` header with `ast.literal_eval`. CPython 3.11 keeps the AST
# constructor's recursion depth in interpreter state that every thread shares, so two threads
# parsing at once can fail with "SystemError: AST constructor recursion depth mismatch" (see
# python/cpython#106905); the input pipeline decodes frames in threads, and a full-size run
# on the miniature stopped on it. One load at a time (a header of a few dozen bytes).
_NPY_LOAD_LOCK = threading.Lock()


def decode(data: bytes) -> np.ndarray:
  """A stored skeleton frame -> `(MAX_BODIES, J, 2)` float32 fractions, NaN where untracked."""
  try:
    with _NPY_LOAD_LOCK:
      joints = np.load(io.BytesIO(data), allow_pickle=False)
  except ValueError as e:
    raise ValueError(f'Cannot decode a {len(data)}-byte frame as skeleton joints: {e}') from e
  if joints.dtype != np.float32 or joints.shape[:1] != (MAX_BODIES,) or joints.ndim != 3:
    raise ValueError(
        f'A skeleton frame must be float32 ({MAX_BODIES}, joints, 2), got '
        f'{joints.dtype} {joints.shape}.'
    )
  return joints


def segments(joints: np.ndarray, image_size: tuple[int, int], flip: bool) -> np.ndarray:
  """One frame's joints -> `(MAX_BODIES, SEGMENTS, 2, 2)` float32 segments in output pixels.

  Pixel centres are at integer coordinates of an `image_size` `(H, W)` image;
  `flip` mirrors them as the pipeline mirrors the other modalities' frames.
  """
  height, width = image_size
  bodies, num_joints, _ = joints.shape
  u = 1.0 - joints[..., 0] if flip else joints[..., 0]
  points = np.stack([u * width - 0.5, joints[..., 1] * height - 0.5], axis=-1)
  out = np.full((bodies, SEGMENTS, 2, 2), np.nan, np.float32)
  out[:, :num_joints, 0] = points
  out[:, :num_joints, 1] = points
  limbs = np.asarray(LAYOUTS[num_joints])
  out[:, MAX_JOINTS : MAX_JOINTS + len(limbs), 0] = points[:, limbs[:, 0]]
  out[:, MAX_JOINTS : MAX_JOINTS + len(limbs), 1] = points[:, limbs[:, 1]]
  return out


def _distance_squared(x: jax.Array, y: jax.Array, ends: jax.Array) -> jax.Array:
  """Squared distance from pixels `(H, 1)`, `(1, W)` to segments `(..., 2, 2)`: `(..., H, W)`."""
  a, b = ends[..., 0, :, None, None], ends[..., 1, :, None, None]  # (..., 2, 1, 1)
  d = b - a
  length2 = d[..., 0, :, :] ** 2 + d[..., 1, :, :] ** 2
  t = ((x - a[..., 0, :, :]) * d[..., 0, :, :] + (y - a[..., 1, :, :]) * d[..., 1, :, :]) / (
      jnp.where(length2 > 0, length2, 1.0)
  )
  t = jnp.clip(t, 0.0, 1.0)
  px = a[..., 0, :, :] + t * d[..., 0, :, :]
  py = a[..., 1, :, :] + t * d[..., 1, :, :]
  return (x - px) ** 2 + (y - py) ** 2


def _brightest(segments: jax.Array, x: jax.Array, y: jax.Array, sigma: float) -> jax.Array:
  """Max over segments `(N, ..., 2, 2)` of each one's Gaussian bump: `(..., H, W)`.

  A scan over the segments keeps one `(..., H, W)` maximum in memory, where
  broadcasting all of them at once would hold `N` times that (1.6 GB for 8
  clips of 5 frames at 224, measured with XLA's memory analysis on CPU).
  """

  def step(brightest, ends):
    valid = jnp.isfinite(ends).all(axis=(-1, -2))
    ends = jnp.where(jnp.isfinite(ends), ends, 0.0)
    bump = jnp.exp(-_distance_squared(x, y, ends) / (2 * sigma**2))
    return jnp.maximum(brightest, jnp.where(valid[..., None, None], bump, 0.0)), None

  start = jnp.zeros((*segments.shape[1:-2], y.shape[0], x.shape[1]), jnp.float32)
  return jax.lax.scan(step, start, segments)[0]


def heat_maps(clips: jax.Array, image_size: tuple[int, int]) -> jax.Array:
  """Pipeline segments `(..., MAX_BODIES, SEGMENTS, 2, 2)` -> `(..., H, W, 3)` float32 0..255.

  Channels: joints, limbs, and their maximum (see the module docstring). A
  NaN segment (untracked joint, absent body, padding) adds nothing.
  """
  height, width = image_size
  sigma = height * SIGMA_OF_HEIGHT
  y = jnp.arange(height, dtype=jnp.float32)[:, None]
  x = jnp.arange(width, dtype=jnp.float32)[None, :]
  # (bodies, segments, ..., 2, 2): the segments to scan over first.
  segments = jnp.moveaxis(clips.astype(jnp.float32), (-4, -3), (0, 1))
  joints = segments[:, :MAX_JOINTS].reshape(-1, *segments.shape[2:])
  limbs = segments[:, MAX_JOINTS:].reshape(-1, *segments.shape[2:])
  joints, limbs = _brightest(joints, x, y, sigma), _brightest(limbs, x, y, sigma)
  image = jnp.stack([joints, limbs, jnp.maximum(joints, limbs)], axis=-1)
  return 255.0 * image
