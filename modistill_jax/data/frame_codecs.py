"""Encoded frames: the image codecs of the records (JPEG, 8-bit PNG), on OpenCV and Pillow.

Which modality is stored with which codec is its description's business
(`modistill_jax.modalities`); this module only encodes and decodes, checking
that a stored frame is what it claims to be.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

JPEG_QUALITY = 90


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(frame, np.uint8)).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def encode_png(frame: np.ndarray) -> bytes:
  """Lossless PNG of `(H, W, 3)` RGB or `(H, W)` 8-bit single-channel frames."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(frame, np.uint8)).save(buffer, format='PNG', compress_level=6)
  return buffer.getvalue()


def decode_image(data: bytes) -> np.ndarray:
  """Encoded JPEG/PNG bytes -> `(H, W, 3)` uint8 RGB.

  OpenCV rather than Pillow because `cv2.imdecode` is one C call that releases
  the GIL throughout and writes straight into a numpy array: the input
  pipeline's decoding threads then use every core, where Pillow's Python-level
  header parsing and `tobytes` copy serialise a large part of each frame. Both
  use libjpeg-turbo and libpng, and give the same pixels for this format
  (`tests/test_records.py`).
  """
  frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
  if frame is None:
    raise ValueError(f'Cannot decode a {len(data)}-byte frame as JPEG or PNG.')
  return frame


# `decode_image_reduced` factors: libjpeg's DCT scaling, as OpenCV's IMREAD_REDUCED_* flags
# (without their BGR bit, so that the frame comes out RGB).
REDUCED_DECODE_FLAGS = {
    2: (cv2.IMREAD_REDUCED_COLOR_2 & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB,
    4: (cv2.IMREAD_REDUCED_COLOR_4 & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB,
}


def decode_image_reduced(data: bytes, factor: int) -> np.ndarray:
  """A JPEG decoded at 1/`factor` of its size (2 or 4): `(ceil(H/f), ceil(W/f), 3)` uint8 RGB.

  libjpeg-turbo computes the smaller image from the DCT coefficients (a 4x4 or
  2x2 inverse DCT per 8x8 block instead of 8x8, and upsampling and colour
  conversion at the smaller size), so it costs a fraction of a full decode.
  Its pixels are not those of a full decode resized (`pipeline.resize_frame`),
  which is why the pipeline uses it only when asked (`input.reduced_decoding`).
  """
  frame = cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED_DECODE_FLAGS[factor])
  if frame is None:
    raise ValueError(f'Cannot decode a {len(data)}-byte frame as JPEG at 1/{factor} size.')
  return frame


def decode_depth(data: bytes) -> np.ndarray:
  """A stored depth frame (single-channel PNG of `jet.depth_to_code`) -> `(H, W)` uint8."""
  frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if frame is None or frame.ndim != 2 or frame.dtype != np.uint8:
    raise ValueError(
        f'Cannot decode a {len(data)}-byte frame as an 8-bit single-channel '
        'depth PNG' + ('' if frame is None else f' (got {frame.dtype} {frame.shape})') + '.'
    )
  return frame


def decode_gray(data: bytes) -> np.ndarray:
  """A stored 8-bit single-channel PNG (e.g. an infrared frame) -> `(H, W)` uint8."""
  frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if frame is None or frame.ndim != 2 or frame.dtype != np.uint8:
    raise ValueError(
        f'Cannot decode a {len(data)}-byte frame as an 8-bit single-channel '
        'PNG' + ('' if frame is None else f' (got {frame.dtype} {frame.shape})') + '.'
    )
  return frame
