"""The multi-stream network: up to two streams joined by multiplicative connections.

One class expresses every stage of the method. A model has a *receiving* stream
and optionally a *giving* stream, each a named `Stream` reading one input
modality. With `connections=True`, the giving stream's unit-0 output (after ReLU)
of each of the 4 blocks gates the receiving stream's unit-1 residual input
(`x + x_pre * m`, see `resnet.py`); the giver itself receives nothing, so it runs
first and the receiver after it.

| stage                  | giver (input)      | receiver (input) | connections |
|------------------------|--------------------|------------------|-------------|
| step 1, one stream     | -                  | rgb or depth     | -           |
| step 1, both in a job  | depth (depth)      | rgb (rgb)        | off         |
| step 2                 | depth (depth)      | rgb (rgb)        | on          |
| step 3                 | depth (depth), frozen | hall (rgb)    | on          |
| step 4                 | hall (rgb)         | rgb (rgb)        | on          |
| Table 4, inverted      | swap 'rgb' and 'depth' in the rows above            |

Stream names are the parameter-tree keys (`params['depth']`, ...), which is how
the trainer carries a stream from one stage's checkpoint to the next.

Clip logits are the mean of the per-frame logits; the fused logits are the mean
of the streams' clip logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from modistill_jax.models import resnet

Array = jax.Array


class MultiStream(nn.Module):
  """Receiving stream plus an optional giving stream.

  Attributes:
    num_classes: classifier size of every stream.
    receiver: name of the receiving stream, e.g. 'rgb' or 'hall'.
    receiver_input: modality the receiver reads, 'rgb' or 'depth'.
    giver: name of the giving stream, or None for a single-stream model.
    giver_input: modality the giver reads.
    connections: multiplicative connections from giver to receiver.
    giver_frozen: the giver is a frozen teacher: its BatchNorm always runs in
      inference mode and no gradient flows into it (step 3).
    units_per_block, width, stride_layout, dtype, remat, bn_momentum, bn_epsilon,
    temporal_form, temporal_init: passed to every `Stream`.
  """
  num_classes: int
  receiver: str
  receiver_input: str
  giver: str | None = None
  giver_input: str | None = None
  connections: bool = True
  giver_frozen: bool = False
  units_per_block: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  stride_layout: str = 'slim'
  dtype: Any = jnp.float32
  remat: bool = False
  bn_momentum: float = 0.997
  bn_epsilon: float = 1e-5
  temporal_form: str = 'linear'
  temporal_init: str = 'identity'

  def _stream(self, name: str) -> resnet.Stream:
    return resnet.Stream(
        num_classes=self.num_classes, units_per_block=tuple(self.units_per_block),
        width=self.width, stride_layout=self.stride_layout, dtype=self.dtype,
        remat=self.remat, bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
        temporal_form=self.temporal_form, temporal_init=self.temporal_init, name=name)

  @property
  def stream_names(self) -> tuple[str, ...]:
    return (self.giver, self.receiver) if self.giver else (self.receiver,)

  @nn.compact
  def __call__(self, inputs: Mapping[str, Array], *, train: bool,
               batch_stats_streams: Sequence[str] = (),
               clip_mask: Array | None = None) -> dict[str, Any]:
    """Runs the streams on clips.

    Args:
      inputs: modality name -> clips `(clips, frames, H, W, C)`.
      train: training mode (BatchNorm batch statistics), except for a frozen giver.
      batch_stats_streams: streams whose BatchNorm uses the batch's own
        statistics even when `train` is False (the reference's step-2
        evaluation of the depth stream); a frozen giver is never one. They
        update the running statistics, so apply with `batch_stats` mutable and
        drop the update.
      clip_mask: optional boolean `(clips,)`: the clips those batch statistics
        are taken over (an evaluation batch's padding is left out).

    Returns:
      A dict with `logits` (stream name -> clip logits `(clips, classes)`),
      `fused` (mean of the streams' clip logits), `frame_logits` (stream name ->
      `(clips, frames, classes)`) and `endpoints` (stream name -> endpoint dict,
      arrays shaped `(clips * frames, ...)`).
    """
    if self.giver is not None and self.giver == self.receiver:
      raise ValueError(f'giver and receiver must differ, both are {self.giver!r}.')

    def run(name: str, modality: str, gates=None, trainable=True):
      clips = inputs[modality]
      n, t = clips.shape[:2]
      batch_stats = trainable and name in batch_stats_streams
      bn_mask = (jnp.repeat(clip_mask, t) if batch_stats and clip_mask is not None else None)
      frame_logits, endpoints = self._stream(name)(
          clips.reshape((n * t,) + clips.shape[2:]), num_frames=t,
          train=(train and trainable) or batch_stats, gates=gates, bn_mask=bn_mask)
      return frame_logits.reshape(n, t, -1), endpoints

    frame_logits, endpoints = {}, {}
    gates = None
    if self.giver is not None:
      fl, ep = run(self.giver, self.giver_input, trainable=not self.giver_frozen)
      if self.giver_frozen:
        fl, ep = jax.lax.stop_gradient((fl, ep))
      frame_logits[self.giver], endpoints[self.giver] = fl, ep
      if self.connections:
        gates = {b: ep[f'block{b}/unit0'] for b in range(1, len(self.units_per_block) + 1)}
    frame_logits[self.receiver], endpoints[self.receiver] = run(
        self.receiver, self.receiver_input, gates=gates)

    logits = {name: fl.mean(axis=1) for name, fl in frame_logits.items()}
    fused = jnp.mean(jnp.stack([logits[n] for n in self.stream_names]), axis=0)
    return {'logits': logits, 'fused': fused, 'frame_logits': frame_logits,
            'endpoints': endpoints}
