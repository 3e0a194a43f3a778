"""Which frames of a clip the network sees.

A clip is summarised by `num_frames` (5) of its frames, the same indices for
RGB and depth so the two streams look at the same instants:

* Evaluation: uniformly spaced indices, `np.linspace(0, T - 1, num_frames)`
  rounded to the nearest frame (`np.rint`, ties to even). The reference
  truncated instead (`tf.to_int32`); rounding keeps the sample centred on the
  clip rather than biased towards its start.
* Training: with probability `uniform_prob` (0.5) the uniform indices, else
  `num_frames` random frames kept in temporal order, the temporal convolutions
  relying on that order. They are distinct when the clip has enough frames;
  a shorter clip uses every frame and repeats some, so no frame is wasted
  (the reference could not read clips shorter than 5 frames).
"""

from __future__ import annotations

import numpy as np


def _check(num_available: int, num_frames: int) -> None:
  if num_available < 1 or num_frames < 1:
    raise ValueError(
        f'Need at least one frame to sample and one to draw, got '
        f'{num_available} available and {num_frames} requested.'
    )


def uniform_indices(num_available: int, num_frames: int) -> np.ndarray:
  """Evenly spaced frame indices over `[0, num_available - 1]`, int32."""
  _check(num_available, num_frames)
  return np.rint(np.linspace(0, num_available - 1, num_frames)).astype(np.int32)


def random_indices(num_available: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
  """Random frame indices in temporal order, distinct when enough frames exist.

  A clip shorter than `num_frames` contributes each frame `num_frames //
  num_available` times plus a random distinct subset for the remainder, so
  repeats are spread as evenly as possible.
  """
  _check(num_available, num_frames)
  repeats, remainder = divmod(num_frames, num_available)
  indices = np.concatenate(
      [
          np.tile(np.arange(num_available), repeats),
          rng.choice(num_available, size=remainder, replace=False),
      ]
  )
  return np.sort(indices).astype(np.int32)


def train_indices(
    num_available: int, num_frames: int, rng: np.random.Generator, uniform_prob: float = 0.5
) -> np.ndarray:
  """Uniform indices with probability `uniform_prob`, else random ones."""
  if rng.random() < uniform_prob:
    return uniform_indices(num_available, num_frames)
  return random_indices(num_available, num_frames, rng)
