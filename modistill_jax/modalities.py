"""What each input modality is, from a builder's frame to the image a stream reads.

One `Modality` per kind of frame a dataset can hold. The records
(`data/records.py`: which features a build has, how a frame is encoded and
checked), the input pipeline (`data/pipeline.py`: how a stored frame is
decoded, brought to the model's size and flipped on the host, its shape in a
batch) and the on-device preprocessing (`data/preprocess.py`, `data/skeletons.py`:
the 3-channel image a ResNet stream reads, and Table 2's noise) read these
descriptions rather than naming modalities. Adding a modality is one
description here plus a builder's reader that produces its frames.

| name     | a builder stores a frame as   | the pipeline yields     | the stream reads       |
|----------|-------------------------------|-------------------------|------------------------|
| rgb      | JPEG (quality 90)             | `(H, W, 3)` uint8       | the colours            |
| depth    | 8-bit PNG of depth codes      | `(H, W, 1)` uint8 codes | jet colours, or gray   |
| ir       | 8-bit gray PNG                | `(H, W, 1)` uint8       | gray on 3 channels, or jet |
| skeleton | `.npy` joint positions        | `(2, 49, 2, 2)` float32 | joint and limb heat-maps |

Noise (the paper's section 4.3, Table 2) is one model for every modality: the
3-channel image the stream reads, before normalisation, multiplied element
by element by `n ~ N(1, sigma)` and clipped to 0..255
(`preprocess.depth_noise`, which `steps.py` applies to the privileged
modalities); "void" replaces that image by zeros (`preprocess.void_depth`).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses

import jax
import numpy as np

from modistill_jax.data import frame_codecs
from modistill_jax.data import jet
from modistill_jax.data import preprocess
from modistill_jax.data import skeletons


@dataclasses.dataclass(frozen=True)
class Modality:
  """How one modality goes from a builder's frame to a stream's input.

  Attributes:
    name: the key of its frames in records and batches, and of its stream.
    title: how messages and the records' feature docs name it.
    stored: how a builder stores a frame (for documentation).
    encode: one frame as a builder hands it to `records.make_clip` -> its record bytes.
    decode: record bytes -> the frame on the host (raises ValueError on bad bytes).
    check_clip: `(clip, where)` -> the clip a builder hands over, checked (ValueError
      naming `where`), as the array `encode` takes frame by frame.
    resample: how the pipeline brings a decoded frame to the model's size:
      'image' (Pillow bilinear, JPEG DCT scaling when asked), 'nearest' (codes,
      which cannot be blended), 'intensity' (Pillow bilinear, one channel) or
      'joints' (coordinates scaled, `skeletons.segments`).
    batch_shape: `image_size` -> the shape of one frame in a batch.
    batch_dtype: the dtype of its frames in a batch.
    encodings: the images the device can make of it, the default first.
    network_input: `(clips, image_size, encoding)` -> the `(..., H, W, 3)`
      0..255 image the stream reads (uint8 or float32), on the device.
    noise: Table 2's corruption `(key, image, sigma)` of the image
      `network_input` made.
    void: Table 2's "void" condition of that image.
    channels: the channels of the image the stream reads (3: an ImageNet ResNet's).
  """

  name: str
  title: str
  stored: str
  encode: Callable[[np.ndarray], bytes]
  decode: Callable[[bytes], np.ndarray]
  check_clip: Callable[[np.ndarray, str], np.ndarray]
  resample: str
  batch_shape: Callable[[tuple[int, int]], tuple[int, ...]]
  batch_dtype: type
  encodings: tuple[str, ...]
  network_input: Callable[[jax.Array, tuple[int, int], str], jax.Array]
  noise: Callable[[jax.Array, jax.Array, float], jax.Array] = preprocess.depth_noise
  void: Callable[[jax.Array], jax.Array] = preprocess.void_depth
  channels: int = 3


def _uint8_clip(channels: int, title: str, max_value: int = 255):
  """A `check_clip` for `(T, H, W[, 3])` uint8 clips whose values stay within `max_value`."""

  def check(clip: np.ndarray, where: str) -> np.ndarray:
    clip = np.asarray(clip)
    shape = '(T, H, W, 3)' if channels == 3 else '(T, H, W)'
    ndim = 4 if channels == 3 else 3
    if clip.ndim != ndim or (channels == 3 and clip.shape[-1] != 3):
      raise ValueError(f'{where}: {title} must be {shape}, got {clip.shape}.')
    if clip.dtype != np.uint8 or clip.max(initial=0) > max_value:
      raise ValueError(
          f'{where}: {title} must be uint8 from 0 to {max_value}, got {clip.dtype} '
          f'up to {clip.max(initial=0)}.'
      )
    return clip

  return check


def _check_depth_codes(clip: np.ndarray, where: str) -> np.ndarray:
  clip = np.asarray(clip)
  if clip.ndim != 3:
    raise ValueError(f'{where}: depth must be (T, H, W) codes, got {clip.shape}.')
  if clip.dtype != np.uint8 or clip.max(initial=0) > jet.MAX_CODE:
    raise ValueError(
        f'{where}: depth must be uint8 codes of jet.depth_to_code (0 to '
        f'{jet.MAX_CODE}), got {clip.dtype} up to {clip.max()}.'
    )
  return clip


def _image_shape(channels: int) -> Callable[[tuple[int, int]], tuple[int, ...]]:
  return lambda image_size: (*image_size, channels)


RGB = Modality(
    name='rgb',
    title='RGB',
    stored='JPEG, quality 90',
    encode=frame_codecs.encode_jpeg,
    decode=frame_codecs.decode_image,
    check_clip=_uint8_clip(3, 'RGB'),
    resample='image',
    batch_shape=_image_shape(3),
    batch_dtype=np.uint8,
    encodings=('rgb',),
    network_input=lambda clips, image_size, encoding: clips,
)
DEPTH = Modality(
    name='depth',
    title='depth',
    stored='single-channel 8-bit PNG of the per-clip codes of `jet.depth_to_code`',
    encode=frame_codecs.encode_png,
    decode=frame_codecs.decode_depth,
    check_clip=_check_depth_codes,
    resample='nearest',
    batch_shape=_image_shape(1),
    batch_dtype=np.uint8,
    encodings=preprocess.DEPTH_ENCODINGS,
    network_input=lambda clips, image_size, encoding: preprocess.depth_image(clips, encoding),
)
IR = Modality(
    name='ir',
    title='infrared',
    stored="single-channel 8-bit PNG of the sensor's infrared intensity",
    encode=frame_codecs.encode_png,
    decode=frame_codecs.decode_gray,
    check_clip=_uint8_clip(1, 'infrared'),
    resample='intensity',
    batch_shape=_image_shape(1),
    batch_dtype=np.uint8,
    encodings=preprocess.IR_ENCODINGS,
    network_input=lambda clips, image_size, encoding: preprocess.ir_image(clips, encoding),
)
SKELETON = Modality(
    name='skeleton',
    title='skeleton',
    stored='`.npy` float32 (2 bodies, joints, 2): joint positions as fractions of the frame',
    encode=skeletons.encode,
    decode=skeletons.decode,
    check_clip=skeletons.check_joints,
    resample='joints',
    batch_shape=lambda image_size: (skeletons.MAX_BODIES, skeletons.SEGMENTS, 2, 2),
    batch_dtype=np.float32,
    encodings=('heat_maps',),
    network_input=lambda clips, image_size, encoding: skeletons.heat_maps(clips, image_size),
)

# Every modality, in the order records store and batches list them.
ALL = {m.name: m for m in (RGB, DEPTH, IR, SKELETON)}
NAMES = tuple(ALL)


def get(name: str) -> Modality:
  """The description of modality `name`; ValueError naming the known ones otherwise."""
  if name not in ALL:
    raise ValueError(f'Unknown modality {name!r}; the modalities are {NAMES}.')
  return ALL[name]


def ordered(names) -> tuple[str, ...]:
  """`names`, checked (known, distinct), in the canonical order `NAMES`."""
  names = tuple(names)
  for name in names:
    get(name)
  if len(set(names)) != len(names):
    raise ValueError(f'Modalities must be distinct, got {names}.')
  return tuple(n for n in NAMES if n in names)
