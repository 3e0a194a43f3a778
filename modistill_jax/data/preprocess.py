"""On-device preprocessing of uint8 clips: normalisation and the depth noise study.

The input pipeline ships frames to the accelerator as uint8, four times fewer
bytes than float32 over the host-to-device link; everything that turns them
into network inputs happens here, inside the jitted step, where it is a few
fused element-wise ops.

* `normalize` is `(x - mean) / std` per channel, in 0..255 units. It covers
  both conventions of the ImageNet weights a stream may start from: TF-slim and
  Keras Caffe-style subtract the mean with `std = (1, 1, 1)` (the reference
  used the VGG means (123.68, 116.78, 103.94)); torchvision divides by its std
  scaled to 0..255 as well. The depth stream uses the statistics of the weights
  it starts from, since it reads jet images through an ImageNet network.
* `depth_image` turns the stored one-channel depth codes (`jet.depth_to_code`)
  into the image the depth stream reads: its jet colours (`input.depth_encoding
  ='jet'`), bit for bit the jet frames builders used to store, or its 8-bit
  gray level on 3 channels (`'gray'`; the reference's only published writer
  stored gray depth), each one gather from a 256-entry table. 3-channel jet
  images (frames from elsewhere, older tests) pass through `jet_to_gray`.
* `depth_noise` is the paper's robustness experiment (section 4.3, Table 2):
  the 3-channel depth image the network reads (jet, or gray), before
  normalisation, is multiplied element-wise by `n ~ N(1, sigma)` and clipped
  to [0, 255]. The paper's table is indexed by the variance `sigma^2` (1e-3
  ... 1e1): pass `sigma = sqrt(variance)`.
* `void_depth` is the table's "void" column: depth replaced by zeros.
* `ir_image` turns stored infrared frames (one 8-bit intensity channel) into
  the image an infrared stream reads: the intensity on 3 channels (`'gray'`)
  or through the jet map (`'jet'`, bright red, dark blue).

Every modality's noise and void are these two functions applied to the image
its stream reads (`modistill_jax.modalities`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from modistill_jax.data import jet


def normalize(
    clips: jax.Array, mean: Sequence[float], std: Sequence[float], dtype: jnp.dtype = jnp.float32
) -> jax.Array:
  """`(clips - mean) / std` over the last (channel) axis, in 0..255 units.

  Args:
    clips: `(..., 3)` images, any dtype (uint8 from the pipeline, or float
      after `depth_noise`).
    mean: per-channel mean in 0..255 units.
    std: per-channel standard deviation in 0..255 units; ones for mean
      subtraction only.
    dtype: the compute dtype of the network.
  """
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return ((clips.astype(jnp.float32) - mean) / std).astype(dtype)


def depth_noise(key: jax.Array, depth: jax.Array, sigma: float) -> jax.Array:
  """`clip(depth * n, 0, 255)` with `n ~ N(1, sigma)` drawn per element, float32."""
  depth = depth.astype(jnp.float32)
  n = 1.0 + sigma * jax.random.normal(key, depth.shape, jnp.float32)
  return jnp.clip(depth * n, 0.0, 255.0)


def void_depth(depth: jax.Array) -> jax.Array:
  """All-zero depth, same shape and dtype: the "void" test condition."""
  return jnp.zeros_like(depth)


def _gray_palette() -> tuple[np.ndarray, np.ndarray]:
  """The distinct colours a stored depth pixel can have, and the gray level of each.

  A jet depth image is `jet_table()[level]` of an 8-bit per-clip level
  (`data/jet.py`: 255 nearest, 0 farthest), or black where invalid. Inverting the
  256-entry table recovers the level exactly except on jet's one flat stretch:
  levels 28 to 32 all render (0, 0, 255), so they come back as their middle, 30.
  Black comes back as 0.
  """
  table = jet.jet_table()
  codes = table.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
  _, first, colour_of_level = np.unique(codes, return_index=True, return_inverse=True)
  level_sum = np.bincount(colour_of_level, weights=np.arange(len(table)))
  levels = np.round(level_sum / np.bincount(colour_of_level)).astype(np.uint8)
  return (
      np.concatenate([table[first], np.zeros((1, 3), np.uint8)]),
      np.concatenate([levels, np.zeros(1, np.uint8)]),
  )


DEPTH_ENCODINGS = ('jet', 'gray')
_GRAY_PALETTE, _GRAY_LEVELS = _gray_palette()


def jet_to_gray(depth: jax.Array) -> jax.Array:
  """Jet-coloured uint8 depth `(..., 3)` -> its gray level copied to 3 channels, uint8.

  Each pixel takes the level of the nearest palette colour (squared RGB
  distance), so a stored colour maps back exactly (see `_gray_palette`); a
  colour no stored pixel has (only when the pipeline resized the frames, i.e.
  `input.image_size` differs from the build's) gets the level of the nearest
  one, an approximation.
  """
  rgb = depth.astype(jnp.int32)
  palette = jnp.asarray(_GRAY_PALETTE, jnp.int32)
  # The channel sums are written out so that XLA fuses the distances into the
  # argmin instead of materialising a (pixels, palette) array.
  distance = sum((rgb[..., c, None] - palette[:, c]) ** 2 for c in range(3))
  level = jnp.asarray(_GRAY_LEVELS)[jnp.argmin(distance, axis=-1)]
  return jnp.repeat(level[..., None], 3, axis=-1)


def depth_image(depth: jax.Array, encoding: str) -> jax.Array:
  """Depth as the network reads it: `(..., 3)` uint8 jet colours or gray levels.

  Args:
    depth: `(..., 1)` uint8 codes of `jet.depth_to_code`, as the pipeline
      yields them, or `(..., 3)` jet colours.
    encoding: one of `DEPTH_ENCODINGS`.
  """
  if encoding not in DEPTH_ENCODINGS:
    raise ValueError(f'depth encoding must be one of {DEPTH_ENCODINGS}, got {encoding!r}.')
  if depth.shape[-1] == 3:
    return jet_to_gray(depth) if encoding == 'gray' else depth
  if depth.shape[-1] != 1:
    raise ValueError(f'depth must be (..., 1) codes or (..., 3) jet colours, got {depth.shape}.')
  if encoding == 'jet':
    table = jnp.asarray(jet.JET_OF_CODE)
  else:
    table = jnp.asarray(np.repeat(jet.GRAY_OF_CODE[:, None], 3, axis=1))
  return jnp.take(table, depth[..., 0].astype(jnp.int32), axis=0)


IR_ENCODINGS = ('gray', 'jet')


def ir_image(ir: jax.Array, encoding: str) -> jax.Array:
  """Infrared as the network reads it: `(..., 1)` uint8 intensity -> `(..., 3)` uint8.

  Args:
    ir: `(..., 1)` uint8 intensities, as the pipeline yields them.
    encoding: one of `IR_ENCODINGS`: the intensity on 3 channels, or its jet colour.
  """
  if encoding not in IR_ENCODINGS:
    raise ValueError(f'infrared encoding must be one of {IR_ENCODINGS}, got {encoding!r}.')
  if ir.shape[-1] != 1:
    raise ValueError(f'infrared must be (..., 1) intensities, got {ir.shape}.')
  if encoding == 'gray':
    return jnp.repeat(ir.astype(jnp.uint8), 3, axis=-1)
  return jnp.take(jnp.asarray(jet.jet_table()), ir[..., 0].astype(jnp.int32), axis=0)
