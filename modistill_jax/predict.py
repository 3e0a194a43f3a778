"""Command line and library: action classes of RGB videos from a trained RGB-only stage.

  python -m modistill_jax.predict --workdir=DIR VIDEO [VIDEO ...]
  python -m modistill_jax.predict --workdir=DIR --stage=step4 --top_k=3 \
      --windows=4 --output=predictions.jsonl long_video.mp4 other.avi

The method trains with depth but deploys on RGB alone: step 4 is the RGB
stream plus the hallucination stream (which reads RGB too), and its prediction
is the softmax of the mean of the two streams' clip logits. `predict` runs a
finished stage of a run folder on video files (anything PyAV/FFmpeg decodes:
mp4, avi, ...) and prints each video's top-k classes, or writes one JSON
object per video with `--output`.

A video becomes clips exactly as evaluation turns a stored clip into the
model's input, so a prediction here equals the in-library evaluation of the
same frames:

* `num_frames` uniformly spaced frames (`sampling.uniform_indices`, the
  evaluation sampling) over the whole video, or with `--windows=N` over each
  of N equal, consecutive windows of it; the windows' probabilities are
  averaged into the video's, and each window is listed in the JSON output.
  A video (or window) with fewer frames than a clip needs repeats frames, as
  evaluation does for short clips: the uniform indices over the available
  frames round to the same frame more than once.
* Each sampled frame is resized with the pipeline's `resize_frame` (bilinear,
  to the trained `image_size`), then normalised on the device by
  `steps.model_inputs` (`preprocess.normalize` with the config's RGB mean and
  std) and run through the stage's `models.StageNetwork`, in inference mode.

One difference from evaluation on the dataset remains, and it is in the
frames, not in the processing: stored JPEG frames are decoded at reduced DCT
scale before resizing when that keeps them large enough, while video frames
arrive from the decoder at full size.

The frame count in a container's header is unreliable (variable frame rate,
truncated files), so a video is decoded twice: once to count its frames and
once to convert the sampled ones to RGB. Only the sampled frames are kept.

A video that cannot be read (missing, empty, corrupt, no video stream, no
frame) gives one line on stderr naming the file; the other videos are still
processed, and the exit status is 1 at the end. A stage or run folder that
cannot be used (no checkpoint, a stage that reads depth, such as step 2) exits
with status 2 before any video is read. Stages that read depth are refused
because a video holds RGB only; in the inverted setting (`privileged='rgb'`)
step 4 itself reads depth and is refused too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import json
import os
import sys
from typing import Any

from absl import app
from absl import flags
import av
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from modistill_jax import checkpointing
from modistill_jax import cli
from modistill_jax import finished_stage
from modistill_jax import runs
from modistill_jax import stages
from modistill_jax import steps
from modistill_jax.data import pipeline
from modistill_jax.data import sampling
from modistill_jax.models import stage_network

PyTree = Any

# The one modality a video file provides.
VIDEO_MODALITY = 'rgb'


class VideoError(ValueError):
  """A video file that cannot be turned into clips; the message names the file."""


class StageError(ValueError):
  """A run folder or stage that predict cannot use."""


# MARK: the model


class Predictor:
  """A finished RGB-only stage, loaded once: uint8 clips -> class probabilities.

  Attributes:
    stage: the stage definition (`stages.for_config`).
    step: the training step of the best checkpoint that was loaded.
    model: the stage's network (`models.StageNetwork`).
    variables: `{'params', 'batch_stats'}` of the stage's streams (best checkpoint).
    input_config: the trained `config.input` (normalisation statistics).
    class_names: the dataset's class names, in logit order.
    num_frames: frames per clip the stage was trained on.
    image_size: `(H, W)` of the frames the stage was trained on.
  """

  def __init__(self, workdir: str, stage_name: str = 'step4'):
    try:
      run = finished_stage.load(workdir, stage_name)
    except runs.StageNotFinishedError as e:
      raise StageError(str(e)) from None
    config = run.config
    self.stage = stages.for_config(stage_name, config)
    if self.stage.inputs != (VIDEO_MODALITY,):
      raise StageError(
          f'Stage {stage_name} reads {" and ".join(self.stage.inputs)}, but a video gives '
          f'RGB only; use a stage that reads RGB alone (step4 with depth privileged, '
          f'or step1_rgb).'
      )
    saved = run.best_state()
    self.step = int(saved['step'])
    streams = {s: checkpointing.stream_variables(saved, s) for s in self.stage.streams}
    self.variables = {c: {s: v[c] for s, v in streams.items()} for c in ('params', 'batch_stats')}
    self.class_names = run.class_names
    self.model = stage_network(self.stage, config.model, len(self.class_names))
    self.dtype = self.model.input_dtype
    self.input_config = config.input
    self.num_frames = config.input.num_frames
    self.image_size = (config.input.image_size,) * 2
    self._jitted = jax.jit(self.probabilities)

  @property
  def clip_shape(self) -> tuple[int, int, int, int]:
    """`(frames, H, W, 3)` of one uint8 clip."""
    return (self.num_frames, *self.image_size, 3)

  def probabilities(self, variables: PyTree, clips: jax.Array) -> jax.Array:
    """Pure: uint8 clips `(N, T, H, W, 3)` -> float32 softmax of the fused logits `(N, C)`.

    Takes the variables as an argument (not from `self`) so that jit and
    export see them as inputs rather than baking them in as constants.
    """
    inputs = steps.model_inputs(
        {VIDEO_MODALITY: clips}, self.input_config, self.stage.inputs, self.dtype
    )
    outputs = self.model.apply(variables, inputs, train=False)
    return jax.nn.softmax(outputs['fused'].astype(jnp.float32), axis=-1)

  def __call__(self, clips: np.ndarray) -> np.ndarray:
    """uint8 clips `(N, T, H, W, 3)` at the trained size -> probabilities `(N, C)`."""
    clips = np.asarray(clips)
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[1:] != self.clip_shape:
      raise ValueError(
          f'Expected uint8 clips (N, {", ".join(map(str, self.clip_shape))}), '
          f'got {clips.dtype} {clips.shape}.'
      )
    return np.asarray(self._jitted(self.variables, clips))


# MARK: videos


def iter_frames(path: str) -> Iterator[av.VideoFrame]:
  """The decoded frames of a file's first video stream, in presentation order.

  `frame.to_image()` is the RGB picture that `sample_clips` resizes.

  Raises:
    VideoError: the file is missing, not a video, or corrupt.
  """
  if os.path.isfile(path) and os.path.getsize(path) == 0:
    raise VideoError(f'{path}: empty file.')
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise VideoError(f'{path}: no video stream.')
      stream = container.streams.video[0]
      stream.thread_type = 'AUTO'
      yield from container.decode(stream)
  except (av.FFmpegError, OSError) as e:
    reason = ' '.join(str(getattr(e, 'strerror', None) or e).split())
    raise VideoError(f'{path}: cannot decode video: {reason}.') from e


def count_frames(path: str) -> int:
  """Frames a decoder gets out of the file (headers may say otherwise)."""
  return sum(1 for _ in iter_frames(path))


def window_indices(num_available: int, num_frames: int, windows: int = 1) -> np.ndarray:
  """`(windows, num_frames)` frame indices: uniform ones inside each of `windows` equal parts.

  Window `w` covers frames `[w * n // windows, (w + 1) * n // windows)`; with
  one window this is exactly evaluation's `sampling.uniform_indices(n, T)`.

  Raises:
    ValueError: fewer frames than windows, so some window would be empty.
  """
  if windows < 1 or num_available < windows:
    raise ValueError(f'{num_available} frames cannot fill {windows} windows.')
  bounds = [w * num_available // windows for w in range(windows + 1)]
  return np.stack(
      [
          start + sampling.uniform_indices(end - start, num_frames)
          for start, end in zip(bounds[:-1], bounds[1:])
      ]
  )


def sample_clips(
    path: str, *, num_frames: int, image_size: tuple[int, int], windows: int = 1
) -> tuple[np.ndarray, np.ndarray, int]:
  """A video's clips as evaluation would sample and resize them.

  Returns:
    `(clips, indices, num_available)`: uint8 clips `(windows, num_frames, H, W,
    3)`, their frame indices `(windows, num_frames)` and the video's frame count.

  Raises:
    VideoError: unreadable file, no frame, or fewer frames than windows.
  """
  num_available = count_frames(path)
  if num_available == 0:
    raise VideoError(f'{path}: no video frame could be decoded.')
  try:
    indices = window_indices(num_available, num_frames, windows)
  except ValueError as e:
    raise VideoError(f'{path}: {e}') from None
  wanted = set(indices.flat)
  frames = {}
  for i, frame in enumerate(iter_frames(path)):
    if i in wanted:
      frames[i] = np.asarray(pipeline.resize_frame(frame.to_image(), image_size))
  if len(frames) != len(wanted):
    raise VideoError(f'{path}: decoded {num_available} frames, then fewer on a second pass.')
  return np.stack([[frames[i] for i in row] for row in indices]), indices, num_available


def top_k(probabilities: np.ndarray, class_names: Sequence[str], k: int) -> list[dict[str, Any]]:
  order = np.argsort(-probabilities, kind='stable')[:k]
  return [{'class': class_names[i], 'probability': float(probabilities[i])} for i in order]


def predict_video(
    predictor: Predictor, path: str, *, windows: int = 1, k: int = 5
) -> dict[str, Any]:
  """One video's JSON-ready prediction: mean of the windows' probabilities, and each window.

  Raises:
    VideoError: the video cannot be read (see `sample_clips`).
  """
  clips, indices, num_available = sample_clips(
      path, num_frames=predictor.num_frames, image_size=predictor.image_size, windows=windows
  )
  probabilities = predictor(clips)
  return {
      'video': path,
      'num_frames': num_available,
      'top_k': top_k(probabilities.mean(axis=0), predictor.class_names, k),
      'windows': [
          {'frame_indices': row.tolist(), 'top_k': top_k(p, predictor.class_names, k)}
          for row, p in zip(indices, probabilities)
      ],
  }


def format_result(result: dict[str, Any]) -> str:
  """The human-readable lines of one video's prediction."""
  head = f"{result['video']} ({result['num_frames']} frames"
  head += f", {len(result['windows'])} windows):" if len(result['windows']) > 1 else '):'
  width = max(len(c['class']) for c in result['top_k'])
  return '\n'.join(
      [head] + [f"  {c['class']:<{width}}  {c['probability']:.4f}" for c in result['top_k']]
  )


# MARK: command line


def define_flags() -> None:
  """The command's flags, defined only when it runs.

  So `export`, tests and notebooks can import this module without its flags
  clashing with theirs (absl flags are process-global).
  """
  flags.DEFINE_string('workdir', None, 'Run folder the stage was trained in.', required=True)
  flags.DEFINE_string('stage', 'step4', 'An RGB-only stage of that run.')
  flags.DEFINE_integer('top_k', 5, 'Classes listed per video.', lower_bound=1)
  flags.DEFINE_integer(
      'windows',
      1,
      'Equal windows of each video, one clip each; probabilities averaged.',
      lower_bound=1,
  )
  flags.DEFINE_string('output', None, 'Write JSON lines here instead of printing.')


def run(
    predictor: Predictor, videos: Sequence[str], *, windows: int, k: int, output: str | None
) -> int:
  """Predicts every video, reporting unreadable ones; returns the exit status."""
  failed = 0
  out = epath.Path(output).open('w') if output else None
  try:
    for path in videos:
      try:
        result = predict_video(predictor, path, windows=windows, k=k)
      except VideoError as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        failed += 1
        continue
      if out:
        out.write(json.dumps(result) + '\n')
        out.flush()
      else:
        print(format_result(result), flush=True)
  finally:
    if out:
      out.close()
  if failed:
    print(f'{failed} of {len(videos)} videos failed.', file=sys.stderr)
  return 1 if failed else 0


def main(argv: Sequence[str]) -> int:
  cli.quiet_logging()
  videos = list(argv[1:])
  if not videos:
    raise app.UsageError('Name at least one video file.')
  f = flags.FLAGS
  cli.use_compilation_cache(f.workdir)
  try:
    predictor = Predictor(f.workdir, f.stage)
  except (ValueError, KeyError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return run(predictor, videos, windows=f.windows, k=f.top_k, output=f.output)


if __name__ == '__main__':
  define_flags()
  app.run(main)
