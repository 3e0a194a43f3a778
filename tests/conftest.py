"""Shared fixtures of the trainer tests: tiny data, tiny configs, fast compiles.

* `synthetic_data_dir`: a built TFDS dataset named `synthetic_rgbd` (the
  demo config's dataset) of a few 16x16 clips in 3 classes, written by TFDS's
  ad-hoc builder, so it never collides with the real builder in
  `data_builders/`. The trainer reads it through the
  real `pipeline.load_source` path; subprocess tests point `--config.data_dir`
  at it.
* `fake_sources`: replaces `pipeline.load_source` with in-memory splits of
  records made by `records.make_example`, with each real dataset's number of
  classes, for the configs whose data cannot be built here.
* `tiny_config`: any real `config:stage` with the `,tiny` switch
  (`config_lib.TINY`: tiny stream, 16x16 frames, one step) on these datasets.
* `fast_compile`: XLA without most optimisations while a test module runs
  (compiling dominates these tests; numbers stay float32-correct).
* `tiny_trained_workdir`: the tiny demo run, every stage trained once per
  pytest run whichever worker asks first (`tiny_run`, `once_per_run`);
  `compilation_cache_dir` and `cli_env`: the XLA cache and the environment of
  command-line subprocesses.

`pytest_collection_modifyitems` keeps the tests that share an expensive
module fixture on one xdist worker, marks the tests of the shared run, the GCS
server and the TFDS builder test cases `slow`, and runs the slow tests first;
docs/testing.md says what each `make` target runs and how to mark a new test.
"""

from __future__ import annotations

from collections.abc import Callable
import fcntl
import functools
import importlib
import json
import os
import resource
import time

# Four fake CPU devices unless the caller chose otherwise (the Makefile does);
# this must happen before JAX initialises its backends.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# CPU compile time dominates the trainer tests (a train step of the tiny
# two-stream net compiles in ~15 s with XLA's defaults, ~7 s with these): the
# legacy CPU emitters and no expensive LLVM passes. Code generation options only;
# results stay float32-exact to within rounding.
FAST_COMPILE_XLA_FLAGS = (
    '--xla_cpu_use_fusion_emitters=false',
    '--xla_llvm_disable_expensive_passes=true',
)
for _flag in FAST_COMPILE_XLA_FLAGS:
  if _flag.split('=')[0] not in os.environ['XLA_FLAGS']:
    os.environ['XLA_FLAGS'] += ' ' + _flag

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from etils import epath  # pylint: disable=g-import-not-at-top,wrong-import-position
import flax.linen as nn  # pylint: disable=g-import-not-at-top,wrong-import-position
import flax.traverse_util  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import ml_collections  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position
import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,wrong-import-position

from modistill_jax import config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from modistill_jax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from modistill_jax.data import protocols  # pylint: disable=g-import-not-at-top,wrong-import-position
from modistill_jax.data import records  # pylint: disable=g-import-not-at-top,wrong-import-position
from modistill_jax.models import resnet  # pylint: disable=g-import-not-at-top,wrong-import-position

import xdist_groups  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

# The local GCS server's fixtures, for every test module that asks for them by name.
from gcs_emulator import gcs_bucket, gcs_emulator  # noqa: E402, F401

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAME_SIZE = 16  # stored frame size (`config_lib.TINY` trains at 16x16 too)
STORED_FRAMES = 4  # frames per stored clip
NUM_CLASSES = {'ntu_rgbd': 60, 'nw_ucla': 10, 'uwa3dii': 30, 'synthetic_rgbd': 3}
# Clips per split of the tiny datasets; 8 training clips = 2 steps per epoch at batch 4.
SPLIT_SIZES = {'train': 8, 'validation': 4, 'test': 6}


def make_clip(index: int, num_classes: int) -> dict:
  """A record whose class shows in one colour channel, so a model can learn it."""
  rng = np.random.default_rng(index)
  label = index % num_classes
  shape = (STORED_FRAMES, FRAME_SIZE, FRAME_SIZE, 3)
  rgb = rng.integers(0, 120, shape, dtype=np.uint8)
  depth = rng.integers(0, 120, shape[:-1], dtype=np.uint8)  # codes: jet colours on the device
  rgb[..., label % 3] += 120
  depth += np.uint8(60 * ((label + 1) % 3))
  return records.make_example(
      rgb=rgb,
      depth_code=depth,
      label=label,
      sample_id=f'clip{index}',
      rgb_frames_raw=STORED_FRAMES,
      depth_frames_raw=STORED_FRAMES,
  )


@functools.cache
def make_split(split: str, num_classes: int) -> tuple[dict, ...]:
  """The records of a tiny split (cached: the tests only read them)."""
  offset = {'train': 0, 'validation': 1000, 'test': 2000}[split]
  return tuple(make_clip(offset + i, num_classes) for i in range(SPLIT_SIZES[split]))


# Where conftest's tiny datasets are: built without builder configs, never
# built on use. `config_lib.TINY` (the `:<stage>,tiny` switch) does the rest.
TINY_DATA = {'builder_config': '', 'build_if_missing': False}
# `config_lib.TINY`'s stream as `resnet.Stream` / `MultiStream` keyword arguments.
TINY_STREAM = {
    key.removeprefix('model.'): value
    for key, value in config_lib.TINY.items()
    if key.startswith('model.')
}


def tiny_config(name: str, stage: str, **overrides) -> ml_collections.ConfigDict:
  """`configs/<name>.py:<stage>,tiny` on conftest's tiny data, then `overrides`.

  `overrides` maps dotted keys to values (`**{'optimizer.learning_rate': 1.}`)
  and goes through `config_lib.override`, so a misspelled key fails here too.
  """
  config = importlib.import_module(f'configs.{name}').get_config(f'{stage},tiny')
  return config_lib.override(config, {**TINY_DATA, **overrides})


@pytest.fixture(scope='session')
def compilation_cache_dir(tmp_path_factory) -> str:
  """A persistent XLA cache shared by the pytest workers of one run and their subprocesses.

  The same tiny stage compiles identically in several tests (and in CLI
  subprocesses), so all but the first compile are cache reads.
  """
  base = tmp_path_factory.getbasetemp()
  root = base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base
  path = root / 'jax_compilation_cache'
  path.mkdir(exist_ok=True)
  return str(path)


@pytest.fixture(scope='module')
def fast_compile(compilation_cache_dir):
  """While a module's tests run: XLA without most optimisations, and the shared cache."""
  previous = {
      k: jax.config.values[k]
      for k in (
          'jax_disable_most_optimizations',
          'jax_compilation_cache_dir',
          'jax_persistent_cache_min_compile_time_secs',
      )
  }
  jax.config.update('jax_disable_most_optimizations', True)
  jax.config.update('jax_compilation_cache_dir', compilation_cache_dir)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  yield
  for k, v in previous.items():
    jax.config.update(k, v)


def cli_env(compilation_cache_dir: str, *, device_count: int = 4) -> dict[str, str]:
  """Environment of a CLI subprocess: `device_count` CPU devices, fast compiles, shared cache."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = ' '.join(
      (f'--xla_force_host_platform_device_count={device_count}',) + FAST_COMPILE_XLA_FLAGS
  )
  env.update(
      JAX_PLATFORMS='cpu',
      JAX_DISABLE_MOST_OPTIMIZATIONS='1',
      JAX_COMPILATION_CACHE_DIR=compilation_cache_dir,
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0.5',
      PYTHONPATH=REPO_ROOT + os.pathsep + env.get('PYTHONPATH', ''),
  )
  env.pop('PYTEST_XDIST_WORKER', None)
  return env


def parse_config_flag(arg: str, *overrides: str) -> ml_collections.ConfigDict:
  """The config that `--config=<arg>` and `overrides` (`--config.x=y` flags) give, in-process.

  Parsed by a `--config` flag defined as the commands define theirs (`lock_config`),
  reading its `--config.` overrides from this command line rather than `sys.argv`.
  """
  argv = ['prog', f'--config={arg}', *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file(
      'config', None, '', flag_values=flag_values, lock_config=True, sys_argv=argv
  )
  flag_values(argv)
  return flag_values.config


def override_flags(overrides: dict[str, object]) -> list[str]:
  """`tiny_config`'s values (plus `overrides`) as `--config.x=y` command-line flags.

  Flags rather than `:<stage>,tiny`, so that the commands a run prints (which
  repeat the `--config.` flags) are runnable as printed.
  """
  values = {**config_lib.TINY, **TINY_DATA, **overrides}

  def text(v):
    return ','.join(map(str, v)) if isinstance(v, tuple) else str(v)

  return [f'--config.{k}={text(v)}' for k, v in values.items()]


def read_latest_state(stage_dir: str) -> dict:
  """The train state of a stage's latest checkpoint, as nested numpy dicts."""
  directory = epath.Path(stage_dir) / 'checkpoints' / 'latest'
  with ocp.CheckpointManager(
      directory, item_names=('state', 'data'), options=ocp.CheckpointManagerOptions(create=False)
  ) as mgr:
    restored = mgr.restore(
        mgr.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore())
    )
  return jax.device_get(restored['state'])


def assert_trees_close(a, b, *, atol: float = 0.0, rtol: float = 0.0):
  """Same tree structure and leaves within tolerance (exact by default)."""
  paths_a = jax.tree_util.tree_flatten_with_path(a)[0]
  paths_b = jax.tree_util.tree_flatten_with_path(b)[0]
  assert [p for p, _ in paths_a] == [p for p, _ in paths_b]
  for (path, x), (_, y) in zip(paths_a, paths_b):
    np.testing.assert_allclose(
        np.asarray(x), np.asarray(y), atol=atol, rtol=rtol, err_msg=jax.tree_util.keystr(path)
    )


@pytest.fixture(scope='session')
def synthetic_data_dir(tmp_path_factory) -> str:
  """A data_dir holding a tiny built `synthetic_rgbd` (ArrayRecord files, 3 classes).

  Written with TFDS's ad-hoc builder, so nothing is registered under the real
  builder's name.
  """
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  tfds.dataset_builders.store_as_tfds_dataset(
      name='synthetic_rgbd',
      version='0.0.1',
      features=records.clip_features([f'class{i}' for i in range(3)]),
      split_datasets={
          name: rows
          for split in SPLIT_SIZES
          for name, rows in records.split_rows(make_split(split, 3), split, shuffled=False).items()
      },
      data_dir=data_dir,
      file_format=records.FILE_FORMAT,
      disable_shuffling=True,
  )
  return data_dir


def fake_load_source(dataset: str, protocol: str, split: str, **kwargs) -> pipeline.Source | None:
  """`pipeline.load_source` over in-memory records; no split where the protocol has none."""
  del kwargs
  if not protocols.get_protocol(dataset, protocol).atomic_splits(split):
    return None
  num_classes = NUM_CLASSES[dataset]
  return pipeline.Source(
      records=make_split(split, num_classes),
      class_names=tuple(f'class{i}' for i in range(num_classes)),
      name=f'{dataset}/{protocol}/{split}',
  )


@pytest.fixture
def fake_sources(monkeypatch):
  """Every dataset reads as tiny in-memory splits with its real class count."""
  monkeypatch.setattr(pipeline, 'load_source', fake_load_source)


def apply_tapped(model, variables, *args, taps=(), **kwargs):
  """Applies `model`, recording `(args, output)` of the submodules named in `taps`.

  Submodules are named by their '/'-joined path, e.g. 'block2_unit1/conv1'.
  """
  taps, record = set(taps), {}

  def interceptor(next_fun, call_args, call_kwargs, context):
    out = next_fun(*call_args, **call_kwargs)
    path = '/'.join(context.module.path)
    if context.method_name == '__call__' and path in taps:
      record[path] = (call_args, out)
    return out

  with nn.intercept_methods(interceptor):
    result = model.apply(variables, *args, **kwargs)
  missing = taps - set(record)
  assert not missing, f'never called: {sorted(missing)}'
  return result, record


def fill_variables(shapes, seed, temporal_noise=0.0):
  """Generic, non-degenerate variables for a tree of shapes, drawn with NumPy.

  Conv/dense kernels are He-normal, BatchNorm scales/biases and running
  statistics are perturbed away from their trivial values, and temporal kernels
  are the identity on the centre tap plus `temporal_noise` times a Gaussian.
  """
  rng = np.random.default_rng(seed)
  filled = {}
  for path, leaf in flax.traverse_util.flatten_dict(shapes, sep='/').items():
    name, shape = path.rsplit('/', 1)[-1], leaf.shape
    if name == 'kernel' and '/temporal/' in path:
      value = np.asarray(resnet.temporal_identity_init(None, shape))
      value = value + temporal_noise * rng.normal(size=shape) / np.sqrt(3 * shape[-1])
    elif name == 'kernel':
      value = rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
    elif name == 'scale':
      value = 1.0 + 0.1 * rng.normal(size=shape)
    elif name in ('bias', 'mean'):
      value = 0.1 * rng.normal(size=shape)
    elif name == 'var':
      value = rng.uniform(0.5, 1.5, size=shape)
    else:
      raise AssertionError(f'unexpected variable {path}')
    filled[path] = jnp.asarray(value, jnp.float32)
  return flax.traverse_util.unflatten_dict(filled, sep='/')


def run_folder(tmp_path_factory) -> epath.Path:
  """A folder all xdist workers of this pytest run see (the session's own one without xdist)."""
  base = tmp_path_factory.getbasetemp()
  return epath.Path(base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base)


def once_per_run(tmp_path_factory, name: str, make: Callable[[str], None]) -> str:
  """`run_folder(...)/name/made`, written by `make(path)` once per pytest run.

  The first worker to ask makes it while the others wait on a file lock, then
  all read the same folder, so the tests that read it need not share a worker.
  `make` must leave the folder finished when it returns; where it raised, the
  next worker to ask starts again from an empty folder.
  """
  root = run_folder(tmp_path_factory) / name
  root.mkdir(exist_ok=True)
  with open(root / 'lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (root / 'done').exists():
      made = root / 'made'
      if made.exists():  # left by a `make` that failed
        made.rmtree()
      make(str(made))
      (root / 'done').touch()
  return str(root / 'made')


@pytest.fixture(scope='module')
def tiny_trained_workdir(tmp_path_factory, synthetic_data_dir, fast_compile):
  """The tiny demo run on the tiny dataset, made once per pytest run (see `tiny_run`)."""
  del fast_compile  # requested for its order: training compiles under it
  import tiny_run  # pylint: disable=g-import-not-at-top

  return tiny_run.trained_workdir(tmp_path_factory, synthetic_data_dir)


# Module-scoped fixtures that cost little to make again on another worker (a setting), or that
# are made once per pytest run whichever worker asks (`once_per_run`).
SHAREABLE_FIXTURES = frozenset({'fast_compile', 'tiny_trained_workdir', 'one_build_worker'})
# The tests that use these are `slow` (`make test-fast` skips them): the shared tiny run trains
# every stage, and the local GCS server is a subprocess.
SLOW_FIXTURES = frozenset({'tiny_trained_workdir', 'gcs_emulator'})


def builds_a_dataset(item) -> bool:
  """A test of a `tfds.testing.DatasetBuilderTestCase`, which builds its dataset first."""
  cls = getattr(item, 'cls', None)
  return cls is not None and any(c.__name__ == 'DatasetBuilderTestCase' for c in cls.__mro__)


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
  """Marks the `slow` tests and the xdist groups, and puts the slow ones first.

  `make test` runs `--dist loadgroup`: the tests of one `xdist_group` run on
  one worker, one after the other; any other test on whichever worker is free,
  so a file of many independent tests (the config trainings, say) spreads over
  both workers. A module- or class-scoped fixture (a `tfds` test case's
  `setUpClass` is one) outside `SHAREABLE_FIXTURES` would be made once per
  worker that runs one of its tests, so the tests that share one form a group
  (`xdist_groups.mark_groups`).

  Tests that start a subprocess or train several stages themselves carry
  `@pytest.mark.slow` in their files; here the tests that get it from
  `SLOW_FIXTURES` or from building a dataset (`builds_a_dataset`). The slow
  tests and groups go first: xdist hands out the groups largest first, then
  the single tests in this order, so the run ends on short tests and the two
  workers finish close together rather than one waiting on a long test
  started last.

  This hook wraps every other one, xdist's too, so that it can mend xdist's
  group suffixes after it (`xdist_groups.add_missing_suffixes`).
  """
  xdist_groups.mark_groups(items, SHAREABLE_FIXTURES)
  for item in items:
    if SLOW_FIXTURES.intersection(item.fixturenames) or builds_a_dataset(item):
      item.add_marker(pytest.mark.slow)
  xdist_groups.put_first(items, lambda item: item.get_closest_marker('slow') is not None)
  result = yield
  xdist_groups.add_missing_suffixes(config, items)
  return result


# MARK: CPU seconds per test


def pytest_addoption(parser):
  parser.addoption(
      '--cpu-times',
      metavar='PATH',
      help=(
          "Append one JSON line per test to PATH: its node id, its worker's CPU seconds "
          '(all threads) and those of the subprocesses it waited for, and its wall seconds '
          '(set-up, call and tear-down together).'
      ),
  )


def _cpu_seconds() -> tuple[float, float]:
  """`(this process, its waited-for children)` CPU seconds, user and system."""
  own, children = (resource.getrusage(r) for r in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
  return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
  """With `--cpu-times`: what a test costs the machine, whatever ran beside it.

  On the 2-core machine, `--durations` reads wall time, which doubles when the
  other worker computes too and counts waits on a shared fixture's lock; CPU
  seconds add up to what the suite needs, whichever worker spent them.
  """
  del nextitem
  path = item.config.getoption('--cpu-times')
  if not path:
    return (yield)
  own, children, start = *_cpu_seconds(), time.monotonic()
  result = yield
  own_after, children_after = _cpu_seconds()
  record = {
      'id': item.nodeid,
      'cpu_s': round(own_after - own, 3),
      'subprocess_cpu_s': round(children_after - children, 3),
      'wall_s': round(time.monotonic() - start, 3),
  }
  with open(path, 'a') as f:
    f.write(json.dumps(record) + '\n')
  return result
