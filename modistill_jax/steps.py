"""Train state, losses and the pure train/eval step functions of a stage's network.

Everything here is a pure function of arrays and static configuration, so the
trainer jits it once over a device mesh and tests and notebooks can import it.

* `TrainState.params` / `batch_stats` / `opt_state` hold only the trainable
  streams. A frozen teacher (step 3) sits in `TrainState.frozen`: it is an input
  of the loss, never differentiated (the gradient is taken with respect to
  `params` only), never updated, has no optimizer state, and its BatchNorm runs
  in inference mode (`ModelSpec.giver_frozen`).
* Inputs arrive as the pipeline's clips (uint8 images and depth codes, 4x less
  host-to-device traffic than float32; float32 joint segments) and become the
  images the streams read, normalised, on the device (`Modality.network_input`);
  Table 2's test-time noise of the privileged modalities is applied there too.
"""

from __future__ import annotations

from collections.abc import Mapping
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from modistill_jax import losses
from modistill_jax import modalities as modalities_lib
from modistill_jax import stages
from modistill_jax.data import preprocess
from modistill_jax.models import StageNetwork

Array = jax.Array
PyTree = Any


@flax.struct.dataclass
class TrainState:
  step: Array
  params: PyTree  # trainable streams only: {stream: ...}
  batch_stats: PyTree  # trainable streams only
  opt_state: PyTree
  frozen: PyTree  # {'params': {stream: ...}, 'batch_stats': {stream: ...}}; {} when none

  def variables(self) -> dict[str, PyTree]:
    """All streams' variables, trainable and frozen, as Flax expects them."""
    frozen_params = self.frozen.get('params', {}) if self.frozen else {}
    frozen_stats = self.frozen.get('batch_stats', {}) if self.frozen else {}
    return {
        'params': {**self.params, **frozen_params},
        'batch_stats': {**self.batch_stats, **frozen_stats},
    }


def forward(
    network: StageNetwork,
    variables: Mapping[str, PyTree],
    inputs: Mapping[str, Array],
    *,
    train: bool,
    batch_stats_streams: tuple[str, ...] = (),
    clip_mask: Array | None = None,
) -> tuple[dict[str, Any], dict[str, PyTree]]:
  """The network's outputs and (in training) its streams' updated batch statistics.

  `batch_stats_streams` and `clip_mask` are `MultiStream`'s: in evaluation,
  those streams normalise with the (masked) batch's statistics; the running
  statistics they would update are dropped.
  """
  if not train and not batch_stats_streams:
    return network.apply(variables, inputs, train=False), {}
  outputs, updates = network.apply(
      variables,
      inputs,
      train=train,
      batch_stats_streams=batch_stats_streams,
      clip_mask=clip_mask,
      mutable=['batch_stats'],
  )
  return outputs, (updates['batch_stats'] if train else {})


def encoding(input_config: ml_collections.ConfigDict, modality: str) -> str:
  """The image the device makes of `modality`: `input.<modality>_encoding` where the config
  has one (depth, infrared), else the modality's only one (RGB, skeleton)."""
  key = f'{modality}_encoding'
  return input_config[key] if key in input_config else modalities_lib.get(modality).encodings[0]


def model_inputs(
    batch: Mapping[str, Array],
    input_config: ml_collections.ConfigDict,
    modalities: tuple[str, ...],
    dtype,
    transform=None,
) -> dict[str, Array]:
  """The pipeline's clips -> normalised images of the modalities a stage reads.

  Each modality's clips first become the 3-channel image its stream reads
  (`Modality.network_input`: depth codes through the jet or gray table of
  `input.depth_encoding`, infrared on 3 channels, joints as heat maps), then
  `transform` corrupts it (Table 2's noise acts on the image the network
  reads), then it is normalised by `input.<modality>_mean` and `_std`;
  `input.depth_subtract_mean=False` keeps depth's std but no mean.
  """
  image_size = (input_config.image_size, input_config.image_size)
  inputs = {}
  for m in modalities:
    mean = tuple(input_config[f'{m}_mean'])
    image = modalities_lib.get(m).network_input(batch[m], image_size, encoding(input_config, m))
    clips = image.astype(jnp.float32)
    if transform is not None:
      clips = transform(clips)
    if not input_config.get(f'{m}_subtract_mean', True):
      mean = (0.0,) * len(mean)
    inputs[m] = preprocess.normalize(clips, mean, tuple(input_config[f'{m}_std'])).astype(dtype)
  return inputs


def eval_batch_stats_streams(
    stage: stages.Stage, privileged: str | tuple[str, ...], eval_config: ml_collections.ConfigDict
) -> tuple[str, ...]:
  """Streams evaluated with batch statistics: step 2's privileged ones, if asked.

  The reference builds its step-2 graph with the depth stream's BatchNorm in
  training mode and evaluates it that way (`eval.step2_privileged_batch_stats`).
  """
  if eval_config.step2_privileged_batch_stats and stage.name == 'step2':
    return stages.names_tuple(privileged)
  return ()


def _xent_fused(stage, loss_config, outputs, labels):
  """Cross-entropy of the fused prediction (steps 2 and 4)."""
  del stage, loss_config
  loss = losses.cross_entropy(outputs['fused'], labels)
  return loss, {'xent': loss}


def _own_labels(stage: stages.Stage, outputs: Mapping[str, Any], labels: Array):
  """`{xent_<stream>: its cross-entropy}` of every trainable stream but the student."""
  return {
      f'xent_{s}': losses.cross_entropy(outputs['logits'][s], labels)
      for s in stage.trainable
      if s != stage.student
  }


def _xent_each(stage, loss_config, outputs, labels):
  """Each stream's own cross-entropy, summed (step 1: independent streams)."""
  del loss_config
  xents = _own_labels(stage, outputs, labels)
  return sum(xents.values()), xents


def _distill(stage, loss_config, outputs, labels):
  """The hallucination loss `loss.kind` names (`losses.HALLUCINATION_LOSSES`), teachers fixed.

  The student learns from its teachers' fused logits and towards each one's
  feature map (`losses.py`); one teacher is the paper's eq. (5).
  """
  endpoint, student = loss_config.hall_endpoint, stage.student
  teacher_logits = losses.fused_teacher_logits([outputs['logits'][t] for t in stage.teachers])
  teacher_features = [outputs['endpoints'][t][endpoint] for t in stage.teachers]
  return losses.HALLUCINATION_LOSSES[loss_config.kind](
      loss_config,
      outputs['logits'][student],
      jax.lax.stop_gradient(teacher_logits),
      outputs['endpoints'][student][endpoint],
      jax.lax.stop_gradient(teacher_features),
      labels,
  )


def _hoffman(stage, loss_config, outputs, labels):
  """Every stream learns jointly; the teacher only from its own labels."""
  xents = _own_labels(stage, outputs, labels)
  distill, terms = _distill(stage, loss_config, outputs, labels)
  return distill + sum(xents.values()), {**terms, **xents}


# `Stage.loss` -> (stage, config.loss, outputs, labels) -> (loss, {term: value}). A stage with
# a new loss is one entry here (and its test).
STAGE_LOSSES = {
    'xent_fused': _xent_fused,
    'xent_each': _xent_each,
    'distill': _distill,
    'hoffman': _hoffman,
}


def stage_loss(
    stage: stages.Stage,
    loss_config: ml_collections.ConfigDict,
    outputs: Mapping[str, Any],
    labels: Array,
) -> tuple[Array, dict[str, Array]]:
  """The stage's training loss and its separately logged terms."""
  return STAGE_LOSSES[stage.loss](stage, loss_config, outputs, labels)


def accuracies(stage: stages.Stage, outputs: Mapping[str, Any], labels: Array) -> dict[str, Array]:
  acc = {
      f'accuracy/{s}': jnp.mean(jnp.argmax(logits, -1) == labels)
      for s, logits in outputs['logits'].items()
  }
  if len(stage.fused) > 1:
    acc['accuracy/fused'] = jnp.mean(jnp.argmax(outputs['fused'], -1) == labels)
  return acc


def train_step(
    state: TrainState,
    batch: Mapping[str, Array],
    *,
    model: StageNetwork,
    config: ml_collections.ConfigDict,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
) -> tuple[TrainState, dict[str, Array]]:
  """One optimisation step on a global batch; differentiates `state.params` only."""
  stage = model.stage
  inputs = model_inputs(batch, config.input, stage.inputs, model.input_dtype)
  labels = batch['label']

  def loss_fn(params):
    variables = state.replace(params=params).variables()
    outputs, new_stats = forward(model, variables, inputs, train=True)
    loss, terms = stage_loss(stage, config.loss, outputs, labels)
    return loss, (terms, outputs, new_stats)

  (loss, (terms, outputs, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  batch_stats = {s: new_stats[s] for s in state.batch_stats}
  metrics = {
      'loss': loss,
      **{f'loss/{k}': v for k, v in terms.items()},
      **accuracies(stage, outputs, labels),
      'grad_norm': optax.tree.norm(grads),
      'param_norm': optax.tree.norm(params),
      'batch_stats_norm': optax.tree.norm(batch_stats),
      'learning_rate': schedule(state.step),
  }
  new_state = state.replace(
      step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  return new_state, metrics


@flax.struct.dataclass
class DepthCondition:
  """A test-time condition of the privileged modalities (the paper's depth) as arrays: Table 2's
  levels are inputs of one program.

  `noise_std`: sigma of the multiplicative noise (0: the clean image, exactly:
  the noise factor is then 1); `void`: the image replaced by zeros (noise is
  then moot).
  """

  noise_std: Array  # float32 scalar
  void: Array  # bool scalar

  @classmethod
  def of(cls, noise_std: float, void: bool) -> DepthCondition:
    return cls(noise_std=jnp.float32(noise_std), void=jnp.bool_(void))


def _noise_key(key: Array, index: int) -> Array:
  """The noise key of the `index`-th privileged modality: the first draws from `key` itself
  (as the paper's depth always did), the others from their own fold of it."""
  return key if index == 0 else jax.random.fold_in(key, index)


def corruption_fn(eval_config: ml_collections.ConfigDict, key: Array, modality: str, index: int):
  """Test-time corruption (paper section 4.3) of `modality`'s image, or None for clean.

  `index`: the modality's place among the privileged ones (its noise key).
  """
  description = modalities_lib.get(modality)
  if eval_config.void_depth:
    return description.void
  if eval_config.depth_noise_std > 0:
    return functools.partial(
        description.noise, _noise_key(key, index), sigma=eval_config.depth_noise_std
    )
  return None


def condition_fn(condition: DepthCondition, key: Array, modality: str, index: int):
  """`corruption_fn` for a traced condition: noise, then zeros where void."""
  description = modalities_lib.get(modality)

  def transform(image):
    noisy = description.noise(_noise_key(key, index), image, sigma=condition.noise_std)
    return jnp.where(condition.void, description.void(noisy), noisy)

  return transform


def eval_step(
    state: TrainState,
    batch: Mapping[str, Array],
    noise_key: Array,
    depth_condition: DepthCondition | None = None,
    *,
    model: StageNetwork,
    config: ml_collections.ConfigDict,
) -> dict[str, Array]:
  """Per-example predictions of every stream and of the fused model.

  The privileged modalities' images (the paper's depth) are corrupted as
  `config.eval` says (fixed in the program), or, given `depth_condition`, as it
  says (one program for all levels).
  """
  stage = model.stage
  _, privileged = stages.roles(config.privileged, config.deployed)
  inputs = model_inputs(
      batch,
      config.input,
      tuple(m for m in stage.inputs if m not in privileged),
      model.input_dtype,
  )
  for index, m in enumerate(privileged):
    if m not in stage.inputs:
      continue
    if depth_condition is None:
      transform = corruption_fn(config.eval, noise_key, m, index)
    else:
      transform = condition_fn(depth_condition, noise_key, m, index)
    inputs |= model_inputs(batch, config.input, (m,), model.input_dtype, transform)
  outputs, _ = forward(
      model,
      state.variables(),
      inputs,
      train=False,
      batch_stats_streams=eval_batch_stats_streams(stage, config.privileged, config.eval),
      clip_mask=batch['mask'],
  )
  preds = {
      f'pred/{s}': jnp.argmax(logits, -1).astype(jnp.int32)
      for s, logits in outputs['logits'].items()
  }
  preds['pred/fused'] = jnp.argmax(outputs['fused'], -1).astype(jnp.int32)
  return {**preds, 'label': batch['label'], 'mask': batch['mask'], 'index': batch['index']}
