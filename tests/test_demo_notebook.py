"""The demo driver and the results notebook, on the tiny real run of every stage.

The run is `tiny_run`'s: `run_demo` (`make demo`) with `configs/demo.py:all,tiny`
on conftest's tiny dataset; every stage, the baseline, the ablation, the noise
sweep and the report run for real. The notebook is then executed headless
against that run folder, as a user would open it.
"""

from __future__ import annotations

import os

import jupytext
import nbclient
import nbformat
import pytest

from modistill_jax import report
from modistill_jax import runs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO_ROOT, 'notebooks', 'results.ipynb')


@pytest.fixture(scope='module')
def demo_run(tiny_trained_workdir):
  return tiny_trained_workdir, os.path.join(tiny_trained_workdir, 'report.md')


def test_demo_runs_every_stage_and_writes_the_report(demo_run):
  """All stages, the baseline and the ablation leave results; the report shows them."""
  workdir, path = demo_run
  for stage in ('step1', 'step2', 'step3', 'step4', 'hoffman'):
    assert report.stage_results(workdir, stage)['test']['complete'], stage
  for stage in ('step2', 'step3'):
    assert report.stage_results(runs.ablation_workdir(workdir), stage), stage
  rows = {r['row'] for r in report.table1(workdir)}
  assert rows == {'1', '2', '3-5', '6', '7', '8', '9', '13', '14', '15'}
  sweep = report.noise_sweep(workdir)
  assert [r['sigma2'] for r in sweep] == ['no noise', '0.1', 'void']
  text = open(path).read()
  assert '| 15 | step 4 | RGB | x-entr |' in text
  for png in ('training_curves.png', 'noise_curve.png', 'confusion_step4.png'):
    assert os.path.getsize(os.path.join(workdir, png)) > 1000, png


def test_results_notebook_runs_on_a_run_folder(demo_run):
  """The notebook executes without error and draws its figures."""
  workdir, _ = demo_run
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  os.environ['MODISTILL_WORKDIR'] = workdir
  try:
    nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name='python3',
        resources={'metadata': {'path': os.path.dirname(NOTEBOOK)}},
    ).execute()
  finally:
    del os.environ['MODISTILL_WORKDIR']
  outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  figures = [o for o in outputs if 'image/png' in o.get('data', {})]
  # Curves, noise curve, confusion matrix, test clips: each once (a figure that a
  # cell also returned as its value would show twice).
  assert len(figures) == 4


def test_notebook_and_its_text_twin_agree():
  """`results.py` (reviewed in diffs) and `results.ipynb` hold the same cells."""
  ipynb = jupytext.read(NOTEBOOK)
  py = jupytext.read(os.path.join(REPO_ROOT, 'notebooks', 'results.py'))
  assert [c.source for c in ipynb.cells] == [c.source for c in py.cells]
