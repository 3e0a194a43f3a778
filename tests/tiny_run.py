"""The tiny demo run (every stage, the baseline, the ablation, the report) and tiny video files.

The run is `make demo` (`demo.run_demo`) with `configs/demo.py:all,tiny` on
conftest's `synthetic_data_dir` (a few 16x16 clips, 3 classes), two steps (one
epoch) per stage and whole evaluations. The demo, notebook, predict, export,
stage-chaining, run-folder and config tests all read this one run.

Training every stage is what makes these tests slow, so the run is made once
per pytest run (`conftest.once_per_run`: under xdist the first worker to ask
trains while the others wait on a file lock), under conftest's `fast_compile` and with
the RBG PRNG, whose initialisers compile several times faster than threefry's
(the weights' values do not matter here).
"""

from __future__ import annotations

from collections.abc import Sequence
import av
import jax
import numpy as np

from conftest import TINY_DATA, once_per_run, tiny_config
from modistill_jax import demo
from modistill_jax.config_lib import VGG_MEAN

# Two steps: one epoch of conftest's 8 training clips at the tiny batch of 4.
RUN_OVERRIDES = {**TINY_DATA, 'num_train_steps': 2, 'max_eval_batches': -1}


def run_config(data_dir: str):
  """The config of the shared run's steps 1-4 (`configs/demo.py:all,tiny` on `data_dir`)."""
  return tiny_config('demo', 'all', data_dir=data_dir, **RUN_OVERRIDES)


def trained_workdir(tmp_path_factory, data_dir: str) -> str:
  """The demo run on the built dataset in `data_dir`, made once per pytest run."""

  def make(workdir: str) -> None:
    with jax.default_prng_impl('unsafe_rbg'):
      demo.run_demo(workdir, data_dir, 'all,tiny', RUN_OVERRIDES)

  return once_per_run(tmp_path_factory, 'tiny_run', make)


def synthetic_frames(
    num_frames: int, height: int = 24, width: int = 32, seed: int = 0
) -> np.ndarray:
  """Faint moving colour waves around the normalisation mean.

  The tiny, barely trained net's logits blow up on high-contrast input, which
  saturates the softmax to exact 0s and 1s; near the mean its probabilities
  stay in between, so comparing them can fail.
  """
  y, x = np.mgrid[:height, :width]
  phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
  frames = [
      np.stack(
          [
              VGG_MEAN[c] + 3 * np.sin(x / 5 + t + phase[c]) * np.cos(y / 7 - t / 3)
              for c in range(3)
          ],
          axis=-1,
      )
      for t in range(num_frames)
  ]
  return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def write_video(path: str, frames: Sequence[np.ndarray], codec: str) -> str:
  """Encodes RGB frames with PyAV (yuv420p, 10 fps); the container follows the file name."""
  height, width = frames[0].shape[:2]
  with av.open(path, 'w') as container:
    stream = container.add_stream(codec, rate=10, options={'qscale': '1', 'crf': '1'})
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode(None))
  return path
