"""How much each modality of a synthetic configuration tells about the class, on its own.

A fixed linear probe, the same for RGB and for depth: multinomial logistic
regression on a small feature vector per clip (5 uniformly spaced frames, each
average-pooled to 4x4 cells, plus the pooled absolute change between
consecutive ones), trained on the training split and measured on the test
split (the held-out view, or the held-out subjects of a `cross_subject`
build). It is the check a configuration is calibrated with before any
model is trained on it: which modality carries more of the class, and roughly
how much, with no network, no augmentation and no tuning in the way.

  python -m data_builders.synthetic_rgbd.probe --config=ntu_like --workers=2

prints RGB, depth and chance accuracy. `--shuffle_labels` trains on permuted
labels: a probe that cannot learn, so its accuracy must sit at chance.
"""

from __future__ import annotations

from collections.abc import Sequence
import concurrent.futures
import multiprocessing

from absl import app
from absl import flags
import numpy as np

from data_builders.synthetic_rgbd import renderer

# Probe modality -> the renderer's output it reads (depth as the jet colours the model sees).
MODALITIES = {'rgb': 'rgb', 'depth': 'depth_jet'}
_SAMPLED_FRAMES = 5
_CELLS = 4


def clip_features(frames: np.ndarray) -> np.ndarray:
  """One feature vector per clip, the same for every modality.

  `_SAMPLED_FRAMES` uniformly spaced frames (as the model samples at test
  time), each average-pooled to `_CELLS` x `_CELLS` cells, plus the pooled
  absolute change between consecutive sampled frames (motion energy), so the
  features see both what is where and what moves.

  Args:
    frames: `(T, H, W, C)` uint8, with H and W multiples of `_CELLS`.
  """
  picked = np.linspace(0, len(frames) - 1, _SAMPLED_FRAMES).round().astype(int)
  frames = frames[picked].astype(np.float32) / 255
  t, h, w, c = frames.shape
  cells = frames.reshape(t, _CELLS, h // _CELLS, _CELLS, w // _CELLS, c).mean(axis=(2, 4))
  motion = (
      np.abs(np.diff(frames, axis=0))
      .mean(-1)
      .reshape(t - 1, _CELLS, h // _CELLS, _CELLS, w // _CELLS)
  )
  return np.concatenate([cells.ravel(), motion.mean(axis=(2, 4)).ravel()])


def logistic_regression_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
    l2: float = 1e-2,
    steps: int = 500,
    learning_rate: float = 0.5,
) -> float:
  """Test accuracy of multinomial logistic regression, full-batch gradient descent from zero.

  Features are standardised with the training set's statistics. Deterministic:
  no random initialisation, no batches.
  """
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
  weights, bias = np.zeros((train_x.shape[1], num_classes)), np.zeros(num_classes)
  onehot = np.eye(num_classes)[train_y]
  for _ in range(steps):
    logits = train_x @ weights + bias
    probs = np.exp(logits - logits.max(1, keepdims=True))
    grad = (probs / probs.sum(1, keepdims=True) - onehot) / len(train_x)
    weights -= learning_rate * (train_x.T @ grad + l2 * weights)
    bias -= learning_rate * grad.sum(0)
  return float(((test_x @ weights + bias).argmax(1) == test_y).mean())


def _features_of(task: tuple[renderer.GeneratorSpec, renderer.ClipInfo]) -> dict[str, np.ndarray]:
  """Renders one clip and returns its features per probe modality (a pool's unit of work)."""
  spec, clip = task
  rendered = renderer.render_clip(spec, clip.label, clip.index)
  return {modality: clip_features(rendered[key]) for modality, key in MODALITIES.items()}


def probe(
    spec: renderer.GeneratorSpec, workers: int = 1, shuffle_labels: bool = False
) -> dict[str, float]:
  """Probe accuracy on the held-out clips (the test split) per modality, and chance.

  Args:
    spec: the configuration; its training and test clips are rendered.
    workers: rendering processes (spawned); 1 renders in this process.
    shuffle_labels: train on a fixed permutation of the training labels, which
      leaves nothing to learn (a control: accuracy must then be chance).

  Returns:
    `{'rgb': ..., 'depth': ..., 'chance': ...}`, accuracies in [0, 1].
  """
  clips = [clip for clip in renderer.all_clips(spec) if clip.role in ('train', 'test')]
  tasks = [(spec, clip) for clip in clips]
  if workers == 1:
    features = list(map(_features_of, tasks))
  else:
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context('spawn')
    ) as pool:
      features = list(pool.map(_features_of, tasks, chunksize=16))
  split = np.array([clip.role for clip in clips])
  labels = np.array([clip.label for clip in clips])
  train_y, test_y = labels[split == 'train'], labels[split == 'test']
  if shuffle_labels:
    train_y = np.random.default_rng(0).permutation(train_y)
  num_classes = len(spec.class_names)
  accuracy = {}
  for modality in MODALITIES:
    x = np.stack([f[modality] for f in features])
    accuracy[modality] = logistic_regression_accuracy(
        x[split == 'train'], train_y, x[split == 'test'], test_y, num_classes
    )
  accuracy['chance'] = 1 / num_classes
  return accuracy


def define_flags() -> None:
  """The command line's flags, defined only when it runs (tests import this module beside
  others that define `--config`)."""
  flags.DEFINE_string('config', 'ntu_like', 'A BUILDER_CONFIG name of synthetic_rgbd.')
  flags.DEFINE_integer('workers', 1, 'Rendering processes (1: in this process).')
  flags.DEFINE_bool(
      'shuffle_labels', False, 'Train on permuted labels (a control: must give chance).'
  )


def main(argv: Sequence[str]) -> None:
  del argv
  name, workers, shuffle = flags.FLAGS.config, flags.FLAGS.workers, flags.FLAGS.shuffle_labels
  # The builder module imports TFDS: only the command line needs it, for the config names.
  from data_builders.synthetic_rgbd import Builder  # pylint: disable=g-import-not-at-top

  configs = {config.name: config for config in Builder.BUILDER_CONFIGS}
  if name not in configs:
    raise app.UsageError(
        f'--config={name!r} is not a synthetic_rgbd config; ' f'known: {", ".join(configs)}.'
    )
  spec = configs[name].spec
  accuracy = probe(spec, workers=workers, shuffle_labels=shuffle)
  test_clips = sum(clip.role == 'test' for clip in renderer.all_clips(spec))
  control = ' (shuffled labels)' if shuffle else ''
  print(
      f'synthetic_rgbd/{name}: logistic-regression probe, test split '
      f'({test_clips} clips): RGB {accuracy["rgb"]:.3f}, depth {accuracy["depth"]:.3f}, '
      f'chance {accuracy["chance"]:.3f}{control}'
  )


if __name__ == '__main__':
  define_flags()
  app.run(main)
