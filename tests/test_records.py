"""The record format's frame codecs: OpenCV decoding gives Pillow's pixels."""

import io

import numpy as np
from PIL import Image
import pytest

from modistill_jax.data import records


def textured_frames(seed: int) -> np.ndarray:
  """Two 40x56 frames with edges, gradients and noise: every codec path has work."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:40, :56]
  base = np.stack([4 * x, 6 * y, (x * y) % 256], -1)
  frames = base[None] + rng.integers(0, 40, (2, 40, 56, 3))
  frames[:, 10:25, 20:30] = (250, 30, 10)
  return np.clip(frames, 0, 255).astype(np.uint8)


def pillow_decode(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert('RGB'))


@pytest.mark.parametrize('encode', [records.encode_jpeg, records.encode_png])
def test_decode_matches_pillow(encode):
  for frame in textured_frames(0):
    data = encode(frame)
    decoded = records.decode_image(data)
    assert decoded.dtype == np.uint8 and decoded.shape == frame.shape
    np.testing.assert_array_equal(decoded, pillow_decode(data))


def test_png_depth_round_trips_exactly():
  for frame in textured_frames(1):
    np.testing.assert_array_equal(records.decode_image(records.encode_png(frame)), frame)


def test_jpeg_is_close_and_in_rgb_order():
  frame = np.zeros((16, 16, 3), np.uint8)
  frame[..., 0] = 220  # red: BGR order would put it in the last channel
  decoded = records.decode_image(records.encode_jpeg(frame))
  assert np.abs(decoded.astype(int) - frame).max() <= 3


def test_undecodable_bytes_raise():
  with pytest.raises(ValueError, match='Cannot decode a 9-byte frame'):
    records.decode_image(b'not a jpg')
