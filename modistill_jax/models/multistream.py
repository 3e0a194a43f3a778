"""The multi-stream network: a receiver and its givers, joined by multiplicative connections.

One class expresses every stage of the method. A `MultiStream` runs one
`stages.ModelSpec`: a *receiving* stream and optionally *giving* streams (one
in the paper, one per privileged modality in general), each a named stream
reading one input modality. With `connections=True`, the giving stream's
unit-0 output (after ReLU) of each of the 4 blocks gates the receiving stream's
unit-1 residual input (`x + x_pre * m`, see `resnet.py`); with several givers
their gates add up (`x + x_pre * (m_1 + m_2 + ...)`: each giver's connection
adds its own `x_pre * m_g`), so one giver is exactly the paper's connection.
The givers receive nothing, so they run first and the receiver after them.

| stage                  | givers (input)        | receiver (input) | connections |
|------------------------|-----------------------|------------------|-------------|
| step 1, one stream     | -                     | rgb or depth     | -           |
| step 1, both in a job  | depth (depth)         | rgb (rgb)        | off         |
| step 2                 | depth (depth)         | rgb (rgb)        | on          |
| step 3                 | depth (depth), frozen | hall (rgb)       | on          |
| step 4                 | hall (rgb)            | rgb (rgb)        | on          |
| Table 4, inverted      | swap 'rgb' and 'depth' in the rows above                |

Other modalities take the places of rgb (the deployed one) and depth (the
privileged ones) the same way (`stages.py`).

`StageNetwork` is a whole stage: its `MultiStream`s (one, or the hoffman
baseline's three or more) and the fused prediction. Stream names are the top
keys of the variable trees (`params['depth']`, ...) whatever the stage, which
is how the trainer carries a stream from one stage's checkpoint to the next.

Clip logits are the mean of the per-frame logits; the fused logits are the mean
of the clip logits of the stage's fused streams.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from modistill_jax import stages
from modistill_jax.models import resnet

Array = jax.Array
PyTree = Any


class MultiStream(nn.Module):
  """Receiving stream plus its giving streams (none, one or several), as `spec` says.

  Attributes:
    spec: the streams, their inputs, connections and whether the giver is a
      frozen teacher (its BatchNorm always in inference mode, no gradient into
      it: step 3).
    stream: builds a stream from its name (`resnet.stream_factory`).
  """

  spec: stages.ModelSpec
  stream: resnet.StreamFactory

  @nn.compact
  def __call__(
      self,
      inputs: Mapping[str, Array],
      *,
      train: bool,
      batch_stats_streams: Sequence[str] = (),
      clip_mask: Array | None = None,
  ) -> dict[str, Any]:
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
      A dict with `logits` (stream name -> clip logits `(clips, classes)`) and
      `endpoints` (stream name -> endpoint dict, arrays shaped
      `(clips * frames, ...)`).
    """
    spec = self.spec
    if spec.receiver in (g for g, _ in spec.givers):
      raise ValueError(f'giver and receiver must differ, both are {spec.receiver!r}.')

    def run(name: str, modality: str, gates=None, trainable=True):
      clips = inputs[modality]
      n, t = clips.shape[:2]
      batch_stats = trainable and name in batch_stats_streams
      bn_mask = jnp.repeat(clip_mask, t) if batch_stats and clip_mask is not None else None
      frame_logits, endpoints = self.stream(name=name)(
          clips.reshape((n * t,) + clips.shape[2:]),
          num_frames=t,
          train=(train and trainable) or batch_stats,
          gates=gates,
          bn_mask=bn_mask,
      )
      return frame_logits.reshape(n, t, -1).mean(axis=1), endpoints

    logits, endpoints = {}, {}
    giver_gates = []
    for giver, giver_input in spec.givers:
      giver_logits, giver_endpoints = run(giver, giver_input, trainable=not spec.giver_frozen)
      if spec.giver_frozen:
        giver_logits, giver_endpoints = jax.lax.stop_gradient((giver_logits, giver_endpoints))
      logits[giver], endpoints[giver] = giver_logits, giver_endpoints
      if spec.connections:
        giver_gates.append(resnet.connection_gates(giver_endpoints))
    logits[spec.receiver], endpoints[spec.receiver] = run(
        spec.receiver, spec.receiver_input, gates=combined_gates(giver_gates)
    )
    return {'logits': logits, 'endpoints': endpoints}


def combined_gates(gates: Sequence[Mapping[int, Array]]) -> dict[int, Array] | None:
  """The givers' gates added block by block: `m_1 + m_2 + ...`; one giver's unchanged; None
  without any (no connections)."""
  if not gates:
    return None
  return {block: functools.reduce(jnp.add, [g[block] for g in gates]) for block in gates[0]}


class StageNetwork(nn.Module):
  """Every stream of a stage, and its fused prediction, as one Flax module.

  Attributes:
    stage: the stage (`stages.for_config`): its `ModelSpec`s and fused streams.
    stream: builds a stream from its name (`resnet.stream_factory`).
  """

  stage: stages.Stage
  stream: resnet.StreamFactory

  @property
  def input_dtype(self):
    """The dtype the streams compute in and their inputs arrive in (`resnet.compute_dtype`)."""
    return self.stream.keywords['dtype']

  def setup(self):
    self.parts = [MultiStream(spec, self.stream) for spec in self.stage.models]
    # The parts add no level to the variable trees: their streams sit at the top.
    for part in self.parts:
      nn.share_scope(self, part)

  def __call__(
      self,
      inputs: Mapping[str, Array],
      *,
      train: bool,
      batch_stats_streams: Sequence[str] = (),
      clip_mask: Array | None = None,
  ) -> dict[str, Any]:
    """`MultiStream`'s outputs of every part, merged, plus `fused`: the stage's prediction.

    The arguments are `MultiStream`'s.
    """
    outputs = {'logits': {}, 'endpoints': {}}
    for part in self.parts:
      out = part(inputs, train=train, batch_stats_streams=batch_stats_streams, clip_mask=clip_mask)
      outputs['logits'].update(out['logits'])
      outputs['endpoints'].update(out['endpoints'])
    outputs['fused'] = jnp.mean(jnp.stack([outputs['logits'][s] for s in self.stage.fused]), axis=0)
    return outputs

  def stream_keys(self, rng: Array) -> dict[str, tuple[Array, str]]:
    """Each stream's initialisation key and input modality.

    A stream's key is its part's split of `rng` (the key Flax's `init` of that
    part would take); a stream named in a later part replaces the earlier one,
    as the later part's variables would.
    """
    keys = {}
    for spec, key in zip(self.stage.models, jax.random.split(rng, len(self.stage.models))):
      for name, modality in (*spec.givers, (spec.receiver, spec.receiver_input)):
        keys[name] = (key, modality)
    return keys

  def init_variables(
      self, rng: Array, inputs: Mapping[str, Array], streams: Sequence[str] | None = None
  ) -> dict[str, PyTree]:
    """Fresh `{'params', 'batch_stats'}` of the stage's streams (all, or those in `streams`).

    Stream by stream (`init_stream`): the values are those Flax's `init` of the
    whole network gives, and a stream's program is shared by every stage that
    has the stream, so step 2 compiles nothing step 1 compiled.
    """
    variables = {'params': {}, 'batch_stats': {}}
    for name, (key, modality) in self.stream_keys(rng).items():
      if streams is None or name in streams:
        made = init_stream(self.stream, name, key, inputs[modality])
        for collection, trees in variables.items():
          trees[name] = made[collection][name]
    return variables


class StreamAlone(nn.Module):
  """One stream on its own, at the top of the variable tree under its name in the stage.

  Flax derives a variable's random key from the key `init` takes and the
  variable's path alone, and the connections have no variables, so from the key
  of the stream's part (`StageNetwork.stream_keys`) this makes exactly the
  variables the stage's network makes for the stream.

  Attributes:
    stream: builds the stream (`resnet.stream_factory`).
    stream_name: its name in the stage (`rgb`, `depth`, `hall`, ...).
  """

  stream: resnet.StreamFactory
  stream_name: str

  @nn.compact
  def __call__(self, clips: Array) -> tuple[Array, dict[str, Array]]:
    n, t = clips.shape[:2]
    return self.stream(name=self.stream_name)(
        clips.reshape((n * t,) + clips.shape[2:]), num_frames=t, train=False
    )


@functools.partial(jax.jit, static_argnums=(0, 1))
def init_stream(
    stream: resnet.StreamFactory, name: str, rng: Array, clips: Array
) -> dict[str, PyTree]:
  """`StreamAlone(stream, name).init(rng, clips)`, jitted once per stream and clip shape.

  With the key an argument, the program depends only on the stream's settings,
  name and input shape: the rgb stream of steps 1, 2 and 4, of the Hoffman
  baseline and of the ablation is one program, compiled (or read from the
  persistent cache) once.
  """
  # parent=None: a top-level module even when called from a `StageNetwork` method.
  return StreamAlone(stream, name, parent=None).init(rng, clips)


def stage_network(stage: stages.Stage, model_config: Any, num_classes: int) -> StageNetwork:
  """The stage's network with the streams `model_config` (`config.model`) defines."""
  return StageNetwork(stage, resnet.stream_factory(model_config, num_classes))
