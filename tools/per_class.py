"""Accuracy per class, per subject and per view of finished stages, the mean over several runs.

  python -m tools.per_class --split=validation --stream=rgb RUN0/step1_rgb RUN1/step1_rgb ...

Each argument is a finished stage's folder (one seed's, say). The predictions the stage saved
for the split are read (the test split's, saved when it finished); where there are none, the
stage's best state is evaluated again in-process, on the split, with its saved config, exactly
as `python -m modistill_jax.evaluate` does. Each clip's subject and view come from the built
dataset's records. The output is one Markdown table with a row for all clips, each subject,
each view and each class: the accuracy of `--stream` (the mean over the runs) and the clip
count. The calibration record's per-subject and per-class tables
(data_builders/synthetic_rgbd/README.md) are this table for validation and test.
"""

import argparse
import collections
import os

import numpy as np

from modistill_jax import evaluate
from modistill_jax import finished_stage
from modistill_jax import report
from modistill_jax import runs
from modistill_jax.data import feeding


def predictions(stage_folder: str, split: str) -> tuple[dict[str, np.ndarray], object, tuple]:
  """`(per-clip predictions, the split's source, the class names)` of one finished stage."""
  workdir, name = os.path.split(os.path.normpath(stage_folder))
  run = finished_stage.load(workdir, name)
  config = evaluate.evaluation_config(run, None)
  config.eval.split = split
  if run.dir.predictions_file(split).exists():
    result = report.predictions(workdir, name, split)
    source = feeding.load_sources(config)[split]
  else:  # The split's source is read once, for the evaluation and for the clips' metadata.
    program, source, state = evaluate.stage_evaluation(run, config)
    result = {k: np.asarray(v) for k, v in program.evaluate(state, source)['predictions'].items()}
  if source is None:
    raise ValueError(f'{stage_folder}: {config.dataset}/{config.protocol} has no {split!r} split.')
  return result, source, run.class_names


def groups(stage_folders: list[str], split: str, stream: str) -> dict[str, list[tuple[float, int]]]:
  """`{row: [(accuracy, clips) per run]}` for all clips, each subject, each view, each class."""
  rows = collections.defaultdict(list)
  for folder in stage_folders:
    result, source, class_names = predictions(folder, split)
    key = f'pred/{stream}'
    if key not in result:
      known = sorted(k.removeprefix('pred/') for k in result if k.startswith('pred/'))
      raise ValueError(f'{folder}: no stream {stream!r} in its predictions; it has {known}.')
    index, label = result['index'], result['label']
    correct = result[key] == label
    subject = np.array([int(source.records[int(i)]['subject']) for i in index])
    view = np.array([int(source.records[int(i)]['view']) for i in index])
    masks = {'all': np.ones_like(correct)}
    masks |= {f'subject {s}': subject == s for s in sorted(set(subject))}
    masks |= {f'view {v}': view == v for v in sorted(set(view))}
    masks |= {name: label == c for c, name in enumerate(class_names)}
    for row, mask in masks.items():
      if mask.any():
        rows[row].append((float(correct[mask].mean()), int(mask.sum())))
  return rows


def table(rows: dict[str, list[tuple[float, int]]]) -> str:
  lines = ['| clips of | accuracy (%), mean over runs | clips per run |', '|---|---:|---:|']
  for row, values in rows.items():
    accuracy = 100 * np.mean([a for a, _ in values])
    lines.append(f'| {row} | {accuracy:.1f} | {values[0][1]} |')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('stages', nargs='+', help='finished stage folders, e.g. RUN/step1_rgb')
  parser.add_argument('--split', default='test', help='validation or test (default: test)')
  parser.add_argument('--stream', default='fused', help='rgb, depth, hall, fused... (default)')
  args = parser.parse_args()
  try:
    print(table(groups(args.stages, args.split, args.stream)))
  except (ValueError, runs.StageNotFinishedError) as e:
    raise SystemExit(f'error: {e}') from None


if __name__ == '__main__':
  main()
