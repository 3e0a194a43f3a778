"""Every command the documentation shows runs as written (issue 29).

The commands are read from the ```sh blocks of README.md, docs/*.md and
data_builders/*/README.md, so a changed or added command is tested without
anyone remembering to. Each runs as a bash subprocess of exactly its text, in
order, in one folder laid out as the guide's reader has it (`reader_folder`):

* `DATA/` (empty: the documented builds fill it), `RAW/ntu`, `RAW/nwucla`,
  `RAW/uwa3dii` (the builders' fake raw trees, `dummy_data/`), `ROOT/` (a
  tiny recording folder in custom_rgbd's layout), the video files the
  commands name, and `configs/`, `data_builders/` and `tools/` (links to the repository's);
* `runs/ntu_cs` and `workdirs/demo`: copies of the session's tiny run
  (tests/tiny_run.py), standing in for the runs that commands not run here
  would make (training on NTU needs the ImageNet download; `make demo` takes
  15 minutes); copied in before the first command of a chain that names one.

A command is changed only through its own command line: a `--config=FILE:STAGE`
argument gets `,tiny` (a tiny stream, 16x16 frames, one step per stage;
`config_lib.TINY`), and `SMALLER` lists the flags that fit a command to the
fake data (a smaller batch). The commands run on one CPU device, as on a
laptop. A command that cannot run here is listed in
`NOT_RUN` with the reason; one that is neither run nor listed fails.

The commands depend on the ones before them, as a reader's do, but only on
those about the same data or runs: `CHAINS` sorts them into independent
chains, each run in order in a reader's folder of its own and as one xdist
group, so that the chains run on both workers side by side. Run a whole chain
(or the whole file), not one command of it alone.

The chains are marked `commands` and run by `make test-commands` (CI runs it
after `make test`; docs/testing.md says why); the checks that every command is
run or listed, that the versions shown are the code's, and that every entry
point answers `--help` in a subprocess of its own stay in `make test`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
import concurrent.futures
import dataclasses
import functools
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib

import numpy as np
from PIL import Image
import pytest

from conftest import REPO_ROOT, cli_env
import tiny_run

DOCUMENTS = ('README.md', 'docs/*.md', 'data_builders/*/README.md')

# (document, pattern) -> why a command matching `pattern` in `document` (a glob) is not run here.
NOT_RUN = {
    ('*', r'^gcloud '): 'needs a Google Cloud project (and the gcloud CLI)',
    ('*', r'runner=DataflowRunner'): 'launches a Google Cloud Dataflow job',
    ('*', r'^pip wheel '): (
        'stages the wheel for the Dataflow job above; tests/test_packaging.py builds the wheel'
    ),
    ('*', r'runner=DirectRunner'): (
        'the Beam conversion takes minutes; data_builders/beam_test.py (`make test-beam`) runs '
        'it on the same fake raw trees'
    ),
    ('*', r'^docker '): 'needs Docker and the tensorflow/serving image (a download)',
    ('*', r'jupyter lab '): (
        'starts a server that waits for a browser; tests/test_demo_notebook.py executes the '
        'notebook headless'
    ),
    ('*', r'--src=resnet_v1_50\.ckpt'): (
        'converts the downloaded ImageNet checkpoint; tests/test_pretrained.py converts one it '
        'writes'
    ),
    ('*', r'--config\.init\.imagenet=imagenet/slim'): (
        'needs the converted ImageNet ResNet-50 (the command above), which a `,tiny` stream '
        'cannot load'
    ),
    ('docs/performance.md', r'modistill_jax\.benchmark'): (
        'a full-size measurement (minutes to hours on CPU, or an H100); '
        'tests/test_benchmark.py runs the benchmark on tiny configs'
    ),
    ('data_builders/synthetic_rgbd/README.md', r'synthetic_rgbd\.probe'): (
        'renders and probes the full ntu_like dataset (3 minutes); '
        'tests/test_synthetic_ntu_like.py pins the pixels it measured'
    ),
    ('docs/modalities.md', r'builder_config=default_ir_skeleton'): (
        'builds the full miniature with infrared and joints (2,304 clips, about a minute) for a '
        'full-size run; tests/test_privileged_modalities.py trains `configs/ntu_cs.py:all,tiny` '
        'with skeleton and with depth and infrared privileged, and '
        'data_builders/synthetic_rgbd/ir_skeleton_test.py builds `tiny_ir_skeleton`'
    ),
    ('docs/modalities.md', r'--workdir=runs/ntu_cs_ir'): (
        "trains on NTU's full res224_ir_skeleton build (the downloaded videos and ImageNet "
        'weights); tests/test_privileged_modalities.py trains `configs/ntu_cs.py:all,tiny` on the '
        'dummy NTU tree with infrared privileged (with depth, from the command line)'
    ),
    ('docs/modalities.md', r'^make teachers|modistill_jax\.teachers'): (
        'builds the full miniature with infrared and joints, then trains 16 stages per seed '
        '(about 55 minutes for 5 seeds on 2 cores); tests/test_teachers.py runs the command on '
        'the tiny build, one seed and one teacher set, and again to check that a finished folder '
        'trains nothing (several sets and seeds: in-process)'
    ),
    ('data_builders/synthetic_rgbd/README.md', r'configs/ntu_like\w*\.py'): (
        'builds a full ntu_like dataset (or its _faces, _coats, _coats_no_turn) first (2,304 to '
        '2,880 clips, minutes; `,tiny` shrinks the stream, not that data); '
        'tests/test_pretext.py trains ntu_like step 1 in-process on tiny data'
    ),
}

# Files the documented commands read, made in the reader's folder.
VIDEOS = ('video.mp4', 'a.mp4', 'b.avi', 'long_video.mp4', 'new_recording.mp4')
# Run folders made by commands that are not run here: copies of the tiny run.
STAND_IN_RUNS = ('runs/ntu_cs', 'workdirs/demo')
RAW_TREES = {'ntu': 'ntu_rgbd', 'nwucla': 'nw_ucla', 'uwa3dii': 'uwa3dii'}
TIMEOUT_S = 600
# Chain -> the pattern of its commands (the first chain whose pattern a command's text matches;
# `other` when none does). A chain's commands run in document order in its own folder, so a
# command that reads what another writes (a built dataset, a run, `exported/`) must be in its
# chain; equal texts (a builder README repeating the main README) fall in one chain and run once.
CHAINS = {
    'own_data': r'my_gestures|custom_rgbd',
    'public_data': r'ntu_rgbd|nw_ucla|uwa3dii|nwucla|RAW/',
    'stand_in_runs': '|'.join(map(re.escape, STAND_IN_RUNS)),
}


@dataclasses.dataclass(frozen=True)
class Command:
  document: str  # relative to the repository
  line: int
  text: str  # as written, continuation lines included

  @property
  def id(self) -> str:
    return f'{self.document}:{self.line}'


def sh_blocks(path: str):
  """`(first line number, lines)` of each ```sh block of a Markdown file."""
  block, start = None, 0
  with open(path) as f:
    for number, line in enumerate(f, 1):
      stripped = line.strip()
      if block is None and stripped == '```sh':
        block, start = [], number + 1
      elif block is not None and stripped.startswith('```'):
        yield start, textwrap.dedent('\n'.join(block)).split('\n')  # blocks inside list items
        block = None
      elif block is not None:
        block.append(line.rstrip('\n'))


def commands_of(lines: list[str], start: int):
  """`(line number, text)` of each command of a block: a line with its `\\` continuations,
  or a whole `for ... done` loop; comments left out."""
  number, pending = None, []
  for offset, line in enumerate(lines):
    if not pending and (not line.strip() or line.lstrip().startswith('#')):
      continue
    if not pending:
      number = start + offset
    pending.append(line)
    text = '\n'.join(pending)
    if line.endswith('\\') or (text.startswith('for ') and line.strip() != 'done'):
      continue
    yield number, text
    pending = []
  assert not pending, f'unfinished command at line {number}: {pending}'


@functools.cache
def documented_commands() -> tuple[Command, ...]:
  documents = []
  for pattern in DOCUMENTS:
    documents += sorted(
        str(p.relative_to(REPO_ROOT)) for p in pathlib.Path(REPO_ROOT).glob(pattern)
    )
  return tuple(
      Command(document, number, text)
      for document in documents
      for start, lines in sh_blocks(os.path.join(REPO_ROOT, document))
      for number, text in commands_of(lines, start)
  )


def chain_of(text: str) -> str:
  """The chain (a key of `CHAINS`, or `other`) of a command's text."""
  return next((chain for chain, pattern in CHAINS.items() if re.search(pattern, text)), 'other')


def in_its_chain(command: Command):
  """`command` as a test parameter in its chain's xdist group (see the module docstring)."""
  group = pytest.mark.xdist_group(f'documented_commands:{chain_of(command.text)}')
  return pytest.param(command, id=command.id, marks=group)


def reason_not_run(command: Command) -> str | None:
  for (document, pattern), reason in NOT_RUN.items():
    if pathlib.PurePath(command.document).match(document) and re.search(pattern, command.text):
      return reason
  return None


# Flags added to a command matching the pattern, and why.
SMALLER = {
    # The fake NW-UCLA tree holds 3 training clips, fewer than one `,tiny` batch (4).
    r'configs/nwucla\.py': ' --config.batch_size=2 --config.eval_batch_size=2',
}


def shrunk(text: str) -> str:
  """`text` with `,tiny` after every `--config=FILE.py:STAGE` that has no options yet, and the
  flags `SMALLER` adds."""
  text = re.sub(r'(--config=configs/\w+\.py:\w+)(?=[\s\\]|$)', r'\1,tiny', text)
  for pattern, flags in SMALLER.items():
    if re.search(pattern, text):
      text += flags
  return text


def test_every_documented_command_is_run_or_listed_with_a_reason():
  commands = documented_commands()
  assert len(commands) > 20, 'the Markdown parser lost the commands'
  for (_, pattern), reason in NOT_RUN.items():
    assert any(
        re.search(pattern, c.text) for c in commands
    ), f'NOT_RUN lists {pattern!r} ({reason}), which no doc shows'


def write_recordings(root: pathlib.Path) -> None:
  """A tiny recording folder in custom_rgbd's layout: 3 classes, 3 samples each.

  RGB as numbered PNG frames, 8-bit depth; per class one training, one
  validation and one test sample, where each class shows in its own colour.
  """
  rows = ['sample,label,split']
  rng = np.random.default_rng(0)
  for label, colour in enumerate(('red', 'green', 'blue')):
    for split in ('train', 'train', 'validation', 'test'):
      name = f'{colour}_{len(rows)}'
      rows.append(f'{name},{colour},{split}')
      for kind in ('rgb', 'depth'):
        (root / kind / name).mkdir(parents=True)
      for t in range(4):
        rgb = rng.integers(0, 100, (24, 32, 3), dtype=np.uint8)
        rgb[..., label] += 120
        Image.fromarray(rgb).save(root / 'rgb' / name / f'{t:03d}.png')
        depth = rng.integers(1, 80, (24, 32), dtype=np.uint8) + np.uint8(60 * label)
        Image.fromarray(depth).save(root / 'depth' / name / f'{t:03d}.png')
  (root / 'labels.csv').write_text('\n'.join(rows) + '\n')


def make_reader_folder(folder: pathlib.Path) -> pathlib.Path:
  """The folder the documented commands run in (see the module docstring), but the stand-in
  runs."""
  for name in ('configs', 'data_builders', 'tools'):
    (folder / name).symlink_to(os.path.join(REPO_ROOT, name))
  (folder / 'DATA').mkdir()
  for raw, builder in RAW_TREES.items():
    (folder / 'RAW').mkdir(exist_ok=True)
    (folder / 'RAW' / raw).symlink_to(
        os.path.join(REPO_ROOT, 'data_builders', builder, 'dummy_data')
    )
  write_recordings(folder / 'ROOT')
  frames = tiny_run.synthetic_frames(12)
  for name in VIDEOS:
    codec = 'mpeg4' if name.endswith('.avi') else 'libx264'
    tiny_run.write_video(str(folder / name), frames, codec)
  return folder


def names_a_stand_in_run(text: str) -> bool:
  return any(run in text for run in STAND_IN_RUNS)


@pytest.fixture(scope='module')
def reader_folders(tmp_path_factory, request) -> Callable[..., pathlib.Path]:
  """The reader's folder of a chain, made when first asked for; `with_stand_in_runs`: with the
  copies of the session's tiny run in it.

  The stand-in runs are copied in before the first command that names one, so
  a chain waits for the tiny run (`tiny_trained_workdir`) only from there.
  """
  folders = {}

  def folder(chain: str, *, with_stand_in_runs: bool = False) -> pathlib.Path:
    if chain not in folders:
      folders[chain] = make_reader_folder(tmp_path_factory.mktemp(f'reader_{chain}'))
    if with_stand_in_runs and not (folders[chain] / STAND_IN_RUNS[0]).exists():
      tiny_trained_workdir = request.getfixturevalue('tiny_trained_workdir')
      for run in STAND_IN_RUNS:
        shutil.copytree(tiny_trained_workdir, folders[chain] / run)
    return folders[chain]

  return folder


@pytest.fixture(scope='module')
def run_in_reader_folder(reader_folders, compilation_cache_dir):
  """Runs a command's text with bash in its chain's folder, once per distinct text."""
  # One CPU device, as on a laptop (a batch of 2 divides over it).
  env = cli_env(compilation_cache_dir, device_count=1)
  env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env['PATH']
  # One conversion process: the fake raw trees hold a few clips each.
  env['MODISTILL_BUILD_WORKERS'] = '1'
  done = {}

  def run(text: str) -> subprocess.CompletedProcess:
    if text not in done:
      done[text] = subprocess.run(
          ['bash', '-c', text],
          cwd=reader_folders(chain_of(text), with_stand_in_runs=names_a_stand_in_run(text)),
          env=env,
          capture_output=True,
          text=True,
          timeout=TIMEOUT_S,
          check=False,
      )
    return done[text]

  return run


@pytest.mark.parametrize('command', [in_its_chain(c) for c in documented_commands()])
@pytest.mark.slow
@pytest.mark.commands
def test_documented_command_runs_as_written(command, run_in_reader_folder):
  reason = reason_not_run(command)
  if reason is not None:
    pytest.skip(f'not run here: {reason}')
  text = shrunk(command.text)
  done = run_in_reader_folder(text)
  output = done.stdout + done.stderr
  assert done.returncode == 0, f'{command.id}: `{text}` exited {done.returncode}:\n{output[-4000:]}'
  assert 'Traceback (most recent call last)' not in output, f'{command.id}: `{text}`:\n{output}'


def read_version(path: str) -> str:
  """The `VERSION = tfds.core.Version('X.Y.Z')` of a builder module."""
  with open(os.path.join(REPO_ROOT, path)) as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == 'VERSION' for t in node.targets
    ):
      return node.value.args[0].value
  raise AssertionError(f'no VERSION in {path}')


def documents_text() -> dict[str, str]:
  texts = {}
  for pattern in DOCUMENTS:
    for path in sorted(pathlib.Path(REPO_ROOT).glob(pattern)):
      texts[str(path.relative_to(REPO_ROOT))] = path.read_text()
  return texts


# Builder versions in a documented path (`.../<dataset>/<config>/X.Y.Z/`) and where each
# dataset's builder states its own.
BUILDERS = {
    'ntu_rgbd': 'data_builders/ntu_rgbd/ntu_rgbd_dataset_builder.py',
    'nw_ucla': 'data_builders/nw_ucla/nw_ucla_dataset_builder.py',
    'uwa3dii': 'data_builders/uwa3dii/uwa3dii_dataset_builder.py',
    'synthetic_rgbd': 'data_builders/synthetic_rgbd/synthetic_rgbd_dataset_builder.py',
    'my_gestures': 'data_builders/custom_rgbd/builder.py',
}
# A console transcript recorded before record layout 2.0.0, quoted as it was printed.
HISTORIC = ('Built synthetic_rgbd in workdirs/tfds/synthetic_rgbd/default/1.0.0 in 0:55',)


def test_documented_versions_are_the_codes():
  with open(os.path.join(REPO_ROOT, 'pyproject.toml'), 'rb') as f:
    project_version = tomllib.load(f)['project']['version']
  versions = {name: read_version(path) for name, path in BUILDERS.items()}
  checked = 0
  for document, text in documents_text().items():
    for line in text.splitlines():
      if any(h in line for h in HISTORIC):
        continue
      for wheel in re.findall(r'modistill_jax-([\d.]+)-py3', line):
        assert wheel == project_version, f'{document}: wheel {wheel}, pyproject {project_version}'
        checked += 1
      for dataset, version in re.findall(r'\b(\w+)/(?:<config>|\w+)/(\d+\.\d+\.\d+)\b', line):
        assert dataset in versions, f'{document}: a version path of unknown {dataset}: {line}'
        assert version == versions[dataset], f'{document}: {dataset} is {versions[dataset]}: {line}'
        checked += 1
  assert checked >= 5, 'the version paths were not found'


@pytest.mark.slow
@pytest.mark.commands
@pytest.mark.xdist_group('documented_commands:own_data')
def test_custom_build_writes_the_folder_the_readme_names(reader_folders, run_in_reader_folder):
  """After the README's own-data commands (run above, in their chain), its build folder exists."""
  with open(os.path.join(REPO_ROOT, 'README.md')) as f:
    (path,) = set(re.findall(r'`(DATA/my_gestures/res112/[\d.]+)/skipped\.tsv`', f.read()))
  build = next(c for c in documented_commands() if 'custom_rgbd build' in c.text)
  assert chain_of(build.text) == 'own_data'
  assert run_in_reader_folder(shrunk(build.text)).returncode == 0
  reader_folder = reader_folders('own_data')
  assert (reader_folder / path / 'dataset_info.json').exists(), sorted(
      str(p.relative_to(reader_folder)) for p in (reader_folder / 'DATA').rglob('*')
  )[:20]


def main_modules() -> list[str]:
  """Every module of the project that `python -m` runs: a `__main__.py`, or a module with an
  `if __name__ == '__main__':` block, in packages all the way up."""
  modules = []
  for top in ('modistill_jax', 'data_builders'):
    for path in sorted(pathlib.Path(REPO_ROOT, top).rglob('*.py')):
      if path.name.endswith('_test.py'):
        continue
      packages = path.relative_to(REPO_ROOT).parents[:-1]  # all but the repository itself
      if not all((pathlib.Path(REPO_ROOT, p) / '__init__.py').exists() for p in packages):
        continue
      text = path.read_text()
      if path.name != '__main__.py' and not re.search(r"^if __name__ == '__main__':", text, re.M):
        continue
      parts = path.relative_to(REPO_ROOT).with_suffix('').parts
      modules.append('.'.join(parts[:-1] if path.name == '__main__.py' else parts))
  return modules


@pytest.fixture(scope='module')
def help_outputs(compilation_cache_dir) -> dict[str, subprocess.CompletedProcess]:
  """`python -m MODULE --help` of every module, run side by side (each mostly imports)."""
  env = cli_env(compilation_cache_dir)

  def run(module):
    return subprocess.run(
        [sys.executable, '-m', module, '--help'],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )

  modules = main_modules()
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    return dict(zip(modules, pool.map(run, modules)))


def test_the_main_modules_are_found():
  modules = main_modules()
  for expected in ('modistill_jax.train', 'modistill_jax.evaluate', 'data_builders.custom_rgbd'):
    assert expected in modules


@pytest.mark.parametrize('module', main_modules())
@pytest.mark.slow
def test_module_answers_help_with_its_usage(module, help_outputs):
  done = help_outputs[module]
  output = done.stdout + done.stderr
  # absl's --help exits with 1 after printing the help, argparse's with 0.
  assert done.returncode in (0, 1), f'python -m {module} --help exited {done.returncode}:\n{output}'
  assert 'Traceback' not in output and 'FATAL' not in output, output
  assert re.search(r'^usage:|^\s+--\[?\w', output, re.M | re.I), f'no usage or flags:\n{output}'
