"""ImageNet ResNet-50 initialisation: converts a downloaded checkpoint once.

Every stream starts from ImageNet ResNet-50 weights (paper, Sec. 4). Three
public checkpoints are supported; each was trained in its own stride layout
(see `models/resnet.py`), so the layout travels with the converted weights:

* `slim`: TF-slim `resnet_v1_50.ckpt` (the reference's), read with
  `tf.train.load_checkpoint`.
* `keras`: `keras.applications.ResNet50` weights, either a legacy HDF5 file
  (the downloadable `resnet50_weights_tf_dim_ordering_tf_kernels.h5`, or any
  Keras 2 `save_weights`/`save` `.h5`), read with h5py, or a Keras 3
  `.weights.h5`, whose layers are stored under generated names and are
  therefore read back through a Keras `ResNet50` built to match.
* `torchvision`: a `resnet50` state dict, `.safetensors` (numpy only) or
  `.pth` (needs PyTorch).

Conversion is exact: Keras' conv biases are folded into the following BatchNorm
(`mean' = mean - bias`), Keras' BatchNorm epsilon 1.001e-5 becomes ours (1e-5)
through `var' = var + 1.001e-5 - 1e-5`, and Keras' first conv is flipped to read
RGB instead of BGR. The temporal convolutions are not in any ImageNet model;
they get their identity initialisation, so the converted stream computes the
source network. The source classifier is kept as it is (slim's `resnet_v1_50`
has 1000 classes, slim's v2 models and some ports 1001 with index 0 the
background class: `metadata['num_classes']` says which).

A conversion writes an Orbax checkpoint of `{'params', 'batch_stats'}` and a
`metadata.json` next to it:

    python -m modistill_jax.pretrained --format=slim --src=resnet_v1_50.ckpt --out=DIR

(`--ignore=REGEX`, repeatable, drops source entries by name; `--help` lists
the flags.)

The metadata records the input normalisation the source expects, in 0..255
units and RGB order, as `mean` and `std`: frames are fed as `(x - mean) / std`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
import dataclasses
import functools
import json
import os
import re
from typing import Any

from absl import app
from absl import flags
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from modistill_jax import cli
from modistill_jax import param_merge
from modistill_jax import quiet_tensorflow
from modistill_jax.models import resnet

FORMATS: tuple[str, ...] = ('slim', 'keras', 'torchvision')
UNITS_PER_BLOCK = (3, 4, 6, 3)
WIDTH = 64
METADATA_FILE = 'metadata.json'
VARIABLES_DIR = 'variables'

# Target keys a fine-tuned stream initialises itself rather than taking from
# ImageNet: the classifier (other classes) and the temporal convolutions (not
# in ImageNet models), with their BatchNorm in the 'conv_bn_relu' form. They
# match with or without a collection/stream prefix.
FRESH_PATTERNS: tuple[str, ...] = (r'(.*/)?logits/.*', r'(.*/)?temporal(_bn)?/.*')

# Input normalisation each source was trained with: `(x - mean) / std` on RGB
# values in 0..255. Keras' Caffe-style preprocessing works on BGR; the
# conversion flips the first conv, so its means appear here in RGB order.
NORMALISATION: dict[str, dict[str, tuple[float, float, float]]] = {
    'slim': {'mean': (123.68, 116.78, 103.94), 'std': (1.0, 1.0, 1.0)},
    'keras': {'mean': (123.68, 116.779, 103.939), 'std': (1.0, 1.0, 1.0)},
    'torchvision': {
        'mean': (0.485 * 255, 0.456 * 255, 0.406 * 255),
        'std': (0.229 * 255, 0.224 * 255, 0.225 * 255),
    },
}

# BatchNorm epsilon each framework's ResNet-50 was trained with.
_SOURCE_EPSILON = {'slim': 1e-5, 'keras': 1.001e-5, 'torchvision': 1e-5}

# Source keys that carry no model state and are dropped without complaint.
_IGNORED = {
    'slim': (r'global_step',),
    'keras': (),
    'torchvision': (r'.*num_batches_tracked',),
}


@dataclasses.dataclass(frozen=True)
class _ConvBN:
  """Source names of one conv + BatchNorm pair and where they go in the Stream."""

  conv: str
  bn: str
  kernel: str
  gamma: str
  beta: str
  mean: str
  var: str
  bias: str | None = None

  def names(self) -> list[str]:
    return [
        n
        for n in (self.kernel, self.gamma, self.beta, self.mean, self.var, self.bias)
        if n is not None
    ]


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where one format keeps every ResNet-50 weight."""

  conv_bns: tuple[_ConvBN, ...]
  logits_kernel: str
  logits_bias: str


def _stream_layers() -> Iterator[tuple[str, str, int, int, str]]:
  """(conv path, bn path, block, unit, part) of every conv of a ResNet-50 Stream.

  Block 0 / part 'root' is the 7x7 stem; unit 0 of every block has the
  projection shortcut ('shortcut'), as in all three sources.
  """
  yield 'conv1', 'bn1', 0, 0, 'root'
  for b, num_units in enumerate(UNITS_PER_BLOCK, start=1):
    for u in range(num_units):
      unit = f'block{b}_unit{u}'
      if u == 0:
        yield f'{unit}/shortcut', f'{unit}/shortcut_bn', b, u, 'shortcut'
      for k in (1, 2, 3):
        yield f'{unit}/conv{k}', f'{unit}/bn{k}', b, u, f'conv{k}'


def _slim_layout() -> _Layout:
  conv_bns = []
  for conv, bn, b, u, part in _stream_layers():
    scope = (
        'resnet_v1_50/conv1'
        if part == 'root'
        else f'resnet_v1_50/block{b}/unit_{u + 1}/bottleneck_v1/{part}'
    )
    conv_bns.append(
        _ConvBN(
            conv,
            bn,
            kernel=f'{scope}/weights',
            gamma=f'{scope}/BatchNorm/gamma',
            beta=f'{scope}/BatchNorm/beta',
            mean=f'{scope}/BatchNorm/moving_mean',
            var=f'{scope}/BatchNorm/moving_variance',
        )
    )
  return _Layout(tuple(conv_bns), 'resnet_v1_50/logits/weights', 'resnet_v1_50/logits/biases')


def _keras_layout() -> _Layout:
  conv_bns = []
  for conv, bn, b, u, part in _stream_layers():
    stem = (
        'conv1'
        if part == 'root'
        else f'conv{b + 1}_block{u + 1}_{0 if part == "shortcut" else part[-1]}'
    )
    conv_bns.append(
        _ConvBN(
            conv,
            bn,
            kernel=f'{stem}_conv/kernel',
            bias=f'{stem}_conv/bias',
            gamma=f'{stem}_bn/gamma',
            beta=f'{stem}_bn/beta',
            mean=f'{stem}_bn/moving_mean',
            var=f'{stem}_bn/moving_variance',
        )
    )
  return _Layout(tuple(conv_bns), 'predictions/kernel', 'predictions/bias')


def _torchvision_layout() -> _Layout:
  conv_bns = []
  for conv, bn, b, u, part in _stream_layers():
    unit = '' if part == 'root' else f'layer{b}.{u}.'
    conv_name, bn_name = {
        'root': ('conv1', 'bn1'),
        'shortcut': ('downsample.0', 'downsample.1'),
    }.get(part, (part, 'bn' + part[-1]))
    conv_bns.append(
        _ConvBN(
            conv,
            bn,
            kernel=f'{unit}{conv_name}.weight',
            gamma=f'{unit}{bn_name}.weight',
            beta=f'{unit}{bn_name}.bias',
            mean=f'{unit}{bn_name}.running_mean',
            var=f'{unit}{bn_name}.running_var',
        )
    )
  return _Layout(tuple(conv_bns), 'fc.weight', 'fc.bias')


_LAYOUTS: dict[str, Callable[[], _Layout]] = {
    'slim': _slim_layout,
    'keras': _keras_layout,
    'torchvision': _torchvision_layout,
}


# ----------------------------------------------------------------------------
# Reading source files into flat {source name: array} dicts.


def read_slim(path: str) -> dict[str, np.ndarray]:
  """A TF checkpoint (V1 file or V2 prefix) as {variable name: array}."""
  reader = quiet_tensorflow.import_tensorflow().train.load_checkpoint(path)
  return {name: np.asarray(reader.get_tensor(name)) for name in reader.get_variable_to_shape_map()}


def _read_legacy_h5(group: Any) -> dict[str, np.ndarray]:
  """Keras 2-style HDF5: one group per layer listing its `weight_names`."""
  arrays = {}
  for layer in group.attrs['layer_names']:
    layer = layer.decode() if isinstance(layer, bytes) else layer
    for weight in group[layer].attrs['weight_names']:
      weight = weight.decode() if isinstance(weight, bytes) else weight
      short = weight.rsplit('/', 1)[-1].removesuffix(':0')
      arrays[f'{layer}/{short}'] = np.asarray(group[layer][weight])
  return arrays


def _read_keras3_weights(path: str, f: Any) -> dict[str, np.ndarray]:
  """Keras 3 `.weights.h5`: layers are stored under generated names (`conv2d_7`),
  so a `ResNet50` built to the file's classifier size reads them back."""
  if 'layers/dense/vars' not in f:
    raise ValueError(
        f'{path}: no classifier (`dense`) in this Keras weights file; '
        'convert a file saved with include_top=True.'
    )
  num_classes = f['layers/dense/vars/1'].shape[0]
  if os.environ.get('KERAS_BACKEND', 'tensorflow') == 'tensorflow':
    quiet_tensorflow.import_tensorflow()  # Keras' default backend, without its start-up noise
  import keras  # pylint: disable=g-import-not-at-top

  model = keras.applications.ResNet50(weights=None, classes=num_classes, classifier_activation=None)
  model.load_weights(path)
  return {
      f'{layer.name}/{w.name}': np.asarray(w.numpy())
      for layer in model.layers
      for w in layer.weights
  }


def read_keras(path: str) -> dict[str, np.ndarray]:
  """A Keras `ResNet50` weights file as {'layer/weight': array}."""
  import h5py  # pylint: disable=g-import-not-at-top

  with h5py.File(path, 'r') as f:
    if 'layer_names' in f.attrs:
      return _read_legacy_h5(f)
    if 'model_weights' in f:
      return _read_legacy_h5(f['model_weights'])
    if 'layers' in f:
      return _read_keras3_weights(path, f)
  raise ValueError(
      f'{path}: not a Keras weights file (no `layer_names`, ' '`model_weights` or `layers`).'
  )


def read_torchvision(path: str) -> dict[str, np.ndarray]:
  """A torchvision state dict (`.safetensors`, or `.pth`/`.pt` via PyTorch)."""
  if path.endswith('.safetensors'):
    import safetensors.numpy  # pylint: disable=g-import-not-at-top

    return dict(safetensors.numpy.load_file(path))
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f'Reading {path} needs PyTorch (a CPU build is enough: '
        '`pip install torch --index-url https://download.pytorch.org/whl/cpu`), '
        'or save the state dict as .safetensors where PyTorch is installed.'
    ) from e
  state = torch.load(path, map_location='cpu', weights_only=True)
  return {k: v.numpy() for k, v in state.items()}


_READERS: dict[str, Callable[[str], dict[str, np.ndarray]]] = {
    'slim': read_slim,
    'keras': read_keras,
    'torchvision': read_torchvision,
}


# ----------------------------------------------------------------------------
# Conversion.


def _kernel(fmt: str, kernel: np.ndarray, conv: str) -> np.ndarray:
  """A source conv kernel as HWIO, reading RGB input."""
  if fmt == 'torchvision':
    return kernel.transpose(2, 3, 1, 0) if kernel.ndim == 4 else kernel
  if fmt == 'keras' and conv == 'conv1' and kernel.ndim == 4:
    return kernel[:, :, ::-1, :]  # Keras' stem reads BGR; ours reads RGB.
  return kernel


def _logits_kernel(fmt: str, kernel: np.ndarray) -> np.ndarray:
  if fmt == 'slim':
    return kernel.reshape(kernel.shape[-2:]) if kernel.ndim == 4 else kernel
  if fmt == 'torchvision':
    return kernel.T
  return kernel


def _target_shapes(num_classes: int, stride_layout: str) -> dict[str, Any]:
  """Zero-cost stand-ins with a full-size Stream's variable shapes and dtypes."""
  model = resnet.Stream(
      num_classes=num_classes,
      units_per_block=UNITS_PER_BLOCK,
      width=WIDTH,
      stride_layout=stride_layout,
  )
  shapes = jax.eval_shape(
      functools.partial(model.init, num_frames=1, train=False),
      jax.random.key(0),
      jnp.zeros((1, 224, 224, 3), jnp.float32),
  )
  return jax.tree.map(lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), dict(shapes))


def convert_arrays(
    fmt: str,
    arrays: Mapping[str, np.ndarray],
    *,
    ignore: Sequence[str] = (),
    what: str | None = None,
) -> tuple[dict[str, Any], int]:
  """Source arrays -> (Stream variables, number of source classes).

  Args:
    fmt: 'slim' | 'keras' | 'torchvision'.
    arrays: {source name: array} as the `read_*` functions return.
    ignore: extra patterns of source names to drop (besides the format's
      bookkeeping entries such as torchvision's `num_batches_tracked`).
    what: name of the source in error messages.

  Returns:
    `(variables, num_classes)`: `{'params', 'batch_stats'}` of a ResNet-50
    Stream in the format's stride layout (float32 numpy; temporal kernels at
    their identity init) and the size of the source classifier.

  Raises:
    param_merge.MergeError: listing at once every source name that is missing or
      unused and every converted array whose shape does not fit the Stream.
  """
  if fmt not in FORMATS:
    raise ValueError(f'format must be one of {FORMATS}, got {fmt!r}')
  what = what or f'{fmt} checkpoint'
  layout = _LAYOUTS[fmt]()
  ignore = tuple(ignore) + _IGNORED[fmt]
  wanted = {n for cb in layout.conv_bns for n in cb.names()}
  wanted |= {layout.logits_kernel, layout.logits_bias}
  missing = sorted(wanted - set(arrays))
  unused = sorted(
      n for n in arrays if n not in wanted and not any(re.fullmatch(p, n) for p in ignore)
  )

  def f64(name: str) -> np.ndarray:  # Folding in float64 rounds once, at the end.
    return np.asarray(arrays[name], np.float64)

  delta_eps = _SOURCE_EPSILON[fmt] - resnet.Stream.bn_epsilon
  flat: dict[str, np.ndarray] = {}
  for cb in layout.conv_bns:
    if any(n not in arrays for n in cb.names()):
      continue  # Reported as missing below, with everything else that is wrong.
    flat[f'params/{cb.conv}/kernel'] = _kernel(fmt, f64(cb.kernel), cb.conv)
    flat[f'params/{cb.bn}/scale'] = f64(cb.gamma)
    flat[f'params/{cb.bn}/bias'] = f64(cb.beta)
    conv_bias = f64(cb.bias) if cb.bias is not None else 0.0
    flat[f'batch_stats/{cb.bn}/mean'] = f64(cb.mean) - conv_bias
    flat[f'batch_stats/{cb.bn}/var'] = f64(cb.var) + delta_eps
  num_classes = 0
  if layout.logits_kernel in arrays and layout.logits_bias in arrays:
    flat['params/logits/kernel'] = _logits_kernel(fmt, f64(layout.logits_kernel))
    flat['params/logits/bias'] = f64(layout.logits_bias)
    num_classes = int(np.shape(arrays[layout.logits_bias])[0])

  target = _target_shapes(num_classes or 1000, fmt)
  for key, value in param_merge.flatten(target).items():
    if re.fullmatch(r'params/.*temporal/kernel', key):
      flat[key] = resnet.temporal_identity_init(None, value.shape, jnp.float32)
  lines = []
  for title, names in (('source entries missing', missing), ('source entries not used', unused)):
    if names:
      lines.append(f'  {title} ({len(names)}):')
      lines.extend(f'    {n}' for n in names)
  try:
    variables = param_merge.merge(target, param_merge.unflatten(flat), what=what)
  except param_merge.MergeError as e:
    raise param_merge.MergeError('\n'.join([str(e)] + lines)) from None
  if lines:
    raise param_merge.MergeError('\n'.join([f'{what} does not fit the model:'] + lines))
  return variables, num_classes


def convert(fmt: str, src: str, out: str, *, ignore: Sequence[str] = ()) -> dict[str, Any]:
  """Converts the checkpoint `src` into `out/variables` + `out/metadata.json`.

  Returns the metadata written.
  """
  variables, num_classes = convert_arrays(
      fmt, _READERS[fmt](src), ignore=ignore, what=f'{fmt} file {os.path.basename(src)}'
  )
  metadata = {
      'source_format': fmt,
      'source_file': os.path.basename(src),
      'stride_layout': fmt,
      'num_classes': num_classes,
      'background_class': num_classes == 1001,
      'channel_order': 'RGB',
      'mean': list(NORMALISATION[fmt]['mean']),
      'std': list(NORMALISATION[fmt]['std']),
  }
  save(out, variables, metadata)
  return metadata


def save(out: str, variables: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
  """Writes `out/variables` (Orbax) and then `out/metadata.json`, the form `load` reads.

  `metadata` needs at least `stride_layout` and the input normalisation `mean` and
  `std` (0..255 units, RGB order). The metadata is written last, so a directory
  that has it holds a complete checkpoint.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  out = os.path.abspath(out)
  os.makedirs(out, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(out, VARIABLES_DIR), variables, force=True)
  with open(os.path.join(out, METADATA_FILE), 'w') as f:
    json.dump(metadata, f, indent=2)


# ----------------------------------------------------------------------------
# Using a converted checkpoint.


class CheckpointNotFoundError(FileNotFoundError):
  """No converted checkpoint where `config.init.imagenet` points."""


def read_metadata(directory: str) -> dict[str, Any]:
  """The metadata of the converted checkpoint in `directory` (local or `gs://`).

  Raises:
    CheckpointNotFoundError: there is none: its metadata file is missing.
  """
  path = epath.Path(directory) / METADATA_FILE
  if not path.exists():
    raise CheckpointNotFoundError(
        f'config.init.imagenet={directory}: no converted checkpoint there ({path} is missing). '
        'Convert ImageNet weights with `python -m modistill_jax.pretrained` (README, ImageNet '
        "weights), or make the synthetic miniature's stand-in with `make pretext`."
    )
  return json.loads(path.read_text())


def load(directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """`(variables, metadata)` of a converted checkpoint.

  `variables` is `{'params', 'batch_stats'}` (numpy) of a full-size Stream with
  the source classifier under `logits` and identity temporal kernels. To start
  a stream for `C` classes from it:

      model = Stream(num_classes=C, **stream_kwargs(metadata))
      variables = param_merge.merge(model_init_vars, loaded, fresh=FRESH_PATTERNS)
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  metadata = read_metadata(directory)
  directory = os.path.abspath(directory)
  with ocp.StandardCheckpointer() as checkpointer:
    variables = checkpointer.restore(os.path.join(directory, VARIABLES_DIR))
  return dict(variables), metadata


def stream_kwargs(metadata: Mapping[str, Any]) -> dict[str, Any]:
  """`Stream` arguments the checkpoint must run with (its stride layout)."""
  return {'stride_layout': metadata['stride_layout']}


def normalize(images: jax.Array, metadata: Mapping[str, Any]) -> jax.Array:
  """RGB images in 0..255 -> the source network's input, `(x - mean) / std`."""
  mean = jnp.asarray(metadata['mean'], jnp.float32)
  std = jnp.asarray(metadata['std'], jnp.float32)
  return (jnp.asarray(images, jnp.float32) - mean) / std


def imagenet_classifier(directory: str) -> Callable[[Any], jax.Array]:
  """The converted network as an ImageNet classifier, to check a conversion.

  The returned function takes RGB float images in 0..255, `(N, H, W, 3)`
  (224x224 as in ImageNet evaluation; resized and cropped by the caller), applies
  the source's normalisation itself and returns the `(N, num_classes)` logits of
  the source classifier (1001-way with index 0 the background class when
  `metadata['background_class']`).
  """
  variables, metadata = load(directory)
  model = resnet.Stream(num_classes=metadata['num_classes'], **stream_kwargs(metadata))
  apply = jax.jit(functools.partial(model.apply, num_frames=1, train=False))
  variables = jax.device_put(variables)

  def classify(images: Any) -> jax.Array:
    logits, _ = apply(variables, normalize(images, metadata))
    return logits

  return classify


def define_flags() -> None:
  """The command's flags, defined only when it runs (absl flags are process-global)."""
  flags.DEFINE_enum('format', None, FORMATS, "The checkpoint's kind.", required=True)
  flags.DEFINE_string('src', None, 'Checkpoint file (slim: the .ckpt path).', required=True)
  flags.DEFINE_string('out', None, 'Output directory.', required=True)
  flags.DEFINE_multi_string(
      'ignore', [], 'REGEX: drop source entries whose name matches (repeatable).'
  )


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.quiet_logging()
  quiet_tensorflow.quiet_native_logging()
  f = flags.FLAGS
  metadata = convert(f.format, f.src, f.out, ignore=f.ignore)
  print(json.dumps(metadata, indent=2))


if __name__ == '__main__':
  define_flags()
  app.run(main)
