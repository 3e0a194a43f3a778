"""One ResNet-50 "stream" of the multi-stream network, with temporal convolutions.

The stream is a 2-D ResNet-50 v1 applied to every frame, with a 3x1x1 temporal
convolution in the second unit (unit index 1) of every block, as in the authors'
implementation (see `shared/reference-notes.md`):

* Frames of a clip travel as batch entries, `(clips * frames, H, W, C)`; they are
  reshaped to `(clips, frames, h, w, c)` only around the temporal convolution.
* The temporal conv sits right after the 3x3 conv of the residual branch (after
  its BatchNorm and ReLU) and has no bias. Its form is `temporal_form`:
  `'linear'` (the default: no normalisation, no activation, so with the
  identity init the stream at initialisation computes exactly the 2-D ResNet)
  or `'conv_bn_relu'` (the reference code's: its `slim.conv3d` was slim's
  `conv2d` in the TensorFlow it targets, so the arg scope added BatchNorm and
  ReLU; the BatchNorm is `temporal_bn`, and at initialisation the unit is no
  longer the 2-D one). Its initialiser is `temporal_init`: `'identity'` (the
  paper's [0, 1, 0] on the centre tap, the default) or `'reference_code'` (what
  the published initialiser actually produced, see
  `temporal_reference_code_init`).
* The unit-1 residual input can be gated by another stream (`gates`): the
  residual branch reads `x + x_pre * m` while the shortcut keeps `x`, where `x`
  and `x_pre` are the unit-0 output after and before its ReLU and `m` is the
  giving stream's unit-0 output. This is the multiplicative cross-stream
  connection; `multistream.py` wires it.

Three stride layouts share parameter shapes but not computation, so an ImageNet
checkpoint must run in the layout it was trained in:

* `'slim'` (TF-slim `resnet_v1_50`, the reference's): stride 2 in the *last*
  unit of blocks 1-3, on the 3x3 conv; strided convs use explicit symmetric
  padding; the root max-pool uses TF 'SAME' padding; a strided shortcut with
  matching channels is a 1x1 subsample.
* `'keras'` (`keras.applications.ResNet50`): stride 2 in the *first* unit of
  blocks 2-4, on the first 1x1 conv and the projection shortcut.
* `'torchvision'` (`resnet50`, "v1.5"): stride 2 in the first unit of blocks
  2-4, on the 3x3 conv and the projection shortcut.

Keras' and torchvision's root max-pool pads one pixel on every side; slim's
'SAME' pool pads only after. Keras' conv biases are folded into BatchNorm by the
weight importer, so no layout has conv biases here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
STRIDE_LAYOUTS: tuple[str, ...] = ('slim', 'keras', 'torchvision')

# The unit (within every block) that holds the temporal conv and receives the
# cross-stream connection; unit 0's output is what the giving stream sends.
CONNECTED_UNIT = 1


def connection_gates(endpoints: Mapping[str, Array]) -> dict[int, Array]:
  """`{block: unit-0 output}` of a giving stream's endpoints: what its connections send."""
  suffix = f'/unit{CONNECTED_UNIT - 1}'
  return {
      int(name[len('block') : -len(suffix)]): x
      for name, x in endpoints.items()
      if name.startswith('block') and name.endswith(suffix)
  }


he_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal')


def temporal_identity_init(key, shape, dtype=jnp.float32):
  """Kernel `(3, 1, 1, C, C)` that copies the centre frame: the [0, 1, 0] init."""
  del key
  taps, _, _, c_in, c_out = shape
  assert c_in == c_out, (c_in, c_out)
  kernel = jnp.zeros(shape, dtype)
  return kernel.at[taps // 2, 0, 0].set(jnp.eye(c_in, dtype=dtype))


def temporal_reference_code_init(key, shape, dtype=jnp.float32):
  """The published code's temporal kernel: every output channel = channel 1 of the previous frame.

  The reference meant the identity on the centre tap, but hands a `(1, 3, 1, 1, C)`
  [0, 1, 0] array to a constant initialiser of the `(3, 1, 1, C, C)` kernel;
  TensorFlow 1 fills the kernel in row-major order from those values and repeats
  the last one (0), so only tap 0 (the previous frame, SAME padding: zeros
  before the first), input channel 1, is 1 for every output channel
  (`shared/reference-notes.md`). Offered to reproduce that code, not as a
  sensible start: it discards all channels but one.
  """
  del key
  taps, _, _, c_in, _ = shape
  if taps != 3 or c_in < 2:
    raise ValueError(
        'The reference-code init needs a 3-tap kernel and at least 2 channels, '
        f'got kernel shape {shape}.'
    )
  return jnp.zeros(shape, dtype).at[0, 0, 0, 1, :].set(1)


TEMPORAL_FORMS: tuple[str, ...] = ('linear', 'conv_bn_relu')
TEMPORAL_INITS = {
    'identity': temporal_identity_init,
    'reference_code': temporal_reference_code_init,
}


def block_strides(layout: str, num_blocks: int = 4) -> tuple[int, ...]:
  """The stride of each block: slim 2,2,2,1 (in its last unit); others 1,2,2,2."""
  if layout == 'slim':
    return (2,) * (num_blocks - 1) + (1,)
  if layout in ('keras', 'torchvision'):
    return (1,) + (2,) * (num_blocks - 1)
  raise ValueError(f'stride_layout must be one of {STRIDE_LAYOUTS}, got {layout!r}')


def unit_stride(layout: str, block_stride: int, unit: int, num_units: int) -> int:
  """Where the block's stride goes: slim's last unit, keras/torchvision's first."""
  strided_unit = num_units - 1 if layout == 'slim' else 0
  return block_stride if unit == strided_unit else 1


def _symmetric_padding(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
  pad = kernel - 1
  return ((pad // 2, pad - pad // 2),) * 2


class Bottleneck(nn.Module):
  """A ResNet v1 bottleneck unit: 1x1 -> 3x3 (-> temporal) -> 1x1, plus shortcut.

  Returns the unit's output after and before its final ReLU. `bn_mask`, when
  given, restricts every BatchNorm's batch statistics to the frames it marks
  (see `Stream`).
  """

  width: int
  stride: int
  layout: str
  temporal: bool
  num_frames: int
  conv: functools.partial
  norm: functools.partial
  temporal_form: str = 'linear'
  temporal_init: str = 'identity'

  @nn.compact
  def __call__(
      self,
      x: Array,
      x_pre: Array | None = None,
      gate: Array | None = None,
      bn_mask: Array | None = None,
  ) -> tuple[Array, Array]:
    out_channels = 4 * self.width
    in_channels = x.shape[-1]
    if gate is not None:
      if x_pre is None:
        raise ValueError('A gated unit needs the pre-ReLU input `x_pre`.')
      residual = x + x_pre * gate.astype(x.dtype)
    else:
      residual = x

    # Shortcut: projection when channels change, else identity (subsampled when strided).
    if in_channels != out_channels:
      shortcut = self.conv(out_channels, (1, 1), strides=self.stride, name='shortcut')(x)
      shortcut = self.norm(name='shortcut_bn')(shortcut, mask=bn_mask)
    elif self.stride > 1:
      shortcut = x[:, :: self.stride, :: self.stride, :]
    else:
      shortcut = x

    stride_1x1 = self.stride if self.layout == 'keras' else 1
    stride_3x3 = 1 if self.layout == 'keras' else self.stride
    y = self.conv(self.width, (1, 1), strides=stride_1x1, name='conv1')(residual)
    y = nn.relu(self.norm(name='bn1')(y, mask=bn_mask))
    padding = _symmetric_padding(3) if stride_3x3 > 1 else 'SAME'
    y = self.conv(self.width, (3, 3), strides=stride_3x3, padding=padding, name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y, mask=bn_mask))
    if self.temporal:
      n, h, w, c = y.shape
      y = y.reshape(n // self.num_frames, self.num_frames, h, w, c)
      y = self.conv(
          c,
          (3, 1, 1),
          padding='SAME',
          kernel_init=TEMPORAL_INITS[self.temporal_init],
          name='temporal',
      )(y)
      y = y.reshape(n, h, w, c)
      if self.temporal_form == 'conv_bn_relu':
        y = nn.relu(self.norm(name='temporal_bn')(y, mask=bn_mask))
    y = self.conv(out_channels, (1, 1), name='conv3')(y)
    y = self.norm(name='bn3')(y, mask=bn_mask)
    pre = shortcut + y
    return nn.relu(pre), pre


class Stream(nn.Module):
  """ResNet-50 stream: per-frame logits and named endpoints.

  Attributes:
    num_classes: size of the classifier.
    units_per_block: bottleneck units per block; ResNet-50 is (3, 4, 6, 3).
      Tiny streams of the same topology need at least 2 units per block.
    width: bottleneck width of block 1 (doubles every block); ResNet-50 is 64.
    stride_layout: 'slim' | 'keras' | 'torchvision' (see module docstring).
    dtype: compute dtype; parameters stay float32.
    bn_momentum, bn_epsilon: BatchNorm decay and epsilon (reference: 0.997, 1e-5).
    remat: wrap every bottleneck unit in `nn.remat` (`jax.checkpoint`), so the
      backward pass recomputes a unit's internal activations from its inputs
      instead of keeping them from the forward pass. Training activations are
      most of a step's memory at 224x224; this trades about one extra forward
      per step for them. Off by default (the reference had no such option). The
      lifted module keeps the unit's name and scope, so the variable tree, and
      hence every checkpoint, is the same either way.
    temporal_form: `'linear'` | `'conv_bn_relu'` (see the module docstring);
      `'conv_bn_relu'` adds a `temporal_bn` BatchNorm to every unit 1.
    temporal_init: `'identity'` | `'reference_code'`.
  """

  num_classes: int
  units_per_block: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  stride_layout: str = 'slim'
  dtype: jnp.dtype = jnp.float32
  bn_momentum: float = 0.997
  bn_epsilon: float = 1e-5
  remat: bool = False
  temporal_form: str = 'linear'
  temporal_init: str = 'identity'

  @nn.compact
  def __call__(
      self,
      frames: Array,
      *,
      num_frames: int,
      train: bool,
      gates: Mapping[int, Array] | None = None,
      bn_mask: Array | None = None,
  ) -> tuple[Array, dict[str, Array]]:
    """Runs the stream.

    Args:
      frames: `(clips * num_frames, H, W, C)` images.
      num_frames: frames per clip (for the temporal convolutions).
      train: BatchNorm uses batch statistics (and updates its running ones).
      gates: optional `{block_index: m}` giving-stream unit-0 outputs, each of
        the shape of this stream's unit-0 output of that block (1-based blocks).
      bn_mask: optional boolean `(clips * num_frames,)`: with `train=True`,
        BatchNorm's batch statistics count only the marked frames, so padding
        in an evaluation batch does not shift them.

    Returns:
      `(frame_logits, endpoints)`: logits `(clips * num_frames, num_classes)`
      and a dict with `block{b}/unit0_pre`, `block{b}/unit0` (before and after
      ReLU) and `block{b}` (block output) for every block b, and `pooled`.
    """
    if min(self.units_per_block) < CONNECTED_UNIT + 1:
      raise ValueError(
          f'Every block needs at least {CONNECTED_UNIT + 1} units, '
          f'got {tuple(self.units_per_block)}.'
      )
    if frames.shape[0] % num_frames:
      raise ValueError(f'Batch of {frames.shape[0]} frames is not whole clips of {num_frames}.')
    if self.temporal_form not in TEMPORAL_FORMS:
      raise ValueError(
          f'temporal_form must be one of {TEMPORAL_FORMS}, ' f'got {self.temporal_form!r}.'
      )
    if self.temporal_init not in TEMPORAL_INITS:
      raise ValueError(
          f'temporal_init must be one of {tuple(TEMPORAL_INITS)}, ' f'got {self.temporal_init!r}.'
      )
    gates = gates or {}
    if bn_mask is not None:
      bn_mask = bn_mask.reshape(-1, 1, 1, 1)
    conv = functools.partial(
        nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=he_normal
    )
    norm = functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=self.bn_momentum,
        epsilon=self.bn_epsilon,
        dtype=self.dtype,
        param_dtype=jnp.float32,
    )
    x = frames.astype(self.dtype)
    x = conv(self.width, (7, 7), strides=2, padding=_symmetric_padding(7), name='conv1')(x)
    x = nn.relu(norm(name='bn1')(x, mask=bn_mask))
    pool_padding = ((0, 1), (0, 1)) if self.stride_layout == 'slim' else ((1, 1), (1, 1))
    # After ReLU every value is >= 0, so zero padding equals -inf padding here.
    x = jnp.pad(x, ((0, 0),) + pool_padding + ((0, 0),))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')

    endpoints: dict[str, Array] = {}
    strides = block_strides(self.stride_layout, len(self.units_per_block))
    # `x_pre`, `gate` and `bn_mask` may be None: an empty pytree to
    # `jax.checkpoint`, so they need no `static_argnums`.
    unit_cls = nn.remat(Bottleneck) if self.remat else Bottleneck
    x_pre = None
    for b, (num_units, stride) in enumerate(zip(self.units_per_block, strides), start=1):
      for u in range(num_units):
        unit = unit_cls(
            width=self.width * 2 ** (b - 1),
            stride=unit_stride(self.stride_layout, stride, u, num_units),
            layout=self.stride_layout,
            temporal=u == CONNECTED_UNIT,
            num_frames=num_frames,
            conv=conv,
            norm=norm,
            temporal_form=self.temporal_form,
            temporal_init=self.temporal_init,
            name=f'block{b}_unit{u}',
        )
        gate = gates.get(b) if u == CONNECTED_UNIT else None
        x, x_pre = unit(x, x_pre, gate, bn_mask)
        if u == CONNECTED_UNIT - 1:
          endpoints[f'block{b}/unit0_pre'] = x_pre
          endpoints[f'block{b}/unit0'] = x
      endpoints[f'block{b}'] = x

    pooled = jnp.mean(x, axis=(1, 2))
    endpoints['pooled'] = pooled
    logits = nn.Dense(
        self.num_classes,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        kernel_init=he_normal,
        name='logits',
    )(pooled)
    return logits.astype(jnp.float32), endpoints


class StreamFactory(functools.partial):
  """A stream with every setting but its name: `factory(name='rgb')` is one stream.

  Equal settings make equal factories (a plain `functools.partial` is equal
  only to itself), so that a program jitted with the factory as a static
  argument (a stream's initialisation, `multistream.init_stream`) is traced
  once per process for all the stages and networks that build the same stream.
  """

  def _settings(self) -> tuple[Any, ...]:
    return (self.func, self.args, tuple(sorted(self.keywords.items())))

  def __eq__(self, other) -> bool:
    return isinstance(other, StreamFactory) and self._settings() == other._settings()

  def __hash__(self) -> int:
    return hash(self._settings())


def compute_dtype(model_config: Any) -> jnp.dtype:
  """`config.model.dtype` as the dtype streams compute in and their inputs arrive in."""
  return jnp.bfloat16 if model_config.dtype == 'bfloat16' else jnp.float32


def stream_factory(model_config: Any, num_classes: int) -> StreamFactory:
  """Streams as `config.model` defines them; every stream of a run is built by this one.

  `model_config` is the run's `config.model` (a ConfigDict). Which streams a
  stage has and who connects to whom is the stage's to say (`stages.ModelSpec`);
  the network itself is the same for all of them.
  """
  return StreamFactory(
      Stream,
      num_classes=num_classes,
      units_per_block=tuple(model_config.units_per_block),
      width=model_config.width,
      stride_layout=model_config.stride_layout,
      dtype=compute_dtype(model_config),
      remat=model_config.remat,
      bn_momentum=model_config.bn_momentum,
      bn_epsilon=model_config.bn_epsilon,
      temporal_form=model_config.temporal_form,
      temporal_init=model_config.temporal_init,
  )
