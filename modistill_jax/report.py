"""Results of a run folder as the paper's tables and plots (demo report, notebooks).

Everything here reads files a run wrote (`<stage>/results.json`,
`metrics.jsonl`, `dataset.json`, `predictions_test.npz`, `noise_sweep.json`);
nothing trains. `write_report(workdir)` writes `report.md` and its PNGs;
`compare(workdirs)` (`python -m modistill_jax.report --compare DIR [DIR ...]`)
puts several run folders side by side.

Table 1 rows are the paper's, each filled from the stage and stream that
produce it; a row whose stage was not run is left out. One difference from the
paper's labels is spelled out: step 3 *with* connections feeds the frozen depth
stream at test time (its unit-0 outputs gate the hallucination stream), so its
test modality is "RGB (hall) + depth via connections", not RGB alone. A run
with other modalities (infrared or skeletons privileged, another deployed) gets
the same rows in its own modalities' words and no paper figure beside them
(`rows_of_run`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import app
from absl import flags
from etils import epath
import numpy as np

from modistill_jax import metrics as metrics_lib
from modistill_jax import modalities
from modistill_jax import paper_tables
from modistill_jax import runs
from modistill_jax import stages


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of a run folder's Table 1: which stage folder and stream produce it."""

  number: str  # the paper's row number, or its rows' shared label ('3-5')
  method: str
  test_modality: str
  loss: str  # '{loss}': the run's distillation loss
  stage: str
  stream: str  # key of results['test']['accuracy']
  ablation: bool = False  # read from WORKDIR/no_connections/


def _folder_rows() -> tuple[Row, ...]:
  """Table 1 as one run folder holds it: the paper's rows that differ only in loss are one row.

  A folder trains each stage with one loss, so rows 3-5 (and 11-13, 10 and 14)
  are one row each, shown with the run's loss and the paper's row of that loss
  (`paper_tables.row_of_loss`), where the last of them stands in the paper.
  """
  table1 = [r for r in paper_tables.ROWS if r.privileged == 'depth']
  last = {r.label: r for r in table1}
  return tuple(
      Row(
          r.label,
          r.method,
          r.test_modality,
          '{loss}' if sum(x.label == r.label for x in table1) > 1 else r.loss,
          r.stage,
          r.stream,
          ablation=not r.connections,
      )
      for r in table1
      if last[r.label] is r
  )


TABLE1_ROWS = _folder_rows()


def stage_results(workdir: str, stage: str) -> dict[str, Any] | None:
  """A finished stage's results (`runs.StageDir.finished`), or None."""
  directory = runs.stage_dir(workdir, stage)
  return runs.read_json(directory.results_file) if directory.finished() else None


def _results_of(workdir: str, stage: str) -> list[dict[str, Any]]:
  """The finished results a row of `stage` is read from: step 1's, where both streams trained
  in one job, or else each separate `step1_<modality>` job's."""
  if stage == 'step1' and stage_results(workdir, 'step1') is None:
    separate = (stage_results(workdir, f'step1_{m}') for m in modalities.NAMES)
    return [results for results in separate if results is not None]
  results = stage_results(workdir, stage)
  return [] if results is None else [results]


def paper_number(row: Row, loss: str, dataset: str | None, protocol: str | None) -> float | None:
  """The paper's NTU figure for a row, or None (other datasets, rows it lacks)."""
  if dataset != 'ntu_rgbd' or protocol not in paper_tables.PROTOCOLS:
    return None
  paper_row = paper_tables.row_of_loss(row.number, loss)
  return paper_row.paper[paper_tables.PROTOCOLS.index(protocol)] if paper_row else None


# Rows 8 and 13 of a run trained without connections are rows 9 and 14.
_UNCONNECTED = {
    r.number: u
    for r in TABLE1_ROWS
    for u in TABLE1_ROWS
    if u.ablation and not r.ablation and (u.stage, u.stream) == (r.stage, r.stream)
}
_SWAPPED_MODALITIES = {'RGB': 'Depth', 'Depth': 'RGB', 'depth': 'RGB'}


def row_of_run(row: Row, results: dict[str, Any]) -> Row:
  """The row as the run that produced it was set up.

  A folder trained without connections (e.g. the claims command's
  `no_connections`) gives rows 9 and 14, not 8 and 13; with RGB privileged
  (Table 4), the hallucination stream reads depth and rows 13 and 15 are 13a
  and 15a.
  """
  if results.get('connections') is False and row.number in _UNCONNECTED:
    row = _UNCONNECTED[row.number]
  if results.get('privileged') == 'rgb' and row.stage in ('step3', 'step4', 'hoffman'):
    modality = ' '.join(_SWAPPED_MODALITIES.get(w, w) for w in row.test_modality.split(' '))
    number = {'13': '13a', '15': '15a'}.get(row.number, row.number)
    row = dataclasses.replace(row, number=number, test_modality=modality)
  return row


def run_modalities(results: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
  """`(deployed, privileged)` of the run a stage's results come from.

  Results written before `deployed` was recorded have the default of their
  privileged modalities (`stages.roles`: RGB, or depth where RGB is privileged).
  """
  privileged = results.get('privileged', 'depth').split('+')
  return stages.roles(privileged, results.get('deployed', ''))


def is_papers_setting(results: dict[str, Any]) -> bool:
  """Whether the run has the paper's modalities: Table 1's (RGB deployed, depth privileged)
  or Table 4's (the two swapped), the settings its published numbers are for."""
  return run_modalities(results) in (('rgb', ('depth',)), ('depth', ('rgb',)))


def _titled(name: str, capital: bool) -> str:
  title = modalities.get(name).title
  return title[0].upper() + title[1:] if capital else title


def rows_of_run(row: Row, results: dict[str, Any]) -> list[Row]:
  """`row` as the run that produced it was set up (`row_of_run`), for any modalities.

  In the paper's settings, that one row. With other modalities (infrared or
  skeletons privileged, or another one deployed) each row names the run's: a
  row of the depth stream (1, 6) becomes one row per privileged stream, a row of
  the RGB stream (2, 7) the deployed stream's, and the other rows' words for RGB
  and depth become the deployed and the privileged modalities'. The rows keep
  the paper's numbers as the rows they stand for; the paper has no figure for
  them (`table1` leaves its column empty).
  """
  row = row_of_run(row, results)
  if is_papers_setting(results):
    return [row]
  deployed, privileged = run_modalities(results)
  if row.stream == 'depth':
    return [
        dataclasses.replace(
            row,
            method=row.method.replace('depth', _titled(p, capital=False)),
            test_modality=_titled(p, capital=True),
            stream=p,
        )
        for p in privileged
    ]

  def words(text: str, capital: bool) -> str:
    names = {
        'RGB': _titled(deployed, capital),
        'Depth': ' & '.join(_titled(p, capital) for p in privileged),
        'depth': ' & '.join(_titled(p, False) for p in privileged),
    }
    return ' '.join(names.get(w, w) for w in text.split(' '))

  stream = deployed if row.stream == 'rgb' else row.stream
  return [
      dataclasses.replace(
          row,
          method=words(row.method, capital=False),
          test_modality=words(row.test_modality, capital=True),
          stream=stream,
      )
  ]


def table1(workdir: str, split: str = 'test') -> list[dict[str, Any]]:
  """Table 1 (and Table 4) rows with our accuracy (and the paper's, for NTU protocols and the
  paper's modalities)."""
  rows = []
  for paper_row in TABLE1_ROWS:
    base = runs.ablation_workdir(workdir) if paper_row.ablation else workdir
    for results in _results_of(base, paper_row.stage):
      if split not in results:
        continue
      loss = results.get('loss', '')
      papers_setting = is_papers_setting(results)
      for row in rows_of_run(paper_row, results):
        accuracy = results[split]['accuracy'].get(row.stream)
        if accuracy is None:
          continue
        paper = paper_number(row, loss, results.get('dataset'), results.get('protocol'))
        rows.append(
            {
                'row': row.number,
                'method': row.method,
                'test_modality': row.test_modality,
                'loss': row.loss.format(loss=loss),
                'accuracy': 100 * accuracy,
                'paper': paper if papers_setting else None,
                'num_examples': results[split]['num_examples'],
                'complete': results[split]['complete'],
            }
        )
  return rows


def table1_markdown(rows: list[dict[str, Any]]) -> str:
  with_paper = any(r['paper'] is not None for r in rows)
  head = '| # | method | test modality | loss | accuracy |' + (' paper |' if with_paper else '')
  rule = '|---' * (6 if with_paper else 5) + '|'
  lines = [head, rule]
  for r in rows:
    line = (
        f"| {r['row']} | {r['method']} | {r['test_modality']} | {r['loss']} | "
        f"{r['accuracy']:.2f}%{'' if r['complete'] else ' (partial)'} |"
    )
    if with_paper:
      line += f" {r['paper']:.2f}% |" if r['paper'] is not None else ' - |'
    lines.append(line)
  return '\n'.join(lines)


def console_summary(workdir: str, clock: metrics_lib.RunClock) -> str:
  """How `train` and `make demo` end: Table 1 of the folder, each stage's wall time, the curves.

  The table holds every finished stage of the folder (stages finished earlier
  too); the wall times, the stages this command trained.
  """
  rows = table1(workdir)
  parts = [table1_markdown(rows)] if rows else []
  if clock.finished:
    parts.append('\nStages (folder, wall time):\n' + clock.summary())
  parts.append(f'Curves of every stage: tensorboard --logdir {workdir}')
  return '\n'.join(parts)


def noise_sweep(workdir: str, stage: str = 'step2') -> list[dict[str, Any]] | None:
  path = runs.stage_dir(workdir, stage).noise_sweep_file
  return runs.read_json(path) if path.exists() else None


def table2_markdown(rows: list[dict[str, Any]], hallucination: float | None) -> str:
  head = '| sigma^2 | ' + ' | '.join(r['sigma2'] for r in rows) + ' |'
  rule = '|---' * (len(rows) + 1) + '|'
  body = (
      '| step 2, RGB + noisy depth | '
      + ' | '.join(f"{100 * r['accuracy']['fused']:.2f}%" for r in rows)
      + ' |'
  )
  lines = [head, rule, body]
  if hallucination is not None:
    lines.append(
        f'\nStep 4 (hallucination, RGB only, no depth at test time): ' f'{hallucination:.2f}%.'
    )
  return '\n'.join(lines)


def dataset_info(workdir: str, stage: str) -> dict[str, Any]:
  """The stage's `dataset.json`: dataset, protocol, builder config, class names."""
  return runs.read_json(runs.stage_dir(workdir, stage).dataset_file)


def stage_config(workdir: str, stage: str) -> dict[str, Any]:
  """The config the stage ran with, as a dict."""
  return runs.read_json(runs.stage_dir(workdir, stage).config_file)


def class_names(workdir: str, stage: str) -> list[str]:
  return dataset_info(workdir, stage)['class_names']


def confusion_matrix(
    workdir: str, stage: str, stream: str = 'fused', split: str = 'test'
) -> np.ndarray:
  """Counts `[true, predicted]` from a stage's saved test predictions."""
  saved = predictions(workdir, stage, split)
  n = len(class_names(workdir, stage))
  matrix = np.zeros((n, n), np.int64)
  np.add.at(matrix, (saved['label'], saved[f'pred/{stream}']), 1)
  return matrix


def predictions(workdir: str, stage: str, split: str = 'test') -> dict[str, np.ndarray]:
  """A stage's saved per-clip predictions: `label`, `index`, `pred/<stream>`."""
  with runs.stage_dir(workdir, stage).predictions_file(split).open('rb') as f:
    return dict(np.load(f))


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
  totals = matrix.sum(axis=1)
  return np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1), np.nan)


# MARK: plots (matplotlib is imported lazily: the trainer never needs it)


def pyplot():
  """pyplot with matplotlib's own backend choice: inline in notebooks, Agg headless."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def plot_training_curves(workdir: str, path: str | None = None) -> None:
  """Training loss and validation accuracy of every stage in the folder."""
  plt = pyplot()
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
  for stage in runs.stages_with_metrics(workdir):
    records = metrics_lib.read_jsonl(runs.stage_dir(workdir, stage).metrics_file)
    train = [r for r in records if r['split'] == 'train']
    val = [r for r in records if r['split'] == 'validation']
    if train:
      ax_loss.plot([r['step'] for r in train], [r['loss'] for r in train], label=stage)
    if val:
      key = (
          'accuracy/fused'
          if 'accuracy/fused' in val[0]
          else next(k for k in val[0] if k.startswith('accuracy/'))
      )
      ax_acc.plot(
          [r['step'] for r in val],
          [100 * r[key] for r in val],
          marker='o',
          label=f'{stage} ({key.split("/")[1]})',
      )
  ax_loss.set(xlabel='step', ylabel='training loss', title='Training loss')
  ax_acc.set(xlabel='step', ylabel='accuracy (%)', title='Validation accuracy')
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.tight_layout()
  save_figure(fig, path)


def plot_noise_curve(
    rows: list[dict[str, Any]], hallucination: float | None, path: str | None = None
) -> None:
  """Table 2 as a curve: step 2 accuracy against depth-noise variance."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  noisy = [r for r in rows if not r['void'] and r['sigma'] > 0]
  ax.semilogx(
      [r['sigma'] ** 2 for r in noisy],
      [100 * r['accuracy']['fused'] for r in noisy],
      marker='o',
      label='step 2: RGB + noisy depth',
  )
  clean = next(r for r in rows if r['sigma2'] == 'no noise')
  void = next(r for r in rows if r['void'])
  ax.axhline(100 * clean['accuracy']['fused'], ls=':', color='gray', label='step 2, clean depth')
  ax.axhline(100 * void['accuracy']['fused'], ls='-.', color='black', label='step 2, void depth')
  if hallucination is not None:
    ax.axhline(hallucination, ls='--', color='red', label='step 4, RGB only (hallucination)')
  ax.set(xlabel='noise variance sigma^2', ylabel='accuracy (%)', title='Noisy depth at test time')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  save_figure(fig, path)


def plot_confusion(
    matrix: np.ndarray, names: list[str], title: str, path: str | None = None
) -> None:
  plt = pyplot()
  size = max(5, 0.45 * len(names) + 2)
  fig, ax = plt.subplots(figsize=(size, size))
  rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
  ax.set_xticks(range(len(names)), names, rotation=60, ha='right', fontsize=8)
  ax.set_yticks(range(len(names)), names, fontsize=8)
  if len(names) <= 20:
    for (i, j), count in np.ndenumerate(matrix):
      if count:
        ax.text(
            j,
            i,
            str(count),
            ha='center',
            va='center',
            fontsize=7,
            color='white' if rates[i, j] > 0.5 else 'black',
        )
  ax.set(xlabel='predicted', ylabel='true', title=title)
  fig.tight_layout()
  save_figure(fig, path)


def save_figure(fig, path: str | None) -> None:
  """Writes `fig` to `path` (a PNG) and closes it; without a path, leaves it to pyplot to show.

  Nothing is returned: a notebook shows the open figures of a cell at its end,
  and would show a returned figure, the cell's value, a second time.
  """
  if path is not None:
    with epath.Path(path).open('wb') as f:
      fig.savefig(f, dpi=110, format='png')
    pyplot().close(fig)


def write_report(workdir: str, *, title: str = 'Results') -> str:
  """Writes `report.md` and its PNGs into `workdir`; returns the report's path."""
  rows = table1(workdir)
  parts = [
      f'# {title}',
      '',
      f'Run folder: `{runs.as_path(workdir)}`',
      '',
      '## Table 1 layout (test split)',
      '',
      table1_markdown(rows),
      '',
  ]
  curves = runs.report_asset(workdir, 'training_curves.png')
  plot_training_curves(workdir, curves)
  parts += ['## Training curves', '', '![training curves](training_curves.png)', '']
  step4 = stage_results(workdir, 'step4')
  hallucination = 100 * step4['test']['accuracy']['fused'] if step4 and 'test' in step4 else None
  sweep = noise_sweep(workdir)
  if sweep:
    plot_noise_curve(sweep, hallucination, runs.report_asset(workdir, 'noise_curve.png'))
    parts += [
        '## Table 2 layout: step 2 with noisy depth (test split)',
        '',
        table2_markdown(sweep, hallucination),
        '',
        '![noise curve](noise_curve.png)',
        '',
    ]
  if step4 and runs.stage_dir(workdir, 'step4').predictions_file('test').exists():
    names = class_names(workdir, 'step4')
    matrix = confusion_matrix(workdir, 'step4')
    plot_confusion(
        matrix,
        names,
        'Step 4 (RGB only), test split',
        runs.report_asset(workdir, 'confusion_step4.png'),
    )
    per_class = per_class_accuracy(matrix)
    parts += [
        '## Step 4 per class (test split)',
        '',
        '| class | accuracy | clips |',
        '|---|---|---|',
    ]
    parts += [
        f'| {n} | {100 * a:.1f}% | {int(t)} |'
        for n, a, t in zip(names, per_class, matrix.sum(axis=1))
    ]
    parts += ['', '![confusion matrix](confusion_step4.png)', '']
  path = runs.report_file(workdir)
  path.write_text('\n'.join(parts))
  return str(path)


# MARK: several run folders side by side


def paper_row(row: str, loss: str) -> str:
  """The paper's row number for a Table 1 row (`3-5` with eq1 is row 3)."""
  paper_row = paper_tables.row_of_loss(row, loss)
  return paper_row.number if paper_row else row


# The settings every comparison shows, in this order (`dataset` with its builder config).
HEADLINE_SETTINGS = ('dataset', 'protocol', 'seed', 'privileged')


def run_description(workdir: str) -> dict[str, Any]:
  """A run folder's finished stages and the settings of the first one.

  `settings` is that stage's whole config, flattened (`model.width`, ...),
  without what does not change results (`config_lib.RESUMABLE_KEYS`: the stage
  name, cadences, worker counts, where the data is).
  """
  # pylint: disable=g-import-not-at-top (models, losses)
  from modistill_jax import config_lib
  from modistill_jax import stages

  root = runs.as_path(workdir)
  finished = sorted(p.name for p in root.iterdir() if runs.stage_dir(root, p.name).finished())
  if not finished:
    return {'stages': [], 'settings': {}}
  config = stage_config(workdir, finished[0])
  dataset = config['dataset'] + (f"/{config['builder_config']}" if config['builder_config'] else '')
  settings = {
      k: v
      for k, v in config_lib.flatten(config).items()
      if not config_lib.matches(k, config_lib.RESUMABLE_KEYS + ('dataset', 'builder_config'))
  }
  return {
      'stages': finished,
      'dataset': dataset,
      'protocol': config['protocol'],
      'seed': config['seed'],
      # One modality ('depth'), or several joined as results.json joins them ('depth+ir').
      'privileged': '+'.join(stages.names_tuple(config['privileged'])),
      'settings': settings,
  }


def differing_settings(descriptions: list[dict[str, Any]]) -> list[str]:
  """The settings, besides `HEADLINE_SETTINGS`, on which the runs do not all agree, sorted."""
  keys = {k for d in descriptions for k in d['settings']} - set(HEADLINE_SETTINGS)
  return sorted(k for k in keys if len({repr(d['settings'].get(k, '-')) for d in descriptions}) > 1)


def compare(workdirs: list[str], split: str = 'test') -> dict[str, Any]:
  """Table 1 rows and Table 2 columns of several run folders, one column per folder.

  Each folder is a `--workdir` with any finished stages (a seed, a config, an
  ablation; NTU runs as well as synthetic ones): only its files are read. A row
  is one of the paper's, by its loss where the paper has one row per loss
  (Hoffman et al. eq. 1 is row 3); a folder without it shows None.
  """
  for workdir in workdirs:
    if not runs.as_path(workdir).is_dir():
      raise FileNotFoundError(f'No run folder {workdir}.')
  tables = [table1(w, split) for w in workdirs]
  order = {r.number: i for i, r in enumerate(TABLE1_ROWS)}
  for table4_row in (r for r in paper_tables.ROWS if r.privileged != 'depth'):
    order[table4_row.number] = len(order)
  keys = sorted(
      {(r['row'], r['method'], r['test_modality'], r['loss']) for t in tables for r in t},
      # Then by modality: a Table 4 folder's rows share a number and loss with Table 1's.
      key=lambda k: (order[k[0]], k[3], k[2]),
  )
  rows = []
  for row, method, modality, loss in keys:
    values = []
    for table in tables:
      match = [
          r['accuracy']
          for r in table
          if (r['row'], r['method'], r['test_modality'], r['loss']) == (row, method, modality, loss)
      ]
      values.append(match[0] if match else None)
    rows.append(
        {
            'row': paper_row(row, loss),
            'method': method,
            'test_modality': modality,
            'loss': loss,
            'accuracy': values,
        }
    )
  sweeps = [noise_sweep(w) or [] for w in workdirs]
  labels = list(dict.fromkeys(r['sigma2'] for sweep in sweeps for r in sweep))
  for label in labels:
    values = [
        next((100 * r['accuracy']['fused'] for r in sweep if r['sigma2'] == label), None)
        for sweep in sweeps
    ]
    rows.append(
        {
            'row': 'T2',
            'method': f'step 2, depth sigma^2 = {label}',
            'test_modality': 'RGB & noisy depth',
            'loss': 'x-entr',
            'accuracy': values,
        }
    )
  descriptions = [run_description(w) for w in workdirs]
  return {
      'workdirs': [str(w) for w in workdirs],
      'runs': descriptions,
      'differing': differing_settings(descriptions),
      'rows': rows,
  }


def compare_markdown(comparison: dict[str, Any]) -> str:
  """`compare`'s table: a column per folder, headed by its path and the settings of its run.

  Dataset, protocol, seed and privileged modality head every column; below
  them, every other setting on which the folders differ, one row each.
  """
  names = comparison['workdirs']
  lines = [
      '| # | method | test modality | loss | ' + ' | '.join(names) + ' |',
      '|---' * (4 + len(names)) + '|',
  ]
  described = comparison['runs']
  for key in HEADLINE_SETTINGS:
    lines.append(f'| | {key} | | | ' + ' | '.join(str(r.get(key, '-')) for r in described) + ' |')
  for key in comparison['differing']:
    lines.append(
        f'| | {key} | | | ' + ' | '.join(str(r['settings'].get(key, '-')) for r in described) + ' |'
    )
  for r in comparison['rows']:
    lines.append(
        f"| {r['row']} | {r['method']} | {r['test_modality']} | {r['loss']} | "
        + ' | '.join('-' if v is None else f'{v:.2f}%' for v in r['accuracy'])
        + ' |'
    )
  return '\n'.join(lines)


def main(argv):
  folders = argv[1:]
  if not flags.FLAGS.compare or not folders:
    raise app.UsageError('Usage: python -m modistill_jax.report --compare DIR [DIR ...]')
  text = compare_markdown(compare(folders))
  print(text)
  if flags.FLAGS.output:
    epath.Path(flags.FLAGS.output).write_text(text + '\n')
    print(f'Written to {flags.FLAGS.output}')


if __name__ == '__main__':
  flags.DEFINE_bool(
      'compare',
      False,
      'Print a side-by-side table of the run folders given '
      'after the flags (seeds, configurations, ablations).',
  )
  flags.DEFINE_string('output', '', 'Also write the table (Markdown) to this file.')
  app.run(main)
