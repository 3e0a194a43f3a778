"""A tiny trained run (steps 1-4) and tiny video files, shared by the predict and export tests.

Training all four stages is what makes these tests slow, so the run is made
once per pytest session (under xdist the workers share one folder: the first
one trains while the others wait on a file lock), and compiled the cheap way:
XLA's optimisations off and the RBG PRNG, whose initialisers compile several
times faster than threefry's. Neither changes what the tests compare, which
is computed afterwards, with the default settings, from the saved weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import contextlib
import fcntl
import os

import av
from etils import epath
import jax
import numpy as np
import tensorflow_datasets as tfds

from configs import demo
from modistill_jax import trainer
from modistill_jax.data import records

CLASS_NAMES = ('wave', 'clap', 'kick')
NUM_FRAMES = 3
IMAGE_SIZE = 16


class _TinyClips(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Throwaway clips named like the synthetic dataset, so its protocol applies.

  The class shows as a bright colour channel, so even two steps move the
  weights away from their initial values.
  """

  name = 'synthetic_rgbd'
  VERSION = tfds.core.Version('0.0.1')
  pkg_dir_path = epath.Path(__file__).parent  # no metadata files: tests is no package

  def _info(self):
    return self.dataset_info_from_configs(features=records.clip_features(CLASS_NAMES))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(range(0, 4)),
            'validation': self._generate_examples(range(4, 8)),
            'test': self._generate_examples(range(8, 12))}

  def _generate_examples(self, indices):
    for i in indices:
      rng = np.random.default_rng(i)
      label = i % len(CLASS_NAMES)
      rgb = rng.integers(0, 256, (5, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
      rgb[..., label] = 220
      yield f'clip{i}', records.make_example(
          rgb=rgb, depth_jet=255 - rgb, label=label, sample_id=f'clip{i}',
          rgb_frames_raw=len(rgb), depth_frames_raw=len(rgb))


def tiny_config(data_dir: str):
  """The demo config, shrunk to seconds: width 4, 16x16, 3 frames, one step per stage."""
  config = demo.get_config('all')
  config.data_dir = data_dir
  config.build_if_missing = False
  config.input.image_size = IMAGE_SIZE
  config.input.num_frames = NUM_FRAMES
  config.input.worker_count = 0
  config.input.prefetch = 1
  config.model.width = 4
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_train_steps = 1
  config.max_eval_batches = 1
  return config


@contextlib.contextmanager
def cheap_compiles() -> Iterator[None]:
  previous = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    with jax.default_prng_impl('unsafe_rbg'):
      yield
  finally:
    jax.config.update('jax_disable_most_optimizations', previous)


def shared_root(tmp_path_factory) -> epath.Path:
  """A folder all xdist workers of this session see (the session's own one without xdist)."""
  base = tmp_path_factory.getbasetemp()
  return epath.Path(base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base)


def trained_workdir(tmp_path_factory) -> str:
  """Steps 1-4 trained on the tiny dataset, once per session."""
  root = shared_root(tmp_path_factory) / 'tiny_run'
  root.mkdir(exist_ok=True)
  workdir = root / 'workdir'
  with open(root / 'lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (root / 'done').exists():
      data_dir = str(root / 'data')
      _TinyClips(data_dir=data_dir, file_format=records.FILE_FORMAT).download_and_prepare()
      with cheap_compiles():
        trainer.train_and_evaluate(tiny_config(data_dir), str(workdir))
      (root / 'done').touch()
  return str(workdir)


def synthetic_frames(num_frames: int, height: int = 24, width: int = 32,
                     seed: int = 0) -> np.ndarray:
  """Smooth moving colour gradients: something a lossy codec keeps recognisable."""
  y, x = np.mgrid[:height, :width]
  phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
  frames = [np.stack([128 + 100 * np.sin(x / 5 + t / 2 + phase[c]) * np.cos(y / 7 - t / 3)
                      for c in range(3)], axis=-1) for t in range(num_frames)]
  return np.clip(frames, 0, 255).astype(np.uint8)


def write_video(path: str, frames: Sequence[np.ndarray], codec: str) -> str:
  """Encodes RGB frames with PyAV (yuv420p, 10 fps); the container follows the file name."""
  height, width = frames[0].shape[:2]
  with av.open(path, 'w') as container:
    stream = container.add_stream(codec, rate=10)
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode(None))
  return path
