"""The one base config: every field any stage or protocol reads is declared here.

Protocol configs (`configs/*.py`) start from `base_config()`, set their dataset
fields and call `finalize(config, stage)`; command-line `--config.x=y` overrides
then apply to a locked config, so a misspelled key is an error, not a silent
new field. Nothing else in the library has hidden numeric defaults: the trainer
reads every number from here.

Defaults follow the authors' implementation (`shared/reference-notes.md`);
where we differ, the field's comment says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections

from modistill_jax import losses
from modistill_jax import modalities
from modistill_jax import profiling
from modistill_jax import stages
from modistill_jax.data import preprocess
from modistill_jax.models import resnet

# VGG/ImageNet channel means in 0..255, RGB order: what the TF-slim resnet_v1_50
# weights expect (mean subtraction only). The reference's only published depth
# writer (UWA3DII) subtracts no mean from depth (`input.depth_subtract_mean`).
VGG_MEAN = (123.68, 116.78, 103.94)
UNIT_STD = (1.0, 1.0, 1.0)


def base_config() -> ml_collections.ConfigDict:
  """All fields with their defaults (the NTU cross-subject reference setting)."""
  c = ml_collections.ConfigDict()
  c.stage = 'step1'  # see modistill_jax/stages.py: STAGES
  # The modalities the dataset provides to training (its builder config stores them): the
  # deployed and privileged ones must be among them, and the data must hold them all.
  c.modalities = 'rgb,depth'  # comma-separated
  # What the final model sees. '' = rgb, or depth where rgb is privileged (Table 4's inversion,
  # which `--config.privileged=rgb` alone asks for, as it always did).
  c.deployed = ''
  # The training-only modalities: one ('depth'), or several comma-separated ('depth,ir').
  c.privileged = 'depth'

  c.seed = 0

  # Data.
  c.dataset = 'ntu_rgbd'  # TFDS name (builders in data_builders/)
  c.builder_config = ''  # TFDS builder config, e.g. 'res224' | 'res112' ('' = none)
  c.protocol = 'cross_subject'  # modistill_jax/data/protocols.py
  c.data_dir = ''  # '' = TFDS default (~/tensorflow_datasets or $TFDS_DATA_DIR)
  c.build_if_missing = False  # build the dataset on first use (only for download-free builders)
  # The module whose import registers `dataset` with TFDS, imported by name before a build on
  # first use, so the library never imports the builders: e.g. 'data_builders.synthetic_rgbd'.
  c.builder_module = ''

  # Schedule. batch_size is the GLOBAL number of clips per step, over all hosts and devices.
  c.batch_size = 5
  c.eval_batch_size = 5
  c.num_epochs = 40
  c.num_train_steps = -1  # > 0 overrides num_epochs (smoke runs and tests)
  c.eval_every_epochs = 1
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 2  # latest checkpoints kept (>= 2: an unreadable newest one falls back)
  # Best-on-validation ties: 'later' keeps the later epoch (the reference's `>=`), 'earlier'
  # the first.
  c.selection_ties = 'later'
  c.max_eval_batches = -1  # > 0 truncates evaluation (smoke runs only; results say so)
  # FIRST,LAST: a jax.profiler trace of those training steps into the stage folder, for
  # TensorBoard's profile tab (modistill_jax/profiling.py); () traces nothing.
  c.profile_steps = ()

  c.input = ml_collections.ConfigDict()
  c.input.num_frames = 5
  c.input.image_size = 224
  c.input.uniform_prob = 0.5  # training: P(uniformly spaced frames), else random frames in order
  c.input.flip = True  # one horizontal flip decision per clip, shared by both modalities
  c.input.worker_count = 8  # grain decoding processes per host (0 = in the main process)
  c.input.prefetch = 2  # batches placed on devices ahead of the step
  # True: RGB JPEGs stored at >= 2x or 4x image_size (a res224 build read at 112) are decoded
  # at 1/2 or 1/4 size by libjpeg's DCT scaling, then resized: several times cheaper, and other
  # pixels than the full decode resized (docs/performance.md), so off by default.
  c.input.reduced_decoding = False
  c.input.rgb_mean = VGG_MEAN
  c.input.rgb_std = UNIT_STD
  c.input.depth_mean = VGG_MEAN
  c.input.depth_std = UNIT_STD
  # Depth as the network reads it: 'jet' (the records' jet colours, as the paper
  # says) | 'gray' (the 8-bit gray depth they were coloured from, recovered on the
  # device by inverting the jet table; what the reference's UWA3DII writer stored).
  c.input.depth_encoding = 'jet'
  # False: depth keeps depth_std but no mean is subtracted (the UWA3DII writer's
  # way). Not the same as depth_mean=(0, 0, 0), which ImageNet init overwrites.
  c.input.depth_subtract_mean = True
  c.input.ir_mean = VGG_MEAN
  c.input.ir_std = UNIT_STD
  # Infrared as the network reads it: 'gray' (the intensity on 3 channels) | 'jet'.
  c.input.ir_encoding = 'gray'
  c.input.skeleton_mean = VGG_MEAN  # the joint and limb heat-maps (docs/modalities.md)
  c.input.skeleton_std = UNIT_STD

  c.model = ml_collections.ConfigDict()
  c.model.units_per_block = (3, 4, 6, 3)
  c.model.width = 64
  c.model.stride_layout = 'slim'
  c.model.dtype = 'float32'  # compute dtype: 'float32' | 'bfloat16' (params stay float32)
  c.model.connections = True  # multiplicative cross-stream connections (steps 2-4)
  # Stages among step2, step3, step4 built without connections even though
  # `connections` is on. The paper connects all three; the reference's runnable
  # step 4 is unconnected (its connected graph fails to build), and its README's
  # step-3 command omits --interaction, so its step 3 ran unconnected too.
  c.model.unconnected_stages = ()
  # Temporal conv of unit 1: 'linear' (a conv, no BN or ReLU; the paper's
  # description) | 'conv_bn_relu' (the reference code's slim op: conv + BN + ReLU,
  # adding a `temporal_bn` to every unit 1).
  c.model.temporal_form = 'linear'
  # Its kernel init: 'identity' (the paper's [0, 1, 0]) | 'reference_code' (what the
  # published initialiser produced: every channel copies channel 1 of the previous
  # frame; see models/resnet.py).
  c.model.temporal_init = 'identity'
  c.model.bn_momentum = 0.997  # BatchNorm decay of the running statistics (reference)
  c.model.bn_epsilon = 1e-5
  # Recompute each bottleneck unit's activations in the backward pass instead of
  # storing them (`nn.remat`): less activation memory for about one extra forward
  # per step (+24% FLOPs in step 3). Not in the reference; checkpoints are unaffected.
  c.model.remat = False

  c.loss = ml_collections.ConfigDict()
  c.loss.kind = 'eq5'  # step 3 / hoffman: 'xent' | 'eq1' | 'eq3' | 'eq5'
  c.loss.temperature = 10.0  # T, eq. (4)
  c.loss.lam = 0.5  # lambda, eq. (3)
  c.loss.alpha = 0.5  # alpha, eq. (5)
  c.loss.hall_endpoint = 'block4'  # L_hall feature map (any Stream endpoint name)
  c.loss.hall_weight = 0.01
  # eq. (1)'s reduction. 'per_clip' (use this): summed over each clip's elements,
  # averaged over clips, times hall_reference_clips, so the balance of eq. (5)
  # is the reference's at any batch size. 'sum' (the reference's code): summed
  # over the whole batch, equal to 'per_clip' at 5 clips but heavier in
  # proportion to the batch (x51 at 256 clips). 'mean': over every element.
  c.loss.hall_reduction = 'per_clip'
  c.loss.hall_reference_clips = 5  # the reference's clips per batch

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = 'constant'  # 'constant' | 'cosine' | 'warmup_cosine'
  c.optimizer.warmup_steps = 0
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0  # decoupled (AdamW); the reference had none in effect
  c.optimizer.grad_clip_norm = 0.0  # > 0: clip the global gradient norm

  c.init = ml_collections.ConfigDict()
  c.init.imagenet = ''  # converted ImageNet checkpoint dir (python -m modistill_jax.pretrained)
  c.init.from_workdir = ''  # step 1 starts from this run's step-1 streams (e.g. NTU for NW-UCLA)

  c.eval = ml_collections.ConfigDict()
  c.eval.split = 'test'
  # sigma of n ~ N(1, sigma) multiplying the privileged modalities' images (paper 4.3: depth).
  c.eval.depth_noise_std = 0.0
  c.eval.void_depth = False  # the privileged modalities' images replaced by zeros
  c.eval.noise_variances = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # Table 2 columns (sigma^2)
  c.eval.noise_seed = 0
  # Evaluate step 2's privileged (depth) stream with BatchNorm batch statistics
  # (the evaluation batch's own, padding excluded) instead of the running ones:
  # what the reference's step-2 evaluation did, so its Table 2 numbers depend on
  # it (per-batch normalisation absorbs part of the multiplicative noise), and on
  # eval_batch_size (the reference's was 5).
  c.eval.step2_privileged_batch_stats = False
  return c


# `configs/<protocol>.py:<stage>,tiny` (big_vision's `runlocal`): any config
# shrunk to run in seconds on a CPU, for the tests and for trying a command out:
# one step, one evaluation batch, and the network's topology (4 blocks, temporal
# convs, connections) at width 4. Its accuracies mean nothing. Where the data
# is stays the config's.
TINY = {
    'model.units_per_block': (2, 2, 2, 2),
    'model.width': 4,
    'input.image_size': 16,
    'input.num_frames': 3,
    'input.worker_count': 0,
    'input.prefetch': 1,
    'batch_size': 4,
    'eval_batch_size': 4,
    'num_train_steps': 1,
    'max_eval_batches': 1,
    'log_every_steps': 1,
    'eval.noise_variances': (0.1,),
}
CONFIG_OPTIONS = ('tiny',)


def parse_config_arg(arg: str) -> tuple[str, tuple[str, ...]]:
  """`'step1,tiny'` -> `('step1', ('tiny',))`: a config file's `:` argument."""
  stage, *options = arg.split(',')
  unknown = [o for o in options if o not in CONFIG_OPTIONS]
  if unknown:
    raise ValueError(
        f'Unknown config option(s) {unknown} in {arg!r}; options are '
        f"{CONFIG_OPTIONS}, e.g. 'step1,tiny'."
    )
  return stage, tuple(options)


def is_tiny(arg: str) -> bool:
  return 'tiny' in parse_config_arg(arg)[1]


def override(
    config: ml_collections.ConfigDict, values: Mapping[str, Any]
) -> ml_collections.ConfigDict:
  """Sets `{'dotted.key': value}` in place; a key the config lacks is an error."""
  for key, value in values.items():
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      if parent not in node:
        raise KeyError(f'No config field {key!r}.')
      node = node[parent]
    if leaf not in node:
      raise KeyError(f'No config field {key!r}.')
    node[leaf] = value
  return config


def finalize(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """Sets the stage (and `tiny`'s overrides) and checks the config; protocol configs end with this.

  Args:
    arg: the config file's `:` argument, a stage name optionally followed by
      `,tiny` (see `TINY`).
  """
  stage, _ = parse_config_arg(arg)
  stages.check_stage_name(stage)
  config.stage = stage
  if is_tiny(arg):
    override(config, TINY)
  check(config)
  return config


def with_defaults(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A stage's saved `config.json`, with the fields it predates at their defaults.

  A run keeps the config it trained with; fields added since then (the
  fidelity switches, for one) take the base config's defaults, which are the
  behaviour such a run had, so its checkpoints rebuild the same model.
  """
  config = ml_collections.ConfigDict(dict(saved))
  _fill_missing(config, base_config())
  return config


def _fill_missing(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> None:
  for key, value in defaults.items():
    if key not in config:
      config[key] = value
    elif isinstance(value, ml_collections.ConfigDict):
      _fill_missing(config[key], value)


def reference_code_switches(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Sets every switch to what the authors' published code ran (configs/reference.py).

  eq. (1) summed over the batch, conv + BN + ReLU temporal convs with the
  code's initialiser, steps 3 and 4 unconnected, step 2 evaluated with the depth
  stream's batch statistics, gray depth without a mean. What stays ours (global
  BatchNorm statistics, full batches only, ...) is in docs/reference-differences.md.
  """
  config.loss.hall_reduction = 'sum'
  config.model.temporal_form = 'conv_bn_relu'
  config.model.temporal_init = 'reference_code'
  config.model.unconnected_stages = ('step3', 'step4')
  config.eval.step2_privileged_batch_stats = True
  config.input.depth_encoding = 'gray'
  config.input.depth_subtract_mean = False
  return config


def _check_choice(name: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f'config.{name} must be one of {tuple(choices)}, got {value!r}.')


def check_modalities(config: ml_collections.ConfigDict) -> None:
  """`config.modalities` known and distinct; the deployed and privileged ones (`stages.roles`)
  among them, and the stage's streams too (`step1_ir` needs infrared)."""
  provided = stages.names_tuple(config.modalities)
  for name in provided:
    _check_choice('modalities entry', name, modalities.NAMES)
  if len(set(provided)) != len(provided):
    raise ValueError(f'config.modalities names a modality twice: {config.modalities!r}.')
  deployed, privileged = stages.roles(config.privileged, config.deployed)
  used = {deployed, *privileged}
  if config.stage in stages.STEP1_SINGLE:
    used.add(config.stage.removeprefix('step1_'))
  missing = [m for m in modalities.NAMES if m in used and m not in provided]
  if missing:
    raise ValueError(
        f'config.modalities {config.modalities!r} lacks {tuple(missing)}, which the '
        f'stage {config.stage!r} with config.deployed={deployed!r} and '
        f'config.privileged={privileged} reads: use a dataset (config.builder_config) that '
        f"stores them and add them: --config.modalities={','.join((*provided, *missing))}"
    )


def check(config: ml_collections.ConfigDict) -> None:
  """Fails early, with the fix, on values the trainer could not use."""
  stages.check_stage_name(config.stage)
  check_modalities(config)
  if config.loss.kind not in stages.LOSS_KINDS:
    raise ValueError(
        f'config.loss.kind must be one of {stages.LOSS_KINDS}, got {config.loss.kind!r}.'
    )
  if config.model.dtype not in ('float32', 'bfloat16'):
    raise ValueError(
        f"config.model.dtype must be 'float32' or 'bfloat16', got {config.model.dtype!r}."
    )
  if config.selection_ties not in ('later', 'earlier'):
    raise ValueError(
        f"config.selection_ties must be 'later' or 'earlier', got " f'{config.selection_ties!r}.'
    )
  if config.keep_checkpoints < 2:
    raise ValueError(
        'config.keep_checkpoints must be at least 2 (an unreadable newest '
        f'checkpoint falls back to the one before), got {config.keep_checkpoints}.'
    )
  if config.batch_size <= 0 or config.eval_batch_size <= 0:
    raise ValueError('config.batch_size and config.eval_batch_size must be positive.')
  _check_choice('loss.hall_reduction', config.loss.hall_reduction, losses.HALL_REDUCTIONS)
  if config.loss.hall_reference_clips <= 0:
    raise ValueError(
        'config.loss.hall_reference_clips must be positive, '
        f'got {config.loss.hall_reference_clips!r}.'
    )
  _check_choice('model.temporal_form', config.model.temporal_form, resnet.TEMPORAL_FORMS)
  _check_choice('model.temporal_init', config.model.temporal_init, resnet.TEMPORAL_INITS)
  for stage in config.model.unconnected_stages:
    _check_choice('model.unconnected_stages entry', stage, stages.CONNECTABLE_STAGES)
  _check_choice('input.depth_encoding', config.input.depth_encoding, preprocess.DEPTH_ENCODINGS)
  _check_choice('input.ir_encoding', config.input.ir_encoding, preprocess.IR_ENCODINGS)
  profiling.check_steps(config.profile_steps)


# MARK: comparing a run's saved config with another


# Keys a resumed stage may change: they decide how often things are logged and
# saved and where data is read from, never what is trained.
RESUMABLE_KEYS = (
    'stage',
    'log_every_steps',
    'checkpoint_every_steps',
    'keep_checkpoints',
    'data_dir',
    'build_if_missing',
    'builder_module',
    'input.worker_count',
    'input.prefetch',
    'profile_steps',
)
# Keys an evaluation may set: what is evaluated, and how it is read.
EVALUATION_KEYS = (
    'eval',
    'eval_batch_size',
    'max_eval_batches',
    'data_dir',
    'build_if_missing',
    'builder_module',
    'input.worker_count',
    'input.prefetch',
)
# Keys that only shape training; an evaluation ignores them (the run's values stay).
TRAINING_ONLY_KEYS = (
    'stage',
    'seed',
    'batch_size',
    'num_epochs',
    'num_train_steps',
    'eval_every_epochs',
    'log_every_steps',
    'checkpoint_every_steps',
    'keep_checkpoints',
    'selection_ties',
    'profile_steps',
    'input.uniform_prob',
    'input.flip',
    'loss',
    'optimizer',
    'init',
)


def flatten(config: ml_collections.ConfigDict | dict) -> dict[str, object]:
  """`{'model.width': 64, ...}`; tuples and lists compare as tuples (JSON stores lists)."""
  flat = {}
  items = config.items() if isinstance(config, dict) else config.to_dict().items()
  for key, value in items:
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      flat.update({f'{key}.{k}': v for k, v in flatten(value).items()})
    else:
      flat[key] = tuple(value) if isinstance(value, (list, tuple)) else value
  return flat


def matches(key: str, prefixes: tuple[str, ...]) -> bool:
  """Whether dotted `key` is one of `prefixes` or lies under one (`eval` covers `eval.split`)."""
  return any(key == p or key.startswith(p + '.') for p in prefixes)


def differences(
    saved: ml_collections.ConfigDict | dict,
    given: ml_collections.ConfigDict | dict,
    ignore: tuple[str, ...] = (),
) -> dict[str, tuple[object, object]]:
  """`{key: (saved value, given value)}` for every key that differs, except `ignore`d ones.

  A key only one side has counts as a difference (with `<absent>` on the other).
  """
  a, b = flatten(saved), flatten(given)
  diff = {}
  for key in sorted(set(a) | set(b)):
    if matches(key, ignore):
      continue
    va, vb = a.get(key, '<absent>'), b.get(key, '<absent>')
    if va != vb:
      diff[key] = (va, vb)
  return diff


def format_differences(diff: dict[str, tuple[object, object]]) -> str:
  return '\n'.join(f'  {k}: run has {a!r}, given {b!r}' for k, (a, b) in diff.items())


def as_flags(values: dict[str, object]) -> str:
  """Values as `--config.key=value` flags (tuples comma-separated)."""

  def text(v):
    return ','.join(map(str, v)) if isinstance(v, tuple) else str(v)

  return ' '.join(f'--config.{k}={text(v)}' for k, v in values.items())
