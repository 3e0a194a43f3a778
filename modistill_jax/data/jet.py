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
published breakpoints with `numpy.interp`. A stored depth pixel is therefore
one of its colours indexed by an 8-bit level (255 nearest, 0 farthest), or
black, so `preprocess.jet_to_gray` recovers the 8-bit gray depth from the
records by inverting the table: exactly, except that jet's flat stretch makes
levels 28 to 32 one colour, (0, 0, 255).
"""

from __future__ import annotations

import numpy as np

INVALID_COLOUR = np.zeros(3, np.uint8)

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


def depth_to_jet(depth_mm: np.ndarray) -> np.ndarray:
  """Colours a clip of depth maps.

  Args:
    depth_mm: `(frames, H, W)` (or `(H, W)`) depth in millimetres; 0 = invalid.

  Returns:
    uint8 `(..., 3)` jet colours: near red, far blue, invalid black.
  """
  depth = np.asarray(depth_mm, np.float32)
  valid = depth > 0
  out = np.zeros(depth.shape + (3,), np.uint8)
  if not valid.any():
    return out
  near, far = depth[valid].min(), depth[valid].max()
  if far > near:
    v = (far - depth[valid]) / (far - near)
  else:
    v = np.full(int(valid.sum()), 0.5, np.float32)
  out[valid] = _JET[np.clip(np.round(v * 255), 0, 255).astype(np.int64)]
  return out
