"""Depth in millimetres -> jet-coloured RGB, per clip, without matplotlib.

The paper renders depth through a jet colour map (as in Eitel et al.) so that
ImageNet-initialised streams can read it. Choices, shared by every builder:

* Normalisation is per clip over the valid (non-zero) pixels of all its frames:
  `v = (far - d) / (far - near)`, where `near`/`far` are the smallest/largest
  valid depth in the clip. Near is red, far is blue, and the colours of a body
  do not flicker from frame to frame as a per-frame range would make them.
* Invalid pixels (depth 0: no reading, or masked out) are black, a colour the
  jet map never produces (its darkest entry is dark blue, (0, 0, 128)).
* A clip with no valid pixel renders all black; one with a single valid depth
  value renders that value as the middle of the map.

The 256-entry table is matplotlib's piecewise-linear 'jet', rebuilt from its
published breakpoints with `numpy.interp`. A jet depth pixel is therefore one
of its colours indexed by an 8-bit level (255 nearest, 0 farthest), or black.

Records store the depth one channel deep, as an 8-bit code per pixel
(`depth_to_code`), and the input pipeline's consumer colours it on the device
through `JET_OF_CODE` (`preprocess.depth_image`). A code is the level with two
changes, because level and validity together take 257 values and a byte holds
256: 0 marks an invalid pixel, and the five levels 28 to 32 that jet's flat
stretch paints one colour, (0, 0, 255), share one code. So codes 1..252 are the
252 distinct jet colours in depth order (252 nearest), and
`JET_OF_CODE[depth_to_code(d)] == depth_to_jet(d)` bit for bit: storing codes
loses nothing the jet image had. `GRAY_OF_CODE` gives the 8-bit gray depth
`input.depth_encoding='gray'` reads, the level itself (30 for the flat stretch,
0 where invalid).
"""

from __future__ import annotations

import numpy as np

# (position, value) breakpoints of the jet map's red, green and blue channels.
_JET_BREAKPOINTS = (
    ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
)


def jet_table(size: int = 256) -> np.ndarray:
  """`(size, 3)` uint8 jet colours from blue (0) to red (size - 1)."""
  x = np.linspace(0.0, 1.0, size)
  channels = [np.interp(x, *zip(*points)) for points in _JET_BREAKPOINTS]
  return np.round(np.stack(channels, axis=-1) * 255).astype(np.uint8)


_JET = jet_table()


def _code_of_level() -> np.ndarray:
  """`(256,)` uint8: 1 + the index of each level's colour among jet's distinct colours."""
  codes = _JET.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
  new_colour = np.concatenate([[True], codes[1:] != codes[:-1]])
  return np.cumsum(new_colour).astype(np.uint8)


CODE_OF_LEVEL = _code_of_level()
INVALID_CODE = 0
MAX_CODE = int(CODE_OF_LEVEL[-1])  # 252: codes above are never stored


def _tables() -> tuple[np.ndarray, np.ndarray]:
  """`JET_OF_CODE` `(256, 3)` and `GRAY_OF_CODE` `(256,)`, uint8; unused codes are black/0."""
  jet_of_code = np.zeros((256, 3), np.uint8)
  jet_of_code[CODE_OF_LEVEL] = _JET
  level_sum = np.bincount(CODE_OF_LEVEL, weights=np.arange(256), minlength=256)
  count = np.bincount(CODE_OF_LEVEL, minlength=256)
  gray_of_code = np.round(level_sum / np.maximum(count, 1)).astype(np.uint8)
  return jet_of_code, gray_of_code


JET_OF_CODE, GRAY_OF_CODE = _tables()


def _levels(depth_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`(valid mask, 8-bit level of each valid pixel)` of a clip, normalised per clip."""
  depth = np.asarray(depth_mm, np.float32)
  valid = depth > 0
  if not valid.any():
    return valid, np.zeros(0, np.int64)
  near, far = depth[valid].min(), depth[valid].max()
  if far > near:
    v = (far - depth[valid]) / (far - near)
  else:
    v = np.full(int(valid.sum()), 0.5, np.float32)
  return valid, np.clip(np.round(v * 255), 0, 255).astype(np.int64)


def depth_to_code(depth_mm: np.ndarray) -> np.ndarray:
  """A clip's depth as the 8-bit codes the records store (see the module docstring).

  Args:
    depth_mm: `(frames, H, W)` (or `(H, W)`) depth in millimetres; 0 = invalid.

  Returns:
    uint8 of the same shape: 0 invalid, 1 farthest .. 252 nearest.
  """
  valid, levels = _levels(depth_mm)
  out = np.full(valid.shape, INVALID_CODE, np.uint8)
  out[valid] = CODE_OF_LEVEL[levels]
  return out


def depth_to_jet(depth_mm: np.ndarray) -> np.ndarray:
  """Colours a clip of depth maps.

  Args:
    depth_mm: `(frames, H, W)` (or `(H, W)`) depth in millimetres; 0 = invalid.

  Returns:
    uint8 `(..., 3)` jet colours: near red, far blue, invalid black.
  """
  valid, levels = _levels(depth_mm)
  out = np.zeros(valid.shape + (3,), np.uint8)
  out[valid] = _JET[levels]
  return out
