"""A plain Flax ResNet-50 v1.5 training step: the benchmark suite's yardstick.

`benchmark --suite` times this beside our stages on the same frames, so that
our step-1 frames/s can be read against what a well-known image network does
on the same device, dtype, batch and optimizer. It exists for that comparison
only; nothing trains with it.

The network is the torchvision ResNet-50 ("v1.5": the stride of a
downsampling bottleneck sits in its 3x3 convolution, not its first 1x1), on
single frames: no temporal convolutions, no clips. A batch of B clips of T
frames is B x T images, each carrying its clip's label, so a frame costs the
reference what it costs one of our streams, and frames/s count alike.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from modistill_jax import sharding
from modistill_jax.data import preprocess

RESNET50_UNITS = (3, 4, 6, 3)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (strided) -> 1x1 with 4x expansion, projection shortcut when shapes change."""

  features: int
  strides: int
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
    )
    y = nn.relu(norm()(conv(self.features, (1, 1))(x)))
    y = nn.relu(norm()(conv(self.features, (3, 3), strides=self.strides, padding=1)(y)))
    y = norm()(conv(4 * self.features, (1, 1))(y))
    if x.shape[-1] != 4 * self.features or self.strides != 1:
      x = norm()(conv(4 * self.features, (1, 1), strides=self.strides)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet v1.5 on images `(N, H, W, 3)`; `units_per_block=(3, 4, 6, 3)`, width 64 is ResNet-50.

  A narrower `width` or fewer units make the tiny variant the tests train.
  """

  num_classes: int
  units_per_block: Sequence[int] = RESNET50_UNITS
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    x = nn.Conv(self.width, (7, 7), strides=2, padding=3, use_bias=False, dtype=self.dtype)(images)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)(x)
    x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding='SAME')
    for block, units in enumerate(self.units_per_block):
      for unit in range(units):
        x = Bottleneck(
            self.width * 2**block, strides=2 if unit == 0 and block > 0 else 1, dtype=self.dtype
        )(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class ReferenceState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def frames_of(batch: dict[str, jax.Array], modality: str) -> tuple[jax.Array, jax.Array]:
  """Clips `(B, T, H, W, 3)` and labels `(B,)` -> images `(B*T, H, W, 3)` and their labels."""
  clips = batch[modality]
  num_frames = clips.shape[1]
  return clips.reshape((-1,) + clips.shape[2:]), jnp.repeat(batch['label'], num_frames)


def train_step(
    state: ReferenceState,
    batch: dict[str, jax.Array],
    *,
    model: ResNet,
    tx: optax.GradientTransformation,
    mean: Sequence[float],
    std: Sequence[float],
    modality: str,
) -> tuple[ReferenceState, dict[str, jax.Array]]:
  """One step of softmax cross-entropy on every frame, the uint8 input normalised on the device."""
  images, labels = frames_of(batch, modality)
  images = preprocess.normalize(images, mean, std, model.dtype)

  def loss_fn(params):
    logits, updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats},
        images,
        train=True,
        mutable=['batch_stats'],
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, updates['batch_stats']

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = ReferenceState(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      batch_stats=batch_stats,
      opt_state=opt_state,
  )
  return new_state, {'loss': loss}


def init_state(
    model: ResNet, tx: optax.GradientTransformation, image_size: int, seed: int = 0
) -> ReferenceState:
  variables = model.init(
      jax.random.key(seed), jnp.zeros((1, image_size, image_size, 3), model.dtype), train=False
  )
  return ReferenceState(
      step=jnp.zeros((), jnp.int32),
      params=variables['params'],
      batch_stats=variables['batch_stats'],
      opt_state=tx.init(variables['params']),
  )


def make_train_fn(
    model: ResNet,
    tx: optax.GradientTransformation,
    input_config: ml_collections.ConfigDict,
    mesh,
    modality: str = 'rgb',
):
  """The jitted step, sharded and donated exactly as `trainer.make_train_fn` does ours."""
  replicated = sharding.replicated(mesh)
  step = functools.partial(
      train_step,
      model=model,
      tx=tx,
      mean=tuple(input_config[f'{modality}_mean']),
      std=tuple(input_config[f'{modality}_std']),
      modality=modality,
  )
  return jax.jit(
      step,
      in_shardings=(replicated, sharding.data_sharded(mesh)),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,),
  )
