"""Every stage's train and eval step lowered for TPU and CUDA from any host, CPU included.

No accelerator is needed to find out whether a step would compile for one:
`jax.export` lowers a jitted function to StableHLO for a platform that is not
present, through that platform's lowering rules, and refuses what it cannot
carry there. So a user's first long job on a pod does not have to be the first
time the step meets the TPU's lowering, and neither do the tests.

What makes a step fail here, before it could fail on the device:

* host callbacks in the step (`jax.debug.callback`, `jax.debug.print`,
  `jax.pure_callback`, `io_callback`): the step would stop on
  the host every call, and an exported program cannot carry them. Found in
  the step's jaxpr and named (`LoweringError`), rather than through
  `jax.export`'s "platform for the specified backend cpu is different" error.
* custom calls that are not guaranteed stable on the target (CPU-only LAPACK
  kernels and the like): `jax.export`'s own check.
* ops or dtypes without a lowering rule for the platform: `jax.export` raises
  `NotImplementedError` naming the primitive.
* float64 or complex128 values on TPU, which has no native 64-bit floating
  point (`UNSUPPORTED_ELEMENT_TYPES`), found in the lowered module's types.

The lowering is done at the mesh of this host's devices (several fake CPU
devices stand in for chips with
`XLA_FLAGS=--xla_force_host_platform_device_count=N`), with the trainer's own
step functions and shardings (`trainer.make_train_fn`,
`evaluators.make_eval_fn`), at the config's batch sizes and frame shapes. For each
stage, step and platform it reports the serialised StableHLO size and XLA's
cost analysis of the lowered (unoptimised, whole-program) module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import functools
from typing import Any

import jax
from jax import export
import ml_collections
import numpy as np

from modistill_jax import evaluators
from modistill_jax import initialization
from modistill_jax import modalities as modalities_lib
from modistill_jax import optim
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax import trainer
from modistill_jax.data import feeding
from modistill_jax.models import stage_network

PLATFORMS = ('tpu', 'cuda')
# Primitives that run Python on the host in the middle of a step.
CALLBACK_PRIMITIVES = frozenset({'debug_callback', 'debug_print', 'pure_callback', 'io_callback'})
# StableHLO element types a platform cannot compute in.
UNSUPPORTED_ELEMENT_TYPES = {'tpu': ('f64', 'complex<f64>'), 'cuda': ()}
STEPS = ('train', 'eval')
# Characters of a `jax.export` error kept in a `LoweringError`.
MESSAGE_CHARS = 2000


class LoweringError(RuntimeError):
  """A step cannot be lowered for an accelerator platform."""


@dataclasses.dataclass(frozen=True)
class Lowering:
  """One step of one stage lowered for one platform.

  Attributes:
    stage: the stage name.
    step: 'train' or 'eval'.
    platform: 'tpu' or 'cuda'.
    module_bytes: the lowered StableHLO module, as text (`Lowered.as_text()`).
    flops: XLA's cost analysis of the lowered module (the whole program,
      before partitioning), or None when it gave none.
    num_devices: devices of the mesh the step is partitioned over.
  """

  stage: str
  step: str
  platform: str
  module_bytes: int
  flops: float | None
  num_devices: int


def check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
  platforms = tuple(platforms)
  unknown = [p for p in platforms if p not in PLATFORMS]
  if not platforms or unknown:
    raise ValueError(f'Platforms to lower for must be among {PLATFORMS}, got {list(platforms)}.')
  return platforms


def _equations(jaxpr: jax.extend.core.Jaxpr) -> Iterator[jax.extend.core.JaxprEqn]:
  """Every equation of `jaxpr` and of the jaxprs nested in it (jit, scan, cond, remat...)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          yield from _equations(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          yield from _equations(sub)


def check_no_callbacks(jaxpr: jax.extend.core.ClosedJaxpr, what: str) -> None:
  """Raises `LoweringError` naming the host callbacks in `jaxpr`."""
  found = sorted({e.primitive.name for e in _equations(jaxpr.jaxpr)} & CALLBACK_PRIMITIVES)
  if found:
    raise LoweringError(
        f'{what} calls back to the host ({", ".join(found)}): an accelerator step would wait '
        'on Python every call, and the step cannot be exported. Remove the callback (for '
        'values, return them as metrics instead of jax.debug.print).'
    )


def check_element_types(module_text: str, platform: str, what: str) -> None:
  """Raises `LoweringError` when the lowered module computes in a type `platform` lacks."""
  for element_type in UNSUPPORTED_ELEMENT_TYPES[platform]:
    if f'x{element_type}>' in module_text or f'tensor<{element_type}>' in module_text:
      raise LoweringError(
          f'{what} computes in {element_type}, which {platform} does not support; '
          'keep jax_enable_x64 off and cast to float32.'
      )


def lower_step(
    jitted, args: Sequence[Any], *, what: str, platforms: Sequence[str], num_devices: int
) -> list[tuple[str, int, float | None]]:
  """`(platform, StableHLO bytes, lowered FLOPs)` of `jitted(*args)` for each platform.

  `args` are `jax.ShapeDtypeStruct`s carrying their shardings. One
  `jax.export` for all the platforms runs its checks (stable custom calls, a
  lowering rule for every op on every platform, shardings); each platform's
  own lowering then gives the module's size, its element types and XLA's cost
  analysis. Raises `LoweringError`, with `what` in the message.
  """
  args = tuple(args)
  traced = jitted.trace(*args)
  check_no_callbacks(traced.jaxpr, what)
  try:
    exported = export.export(jitted, platforms=tuple(platforms))(*args)
  except Exception as e:  # pylint: disable=broad-except  (re-raised with what failed)
    # jax.export's messages end with the whole Python call stack of the op.
    message = str(e) if len(str(e)) <= MESSAGE_CHARS else str(e)[:MESSAGE_CHARS] + ' [...]'
    raise LoweringError(
        f'{what} does not lower for {"/".join(platforms)}: {type(e).__name__}: {message}'
    ) from e
  if exported.nr_devices != num_devices:
    raise LoweringError(
        f'{what} lowered for {exported.nr_devices} devices, expected {num_devices}.'
    )
  found = []
  for platform in platforms:
    lowered = traced.lower(lowering_platforms=(platform,))
    text = lowered.as_text()
    check_element_types(text, platform, what)
    flops = (lowered.cost_analysis() or {}).get('flops')
    found.append((platform, len(text.encode()), flops))
  return found


def abstract_batch(
    config: ml_collections.ConfigDict, batch_size: int, modalities: Sequence[str], mesh
) -> dict[str, jax.ShapeDtypeStruct]:
  """The pipeline's batch of `batch_size` clips, as shapes sharded over the mesh's data axis."""
  shapes = {
      m: (feeding.input_shape(config, batch_size, m), modalities_lib.get(m).batch_dtype)
      for m in modalities
  }
  shapes.update(
      label=((batch_size,), np.int32),
      mask=((batch_size,), np.bool_),
      index=((batch_size,), np.int32),
  )
  data = sharding.data_sharded(mesh)
  return {k: jax.ShapeDtypeStruct(s, d, sharding=data) for k, (s, d) in shapes.items()}


def lower_stage(
    config: ml_collections.ConfigDict,
    stage_name: str,
    *,
    num_classes: int,
    mesh,
    platforms: Sequence[str] = PLATFORMS,
    steps: Sequence[str] = STEPS,
) -> list[Lowering]:
  """The stage's train and eval steps, as the trainer builds them, lowered for `platforms`."""
  platforms = check_platforms(platforms)
  config = initialization.effective_config(config, stage_name)
  stage = stages.for_config(stage_name, config)
  model = stage_network(stage, config.model, num_classes)
  tx, schedule = optim.make_optimizer(config.optimizer, max(config.num_train_steps, 1))
  make_state = trainer.make_state_fn(stage, tx, mesh)
  state = trainer.abstract_state(model, config, make_state, mesh)
  jitted = {
      'train': (
          trainer.make_train_fn(model, config, tx, schedule, mesh),
          (state, abstract_batch(config, config.batch_size, stage.inputs, mesh)),
      ),
      'eval': (
          evaluators.make_eval_fn(model, config, mesh),
          (
              state,
              abstract_batch(config, config.eval_batch_size, stage.inputs, mesh),
              sharding.abstract(jax.eval_shape(functools.partial(jax.random.key, 0)), None),
          ),
      ),
  }
  found = []
  for step in steps:
    fn, args = jitted[step]
    for platform, module_bytes, flops in lower_step(
        fn,
        args,
        what=f'The {step} step of {stage_name}',
        platforms=platforms,
        num_devices=mesh.devices.size,
    ):
      found.append(
          Lowering(stage_name, step, platform, module_bytes, flops, int(mesh.devices.size))
      )
  return found


def lower_stages(
    config: ml_collections.ConfigDict,
    names: Sequence[str],
    *,
    num_classes: int,
    platforms: Sequence[str] = PLATFORMS,
) -> list[Lowering]:
  """`lower_stage` of each stage, over a mesh of every local device."""
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  return [
      lowering
      for name in names
      for lowering in lower_stage(
          config, name, num_classes=num_classes, mesh=mesh, platforms=platforms
      )
  ]


def table(lowerings: Sequence[Lowering]) -> str:
  """A text table: stage, step, platform, devices, StableHLO KiB, lowered GFLOP."""
  lines = [
      f'{"stage":<12} {"step":<6} {"platform":<9} {"devices":>7} {"StableHLO KiB":>14} '
      f'{"GFLOP (lowered)":>16}'
  ]
  for x in lowerings:
    flops = f'{x.flops / 1e9:,.2f}' if x.flops is not None else 'n/a'
    lines.append(
        f'{x.stage:<12} {x.step:<6} {x.platform:<9} {x.num_devices:>7} '
        f'{x.module_bytes / 1024:>14,.1f} {flops:>16}'
    )
  return '\n'.join(lines)
