"""The project builds with every build-backend warning turned into an error (issue 20).

pip shows what setuptools warns while building as `BuildBackendWarning`
blocks, even with `--quiet`: a `project.license` table is deprecated (builds
stop working after 2027-02-18), and an editable install through an import hook
comes with a notice. Both `make` targets install with `pip install -e .`, so the
wheel and the editable wheel are built here, from a copy of the sources (a build
writes `build/` and `*.egg-info` next to them), by the installed setuptools
with `-W error`.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

from packaging.requirements import Requirement
import pytest

from conftest import REPO_ROOT

SOURCES = ('pyproject.toml', 'README.md', 'modistill_jax', 'data_builders', 'configs')
BUILD = """
import sys
from setuptools import build_meta
dist = sys.argv[1]  # before the backend rewrites sys.argv
build_meta.build_wheel(dist)
build_meta.build_editable(dist)
"""


@pytest.mark.slow
def test_wheel_and_editable_wheel_build_without_warnings(tmp_path):
  with open(os.path.join(REPO_ROOT, 'pyproject.toml'), 'rb') as f:
    requires = [Requirement(r) for r in tomllib.load(f)['build-system']['requires']]
  for requirement in requires:
    installed = importlib.metadata.version(requirement.name)
    assert requirement.specifier.contains(installed), (
        f'{requirement.name} {installed} is installed; pyproject.toml [build-system] requires '
        f'{requirement} (`make install` upgrades it).'
    )
  source = tmp_path / 'source'
  source.mkdir()
  for name in SOURCES:
    if os.path.isdir(os.path.join(REPO_ROOT, name)):
      shutil.copytree(
          os.path.join(REPO_ROOT, name), source / name, ignore=shutil.ignore_patterns('__pycache__')
      )
    else:
      shutil.copy(os.path.join(REPO_ROOT, name), source / name)
  done = subprocess.run(
      [sys.executable, '-W', 'error', '-c', BUILD, str(tmp_path / 'dist')],
      cwd=source,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
  editable, wheel = sorted(os.listdir(tmp_path / 'dist'))
  assert re.fullmatch(r'modistill_jax-[\d.]+-0\.editable-py3-none-any\.whl', editable), editable
  assert re.fullmatch(r'modistill_jax-[\d.]+-py3-none-any\.whl', wheel), wheel
  # Subpackages ship too: `python -m modistill_jax.benchmark` runs the package's __main__.
  with zipfile.ZipFile(tmp_path / 'dist' / wheel) as built:
    names = set(built.namelist())
  for module in ('benchmark/__main__.py', 'benchmark/step.py', 'data/feeding.py'):
    assert f'modistill_jax/{module}' in names, sorted(names)
