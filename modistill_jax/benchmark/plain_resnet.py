"""The plain ResNet v1.5 reference step (`reference_resnet`), measured like a stage."""

from __future__ import annotations

import functools
from typing import Any

import jax
import ml_collections

from modistill_jax import optim
from modistill_jax import reference_resnet
from modistill_jax import sharding
from modistill_jax.benchmark import costs
from modistill_jax.benchmark import step


def benchmark_reference(
    config: ml_collections.ConfigDict,
    *,
    num_steps: int,
    warmup: int,
    repeats: int,
    num_classes: int,
    mesh,
    dtype,
    modality: str = 'rgb',
) -> dict[str, Any]:
  """The plain ResNet v1.5 step (`reference_resnet`) on the frames step 1 reads (`modality`).

  Same depth and width as the config's stream (ResNet-50 for the NTU configs),
  same batch of clips, dtype, optimizer, sharding and donation as our step,
  and the same accounting: frames/s counts the input frames.
  """
  size, num_frames = config.input.image_size, config.input.num_frames
  model = reference_resnet.ResNet(
      num_classes=num_classes,
      units_per_block=tuple(config.model.units_per_block),
      width=config.model.width,
      dtype=dtype,
  )
  tx, _ = optim.make_optimizer(config.optimizer, warmup + num_steps * repeats)
  train_fn = reference_resnet.make_train_fn(model, tx, config.input, mesh, modality)
  replicated = sharding.replicated(mesh)
  make_state = jax.jit(
      lambda: reference_resnet.init_state(model, tx, size), out_shardings=replicated
  )
  abstract_state = sharding.abstract(jax.eval_shape(make_state), replicated)
  batches = [
      step.synthetic_batch(config, (modality,), num_classes, mesh, seed) for seed in range(2)
  ]
  abstract_batch = sharding.abstract(batches[0], sharding.data_sharded(mesh))
  # Its own forward FLOPs per frame, counted as `forward_flops_per_frame` counts a stream's.
  images = jax.ShapeDtypeStruct((num_frames, size, size, 3), dtype)
  forward = jax.jit(functools.partial(model.apply, train=False))
  variables = {'params': abstract_state.params, 'batch_stats': abstract_state.batch_stats}
  forward_flops = costs.flops(forward.lower(variables, images).compile()) / num_frames
  result = {
      'stage': 'reference',
      'model': 'plain ResNet v1.5 (reference_resnet)',
      'units_per_block': list(config.model.units_per_block),
      'width': config.model.width,
      'inputs': [modality],
      'batch_size': config.batch_size,
      'num_frames': num_frames,
      'forward_flops_per_frame': forward_flops,
  }
  result.update(
      step.time_step(
          train_fn,
          make_state,
          abstract_state,
          batches,
          abstract_batch,
          num_steps=num_steps,
          warmup=warmup,
          repeats=repeats,
          mesh=mesh,
          clips_per_step=config.batch_size,
          num_frames=num_frames,
      )
  )
  peak = costs.peak_flops(jax.devices()[0].device_kind)
  result['model_flops_per_step'] = costs.model_flops_per_step(
      forward_flops, config.batch_size * num_frames, trained_streams=1, frozen_streams=0
  )
  result['model_flops_mfu'] = costs.model_flops_mfu(
      result['model_flops_per_step'], result['step_s'], peak, mesh.devices.size
  )
  result['mfu'] = costs.model_flops_mfu(
      result['flops_per_step'], result['step_s'], peak, mesh.devices.size
  )
  return result
