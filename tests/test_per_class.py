"""`python -m tools.per_class`: accuracy per class, subject and view, read from the run folders."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, cli_env
from modistill_jax import runs

sys.path.insert(0, str(pathlib.Path(REPO_ROOT) / 'tools'))

import per_class  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def test_rows_group_the_saved_test_predictions(tiny_trained_workdir):
  """Two runs (the same folder twice): every row is the saved predictions' accuracy on its
  clips, the 'all' row the stage's own test accuracy; subjects and views cover every clip."""
  folder = os.path.join(tiny_trained_workdir, 'step4')
  rows = per_class.groups([folder, folder], 'test', 'fused')
  with open(os.path.join(folder, 'predictions_test.npz'), 'rb') as f:
    saved = dict(np.load(f))
  correct = saved['pred/fused'] == saved['label']
  accuracy = runs.read_json(os.path.join(folder, runs.RESULTS_FILE))['test']['accuracy']['fused']
  assert rows['all'] == [(pytest.approx(accuracy), len(correct))] * 2
  names = runs.read_json(os.path.join(folder, 'dataset.json'))['class_names']
  for c, name in enumerate(names):
    if (saved['label'] == c).any():
      assert rows[name][0] == (
          pytest.approx(correct[saved['label'] == c].mean()),
          (saved['label'] == c).sum(),
      )
  for kind in ('subject', 'view'):
    assert sum(rows[r][0][1] for r in rows if r.startswith(kind + ' ')) == len(correct), kind
  assert f'| all | {100 * accuracy:.1f} | {len(correct)} |' in per_class.table(rows)


@pytest.mark.slow
def test_a_stream_the_stage_lacks_is_one_line_naming_those_it_has(
    tiny_trained_workdir, compilation_cache_dir
):
  folder = os.path.join(tiny_trained_workdir, 'step1')
  done = subprocess.run(
      [sys.executable, '-m', 'tools.per_class', '--stream=ir', folder],
      cwd=REPO_ROOT,
      env=cli_env(compilation_cache_dir),
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
  )
  assert done.returncode == 1 and 'Traceback' not in done.stderr, done.stderr
  assert done.stderr.strip() == (
      f"error: {folder}: no stream 'ir' in its predictions; it has ['depth', 'fused', 'rgb']."
  )
