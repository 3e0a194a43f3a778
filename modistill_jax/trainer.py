"""The staged trainer: one linear `run_stage`, and `train_and_evaluate` over stages.

`run_stage` reads top to bottom: mesh -> data -> model -> initial weights
(resume > previous stages > from_workdir > ImageNet > scratch) -> jitted steps
-> loop (log, validate every epoch, checkpoint, stop on SIGTERM or a non-finite
loss) -> test evaluation of the best-on-validation state -> `results.json`.

Outputs of a stage in `WORKDIR/<stage>/`: `config.json`, `dataset.json` (class
names, split sizes), `metrics.jsonl` + `events/` (TensorBoard),
`checkpoints/{latest,best}/`, `results.json` and `predictions_<split>.npz`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
import functools
import json
import os
import signal
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from modistill_jax import checkpointing
from modistill_jax import config_lib
from modistill_jax import metrics as metrics_lib
from modistill_jax import optim
from modistill_jax import param_merge
from modistill_jax import pretrained
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax import steps
from modistill_jax.data import pipeline

PyTree = Any


class MissingPrerequisiteError(FileNotFoundError):
  """A stage needs a checkpoint that an earlier stage has not written."""


# MARK: data


def ensure_dataset(config: ml_collections.ConfigDict) -> str | None:
  """Builds a download-free dataset (the synthetic one) on first use; returns where, if it did."""
  if not config.build_if_missing:
    return None
  import data_builders  # pylint: disable=g-import-not-at-top,unused-import  (registers builders)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from modistill_jax.data import records  # pylint: disable=g-import-not-at-top
  name = config.dataset + (f'/{config.builder_config}' if config.builder_config else '')
  builder = tfds.builder(name, data_dir=config.data_dir or None, file_format=records.FILE_FORMAT)
  # TFDS logs a warning when asked about a dataset folder that does not exist yet.
  if builder.data_path.exists() and builder.is_prepared():
    return None
  if jax.process_count() > 1:
    raise RuntimeError(f'Build {name} once before a multi-host run (tfds build).')
  logging.info('Building %s in %s', name, builder.data_dir)
  builder.download_and_prepare()
  return str(builder.data_dir)


def load_sources(config: ml_collections.ConfigDict) -> dict[str, pipeline.Source | None]:
  ensure_dataset(config)
  return {split: pipeline.load_source(config.dataset, config.protocol, split,
                                      data_dir=config.data_dir or None,
                                      builder_config=config.builder_config or None)
          for split in ('train', 'validation', 'test')}


def input_shape(config: ml_collections.ConfigDict, batch: int) -> tuple[int, ...]:
  size = config.input.image_size
  return (batch, config.input.num_frames, size, size, 3)


# MARK: initial weights


def stage_dir(workdir: str, stage: str) -> str:
  return os.path.join(workdir, stage)


def _command(config_path: str | None, stage: str, workdir: str) -> str:
  config_arg = f'{config_path}:{stage}' if config_path else f'<config.py>:{stage}'
  return f'python -m modistill_jax.train --config={config_arg} --workdir={workdir}'


def _find_stage(workdir: str, candidates: tuple[str, ...], config_path: str | None) -> str:
  for name in candidates:
    if checkpointing.has_best(stage_dir(workdir, name)):
      return stage_dir(workdir, name)
  expected = ' or '.join(str(checkpointing.best_dir(stage_dir(workdir, n))) for n in candidates)
  raise MissingPrerequisiteError(
      f'Missing previous stage: expected a checkpoint in {expected}. Produce it with: '
      f'{_command(config_path, candidates[0], workdir)}')


def previous_stage_variables(stage: stages.Stage, workdir: str,
                             config_path: str | None = None) -> dict[str, dict[str, PyTree]]:
  """`{stream: {'params', 'batch_stats'}}` from earlier stages, per `stage.init`.

  Every prerequisite is located before anything is read, so a missing one fails
  at once.
  """
  dirs = [(src, _find_stage(workdir, src.from_stages, config_path)) for src in stage.init]
  cache: dict[str, dict[str, Any]] = {}
  loaded = {}
  for src, directory in dirs:
    if directory not in cache:
      cache[directory] = checkpointing.read_best_state(directory)
    loaded[src.stream] = checkpointing.stream_variables(cache[directory], src.from_stream)
    logging.info('%s: stream %r <- %s stream %r', stage.name, src.stream, directory,
                 src.from_stream)
  return loaded


def check_imagenet_layout(config: ml_collections.ConfigDict) -> None:
  """The model must run the ImageNet weights in the stride layout they were trained in.

  `run_stage` calls this first, so a mismatch fails before any data is read or
  anything is compiled.
  """
  if not config.init.imagenet:
    return
  with open(os.path.join(config.init.imagenet, pretrained.METADATA_FILE)) as f:
    layout = json.load(f)['stride_layout']
  if layout != config.model.stride_layout:
    raise ValueError(
        f'{config.init.imagenet} holds {layout!r}-layout weights; set '
        f'--config.model.stride_layout={layout} to run them as trained.')


def step1_variables(stage: stages.Stage, config: ml_collections.ConfigDict
                    ) -> tuple[dict[str, dict[str, PyTree]], tuple[str, ...], str]:
  """Step-1 initial weights: another run's step 1, ImageNet, or none (scratch).

  Returns `(loaded streams, fresh key patterns, description)`.
  """
  if config.init.from_workdir:
    src = config.init.from_workdir
    loaded = {}
    for s in stage.streams:
      directory = _find_stage(src, (f'step1_{s}', 'step1'), None)
      loaded[s] = checkpointing.stream_variables(checkpointing.read_best_state(directory), s)
    return loaded, (r'(.*/)?logits/.*',), f'step 1 of {src}'
  if config.init.imagenet:
    check_imagenet_layout(config)
    variables, _ = pretrained.load(config.init.imagenet)
    return ({s: variables for s in stage.streams}, pretrained.FRESH_PATTERNS,
            f'ImageNet weights {config.init.imagenet}')
  return {}, (), 'scratch'


def apply_imagenet_normalization(config: ml_collections.ConfigDict) -> None:
  """Both modalities get the input normalisation the ImageNet weights expect.

  Every stage of a run descends from the step-1 weights, so every stage (and
  its evaluation) uses the normalisation recorded with the converted
  checkpoint; the stage's `config.json` keeps the values used.
  """
  if not config.init.imagenet:
    return
  with open(os.path.join(config.init.imagenet, pretrained.METADATA_FILE)) as f:
    meta = json.load(f)
  for m in ('rgb', 'depth'):
    config.input[f'{m}_mean'] = tuple(meta['mean'])
    config.input[f'{m}_std'] = tuple(meta['std'])


def initial_variables(config: ml_collections.ConfigDict, stage: stages.Stage, workdir: str,
                      init_variables: Mapping[str, PyTree],
                      config_path: str | None = None) -> tuple[dict[str, PyTree], str]:
  """The stage's starting variables: fresh init overwritten by loaded streams."""
  if stage.init:
    loaded, fresh, what = previous_stage_variables(stage, workdir, config_path), (), 'previous stages'
  else:
    loaded, fresh, what = step1_variables(stage, config)
  variables = jax.tree.map(np.asarray, dict(init_variables))
  for stream, source in loaded.items():
    target = {c: variables[c][stream] for c in ('params', 'batch_stats')}
    merged = param_merge.merge(target, source, fresh=fresh, what=f'{what} ({stream})')
    for c in ('params', 'batch_stats'):
      variables[c][stream] = merged[c]
  return variables, what


def create_train_state(variables: Mapping[str, PyTree], stage: stages.Stage,
                       tx) -> steps.TrainState:
  params = {s: variables['params'][s] for s in stage.trainable}
  frozen = ({c: {s: variables[c][s] for s in stage.frozen} for c in ('params', 'batch_stats')}
            if stage.frozen else {})
  return steps.TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats={s: variables['batch_stats'][s] for s in stage.trainable},
      opt_state=tx.init(params), frozen=frozen)


def init_model_variables(model: steps.StageModel,
                         config: ml_collections.ConfigDict) -> dict[str, PyTree]:
  """Freshly initialised variables of every stream of the stage (shapes need one clip)."""
  dummy = {m: jnp.zeros(input_shape(config, 1), model.dtype) for m in model.stage.inputs}
  return jax.jit(model.init)(jax.random.key(config.seed), dummy)


def make_state_fn(stage: stages.Stage, tx, mesh):
  """Variables -> `TrainState` replicated over the mesh, jitted."""
  return jax.jit(functools.partial(create_train_state, stage=stage, tx=tx),
                 out_shardings=sharding.replicated(mesh))


def make_train_fn(model: steps.StageModel, config: ml_collections.ConfigDict, tx,
                  schedule, mesh):
  """The jitted data-parallel train step; the trainer and `benchmark` run this one.

  The state is donated (updated in place, no second copy of params and optimizer
  state), replicated over the mesh; the batch is sharded over its first axis.
  """
  replicated = sharding.replicated(mesh)
  return jax.jit(
      functools.partial(steps.train_step, model=model, config=config, tx=tx, schedule=schedule),
      in_shardings=(replicated, sharding.data_sharded(mesh)),
      out_shardings=(replicated, replicated), donate_argnums=(0,))


# MARK: evaluation


def make_eval_fn(model: steps.StageModel, config: ml_collections.ConfigDict, mesh):
  return jax.jit(functools.partial(steps.eval_step, model=model, config=config),
                 out_shardings=sharding.replicated(mesh))


def evaluate(state: steps.TrainState, source: pipeline.Source, *, eval_fn, mesh,
             config: ml_collections.ConfigDict, modalities: Sequence[str]) -> dict[str, Any]:
  """Exact accuracy of every stream and of the fused model on a whole split.

  `modalities`: the clips the stage reads (`Stage.inputs`), the only ones decoded.
  """
  batches = pipeline.eval_iterator(
      source.records, global_batch_size=config.eval_batch_size,
      num_frames=config.input.num_frames, image_size=(config.input.image_size,) * 2,
      worker_count=config.input.worker_count, modalities=modalities)
  key = jax.random.key(config.eval.noise_seed)
  outputs = []
  truncated = False
  for i, batch in enumerate(batches):
    if 0 < config.max_eval_batches <= i:
      truncated = True
      break
    outputs.append(sharding.fetch(eval_fn(state, sharding.to_global(batch, mesh),
                                          jax.random.fold_in(key, i))))
  stacked = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
  mask = stacked.pop('mask').astype(bool)
  kept = {k: v[mask] for k, v in stacked.items()}
  labels = kept['label']
  accuracy = {k.split('/', 1)[1]: float(np.mean(v == labels))
              for k, v in kept.items() if k.startswith('pred/')}
  return {'accuracy': accuracy, 'num_examples': int(mask.sum()),
          'complete': not truncated and int(mask.sum()) == batches.num_examples,
          'predictions': kept}


def selection_metric(stage: stages.Stage, result: Mapping[str, Any]) -> float:
  """The accuracy that picks the best checkpoint: the stage's reported prediction."""
  name = 'fused' if len(stage.fused) > 1 else stage.fused[0]
  return result['accuracy'][name]


# MARK: the stage


class _Preemption:
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)

  def agreed(self) -> bool:
    """All hosts stop at the same step if any of them was asked to."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.array([self.requested]))
    return bool(np.any(flags))


class IteratorPosition:
  """The data position the *step* has consumed, checkpointable by Grain's handler.

  Batches are prefetched onto devices ahead of the step, so the Grain iterator
  itself is ahead of what training has seen; saving it would skip batches on
  resume. Each batch travels with the iterator state right after it, and this
  object saves the state of the last batch the step consumed.
  """

  def __init__(self, iterator):
    self._iterator = iterator
    self.state = iterator.get_state()

  def get_state(self) -> bytes:
    return json.dumps(self.state).encode()

  def set_state(self, state: bytes) -> None:
    self.state = json.loads(state)
    self._iterator.set_state(self.state)

  def start_prefetch(self) -> None:
    """Grain's restore hook; the wrapped iterator starts on its first `next`."""


def _with_positions(iterator) -> Iterator[tuple[dict[str, np.ndarray], Any]]:
  while True:
    batch = next(iterator)
    yield batch, iterator.get_state()


def _prefetched(iterator, mesh, size: int):
  """(global batch, iterator state after it), `size` batches ahead on devices."""
  pairs = _with_positions(iterator)
  batches = ((sharding.to_global(b, mesh), s) for b, s in pairs)
  queue = [next(batches) for _ in range(max(size, 1))]
  while True:
    yield queue.pop(0)
    queue.append(next(batches))


def write_json(path: str, obj: Any) -> None:
  if jax.process_index() == 0:
    with open(path, 'w') as f:
      json.dump(obj, f, indent=2)


def run_stage(config: ml_collections.ConfigDict, workdir: str, stage_name: str, *,
              config_path: str | None = None,
              clock: metrics_lib.RunClock | None = None) -> dict[str, Any]:
  """Trains and evaluates one stage; returns (and writes) its results.

  `clock`: the run's stages so far, for the run's time left (one stage if None).
  """
  config_lib.check(config)
  check_imagenet_layout(config)
  apply_imagenet_normalization(config)
  stage = stages.for_config(stage_name, config)
  out_dir = stage_dir(workdir, stage_name)
  os.makedirs(out_dir, exist_ok=True)
  t_start = time.time()

  # MARK: mesh and data
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  sources = load_sources(config)
  train_src = sources['train']
  if train_src is None:
    raise ValueError(f'{config.dataset}/{config.protocol} has no training split.')
  num_classes = len(train_src.class_names)
  steps_per_epoch = len(train_src.records) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'{len(train_src.records)} training clips cannot fill one batch of '
                     f'{config.batch_size}.')
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else config.num_epochs * steps_per_epoch)
  write_json(os.path.join(out_dir, 'config.json'), config.to_dict())
  write_json(os.path.join(out_dir, 'dataset.json'), {
      'dataset': config.dataset, 'protocol': config.protocol,
      'builder_config': config.builder_config, 'class_names': list(train_src.class_names),
      'split_sizes': {k: (len(v.records) if v else 0) for k, v in sources.items()}})

  # MARK: model, optimizer, initial weights
  model = steps.StageModel(stage, config.model, num_classes)
  tx, schedule = optim.make_optimizer(config.optimizer, total_steps)
  init_vars = init_model_variables(model, config)
  replicated = sharding.replicated(mesh)
  make_state = make_state_fn(stage, tx, mesh)
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(make_state, init_vars))

  train_iter = pipeline.train_iterator(
      train_src.records, global_batch_size=config.batch_size,
      num_frames=config.input.num_frames, image_size=(config.input.image_size,) * 2,
      seed=config.seed, uniform_prob=config.input.uniform_prob, flip=config.input.flip,
      worker_count=config.input.worker_count, modalities=stage.inputs)
  position = IteratorPosition(train_iter)
  ckpt = checkpointing.StageCheckpoints(out_dir, keep=config.keep_checkpoints)
  progress = metrics_lib.Progress(total_steps, stage_name, clips_per_step=config.batch_size,
                                  clock=clock, started=t_start)

  # Resume precedence: this stage's own latest checkpoint > previous stages /
  # from_workdir / ImageNet > scratch. Loading transforms never run on resume.
  best_path = os.path.join(out_dir, 'best.json')
  if ckpt.latest.latest_step() is not None:
    state = ckpt.restore_latest(abstract_state, position)
    best = json.load(open(best_path)) if os.path.exists(best_path) else None
    progress.message(f'resumed at step {int(state.step)}')
  else:
    variables, origin = initial_variables(config, stage, workdir, init_vars, config_path)
    state = make_state(variables)
    best = None
    progress.message(f'initialised from {origin}')
  del init_vars

  # MARK: steps
  train_fn = make_train_fn(model, config, tx, schedule, mesh)
  eval_fn = make_eval_fn(model, config, mesh)
  writer = metrics_lib.MetricWriter(out_dir)
  preempt = _Preemption()

  # MARK: loop
  start_step = int(state.step)
  batches = _prefetched(train_iter, mesh, config.input.prefetch)
  pending: list[dict[str, jax.Array]] = []
  last_log_step, last_log_time = start_step, time.time()
  stopped_early = False
  try:
    for step in range(start_step + 1, total_steps + 1):
      batch, position.state = next(batches)
      state, step_metrics = train_fn(state, batch)
      pending.append(step_metrics)
      epoch_end = step % steps_per_epoch == 0 and (step // steps_per_epoch) % config.eval_every_epochs == 0
      save_now = step % config.checkpoint_every_steps == 0 or step == total_steps
      preempted = preempt.agreed() if (step % config.log_every_steps == 0 or save_now
                                       or jax.process_count() == 1) else False
      if step % config.log_every_steps == 0 or epoch_end or save_now or preempted:
        history = jax.device_get(pending)
        bad = metrics_lib.first_non_finite(history, step - len(history) + 1)
        if bad is not None:
          last_good = ckpt.latest.latest_step()
          raise FloatingPointError(
              f'{stage_name}: non-finite loss at step {bad}; stopped. Last good checkpoint: '
              f'step {last_good} in {ckpt.latest.directory}. Lower optimizer.learning_rate '
              'or set optimizer.grad_clip_norm.')
        now = time.time()
        scalars = metrics_lib.mean_metrics(history)
        scalars['clips_per_s'] = (step - last_log_step) * config.batch_size / max(now - last_log_time, 1e-9)
        writer.write(step, 'train', scalars)
        progress.update(step, scalars, best['metric'] if best else None)
        pending, last_log_step, last_log_time = [], step, now
      # The last step validates too, so a run shorter than an epoch (num_train_steps)
      # still has a best-on-validation state for the test evaluation and later stages.
      if (epoch_end or step == total_steps) and sources['validation'] is not None:
        result = evaluate(state, sources['validation'], eval_fn=eval_fn, mesh=mesh, config=config,
                          modalities=stage.inputs)
        metric = selection_metric(stage, result)
        writer.write(step, 'validation', {f'accuracy/{k}': v for k, v in result['accuracy'].items()})
        progress.message(f'epoch {step // steps_per_epoch}: validation accuracy {metric:.4f}')
        if best is None or metric > best['metric']:
          best = {'step': step, 'metric': metric}
          ckpt.save_best(step, state)
          write_json(best_path, best)
      if save_now or preempted:
        ckpt.save_latest(step, state, position, force=True)
      if preempted:
        stopped_early = True
        progress.message(f'SIGTERM: saved step {step}; rerun the same command to resume.')
        break
  finally:
    preempt.restore()
    ckpt.wait()

  if stopped_early:
    ckpt.close()
    writer.close()
    return {'stage': stage_name, 'preempted_at_step': int(state.step)}

  # MARK: test with the best-on-validation state (the final state without validation)
  if sources['validation'] is None and (best is None or best['step'] != int(state.step)):
    ckpt.save_best(int(state.step), state)
    best = {'step': int(state.step), 'metric': None}
    write_json(best_path, best)
  ckpt.wait()
  best_state = ckpt.restore_best(abstract_state)
  results = {
      'stage': stage_name, 'dataset': config.dataset, 'protocol': config.protocol,
      'privileged': config.privileged,
      'loss': config.loss.kind if stage.student else stage.loss,
      'connections': bool(config.model.connections and any(m.connections for m in stage.models)),
      'train_inputs': list(stage.inputs), 'fused_streams': list(stage.fused),
      'best_step': best['step'], 'validation_accuracy': best['metric'],
      'total_steps': total_steps, 'train_seconds': time.time() - t_start}
  split = config.eval.split
  if sources[split] is not None:
    result = evaluate(best_state, sources[split], eval_fn=eval_fn, mesh=mesh, config=config,
                      modalities=stage.inputs)
    results[split] = {k: result[k] for k in ('accuracy', 'num_examples', 'complete')}
    writer.write(best['step'], split, {f'accuracy/{k}': v for k, v in result['accuracy'].items()})
    if jax.process_index() == 0:
      np.savez(os.path.join(out_dir, f'predictions_{split}.npz'), **result['predictions'])
    progress.message(f'{split} accuracy: ' + ', '.join(
        f'{k} {v:.4f}' for k, v in result['accuracy'].items()))
  write_json(os.path.join(out_dir, 'results.json'), results)
  ckpt.close()
  writer.close()
  progress.finish(out_dir, os.path.join(out_dir, 'results.json'))
  return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       config_path: str | None = None,
                       clock: metrics_lib.RunClock | None = None) -> dict[str, dict[str, Any]]:
  """Runs the config's stage (or, for `all`, steps 1 to 4 in order).

  `clock`: the run these stages belong to (by default, just these stages).
  """
  results = {}
  names = stages.expand(config.stage)
  clock = clock or metrics_lib.RunClock(len(names))
  for stage_name in names:
    results[stage_name] = run_stage(config, workdir, stage_name, config_path=config_path,
                                    clock=clock)
    if 'preempted_at_step' in results[stage_name]:
      break
  return results
