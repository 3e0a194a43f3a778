"""`make teachers`: which privileged modality teaches the RGB-only model best (issue 27).

  python -m modistill_jax.teachers --config=configs/ntu_like.py --seeds=5 --workdir=DIR \\
      [--teachers='depth;ir;skeleton;depth,ir;depth,ir,skeleton'] [--epochs=N]

A table no paper has: for each teacher set P (`--teachers`: sets separated by ';', the
modalities of a set by ','), the method's steps 2-4 with `config.privileged=P`, and the
deployed model of step 4 (RGB alone at test time) over seeds (`config.seed`,
`config.seed + 1`, ...), against the RGB stream of step 1 trained alone and against the
paper's teacher, depth. `DIR/teachers.md` and `DIR/teachers.json` hold each row's mean,
95% t-interval and per-seed values, and verdicts from the paired per-seed differences
(`claims.verdict`, beside the interval's half-width: the smallest difference the run can
detect): does each set help (step 4 minus step 1 RGB > 0), and does each set other than
depth teach better than depth (step 4 minus depth's step 4 > 0).

Every stage reads one dataset: the config's builder config where it stores every modality
the sets name, else its `<name>_ir_skeleton` variant (`configs/ntu_like.py`: `ntu_like`
-> `ntu_like_ir_skeleton`); `config.modalities` is RGB and every modality of any set.

Step 1 is trained once per seed and shared by every set. Its streams are independent (no
connections, their losses add, no parameter is shared, each is selected on its own
validation accuracy: `stages.Stage.selects_each_stream`), and a step 2 takes its streams by
name from the finished `step1` (`stages.step1_sources`), never its config. So one step 1 with
the RGB stream and every teacher's stream (`config.privileged` = all of them) serves every
set: each stream is the one a step 1 with that teacher alone would train (docs/modalities.md
found the RGB stream the same in runs of four privileged sets, and the depth and infrared
streams of a depth + infrared run those of the runs with one of them). Its RGB stream is the
baseline row, its other streams the teachers' own accuracies, for reference. Per seed that
is 1 + 3 x sets trainings (`trainings_per_seed`: 16 with the five default sets, not the 20
of a step 1 per set), in these folders of `DIR/seed<s>/` (a shared stage is a symbolic link
to the folder that trained it):

| folder                 | trains              | privileged                 |
|------------------------|---------------------|----------------------------|
| shared                 | step1               | every teacher's modality   |
| depth, ir, depth+ir, ..| step2, step3, step4 | the set (step1: a link)    |

Another `--teachers` list of the same modalities adds its new sets to a folder; one that
names other modalities changes every stage's `config.modalities` (and step 1's streams),
which the trainer refuses for the stages trained before (`trainer.ConfigMismatchError`):
such a list needs another `--workdir`.
Rerunning the command skips every finished stage (`trainer.run_stage` does), so an
interrupted run resumes and a finished one trains nothing and re-prints its report.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from absl import app
from absl import flags
import ml_collections
import tensorflow_datasets as tfds

from modistill_jax import claims
from modistill_jax import cli
from modistill_jax import config_lib
from modistill_jax import metrics
from modistill_jax import modalities
from modistill_jax import runs
from modistill_jax import stages
from modistill_jax.data import pipeline
from modistill_jax.data import records

# The paper's privileged modality, which every other set is compared with.
PAPER_TEACHER = ('depth',)
# Every modality alone, then depth with infrared, and all three.
DEFAULT_TEACHERS = 'depth;ir;skeleton;depth,ir;depth,ir,skeleton'
# The folder of a seed that trains step 1, which every set's folder links.
SHARED = 'shared'
# What each set trains in its own folder.
SET_STAGES = ('step2', 'step3', 'step4')
# A builder config's variant that stores infrared and skeletons too (both builders' naming).
IR_SKELETON = '_ir_skeleton'


def trainings_per_seed(num_sets: int) -> int:
  return 1 + len(SET_STAGES) * num_sets


def set_name(teachers: tuple[str, ...]) -> str:
  """A set's folder and label: its modalities joined by '+' (as results.json names them)."""
  return '+'.join(teachers)


# MARK: the plan, checked before anything trains


def parse_teachers(text: str, deployed: str) -> tuple[tuple[str, ...], ...]:
  """`'depth;ir;depth,ir'` -> `(('depth',), ('ir',), ('depth', 'ir'))`, each set canonical.

  Raises ValueError naming `--teachers` and the value on an empty set or name, an unknown
  modality, the deployed one (it cannot teach itself), or a set or modality named twice.
  """
  sets = []
  for part in text.split(';'):
    names = tuple(n.strip() for n in part.split(','))
    if not part.strip() or '' in names:
      raise ValueError(
          f'--teachers={text!r}: an empty teacher set or modality name in {part!r}; sets are '
          "separated by ';', the modalities of a set by ',', e.g. --teachers='depth;ir;depth,ir'."
      )
    for name in names:
      if name not in modalities.ALL:
        raise ValueError(
            f'--teachers={text!r}: unknown modality {name!r} in the set {part!r}; the '
            f'modalities are {modalities.NAMES}.'
        )
      if name == deployed:
        raise ValueError(
            f'--teachers={text!r}: {name!r} is the deployed modality (what the final model '
            'sees, config.deployed), so it cannot teach it; name privileged modalities only.'
        )
    if len(set(names)) != len(names):
      raise ValueError(f'--teachers={text!r}: the set {part!r} names a modality twice.')
    teachers = modalities.ordered(names)
    if teachers in sets:
      raise ValueError(f'--teachers={text!r}: the set {set_name(teachers)!r} is named twice.')
    sets.append(teachers)
  return tuple(sets)


def every_teacher(sets: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
  """Every modality of any set, in the canonical order: step 1's privileged streams."""
  return modalities.ordered({m for teachers in sets for m in teachers})


def _registered_configs(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """The builder configs of `config.dataset` (`config.builder_module` imported), or None where
  no builder of it is registered."""
  if config.builder_module:
    try:
      importlib.import_module(config.builder_module)
    except ImportError as e:
      raise ValueError(
          f'config.builder_module={config.builder_module!r} cannot be imported ({e}).'
      ) from e
  try:
    return dict(tfds.builder_cls(config.dataset).builder_configs)
  except tfds.core.DatasetNotFoundError:
    return None


def _exists(config: ml_collections.ConfigDict, builder_config: str) -> bool:
  """Whether `config.dataset/builder_config` is built in the data dir or can be built."""
  try:
    pipeline.built_dataset_dir(
        config.dataset, data_dir=config.data_dir or None, builder_config=builder_config
    )
    return True
  except FileNotFoundError:
    pass
  if _registered_configs(config) is None:
    return False
  try:
    tfds.builder(
        f'{config.dataset}/{builder_config}',
        data_dir=config.data_dir or None,
        file_format=records.FILE_FORMAT,
    )
  except ValueError:  # no such builder config (TFDS names the close ones)
    return False
  return True


def builder_config_storing(config: ml_collections.ConfigDict, needed: tuple[str, ...]) -> str:
  """The builder config of `config.dataset` whose records hold every modality in `needed`.

  `config.builder_config` where it stores them (a builder config that says so, RGB-D alone,
  or an `_ir_skeleton` name), else its `_ir_skeleton` variant. Raises ValueError naming the
  builder config where that variant is neither built nor known to the dataset's builder.
  """
  name = config.builder_config
  registered = _registered_configs(config) or {}
  stored = getattr(registered.get(name), 'modalities', None)
  if (
      set(needed) <= set(records.MODALITIES)
      or name.endswith(IR_SKELETON)
      or (stored is not None and set(needed) <= set(stored))
  ):
    return name
  variant = f'{name}{IR_SKELETON}'
  if not _exists(config, variant):
    missing = [m for m in needed if m not in (stored or records.MODALITIES)]
    raise ValueError(
        f'--config.builder_config={name!r}: {config.dataset}/{name or "(none)"} stores no '
        f'{", ".join(missing)} frames, which the teacher sets read, and {config.dataset} has '
        f'no {variant!r} builder config that would (none built in '
        f'{config.data_dir or "the TFDS data dir"}, none its builder knows). Name a builder '
        'config that stores every modality of --teachers '
        '(docs/modalities.md#what-each-dataset-can-store).'
    )
  return variant


def plan_config(
    config: ml_collections.ConfigDict, sets: tuple[tuple[str, ...], ...]
) -> ml_collections.ConfigDict:
  """The caller's config on the dataset storing every set's modalities, step 1's privileged
  streams (every teacher), checked (the caller's config stays unchanged)."""
  config = config.copy_and_resolve_references()
  deployed = config.deployed or stages.DEFAULT_DEPLOYED
  teachers = every_teacher(sets)
  needed = modalities.ordered((deployed, *teachers))
  config.builder_config = builder_config_storing(config, needed)
  config.modalities = ','.join(needed)
  config.privileged = ','.join(teachers)
  config_lib.check(config)
  return config


def stage_config(
    config: ml_collections.ConfigDict, teachers: tuple[str, ...], seed: int, epochs: int
) -> ml_collections.ConfigDict:
  """`plan_config`'s config for a set's stages (or step 1's: every teacher), seed and epochs."""
  config = config.copy_and_resolve_references()
  config.seed = seed
  config.num_epochs = epochs
  config.privileged = ','.join(teachers)
  return config


# MARK: running


def run_seed(
    config: ml_collections.ConfigDict,
    sets: tuple[tuple[str, ...], ...],
    workdir: str,
    seed: int,
    epochs: int,
    clock: metrics.RunClock,
) -> dict[str, int]:
  """Step 1, then every set's steps 2-4, of one seed; returns stages trained and skipped."""
  root = claims.seed_dir(workdir, seed)
  counts = {'trained': 0, 'skipped': 0}

  def train(teachers, folder, stage):
    vconfig = stage_config(config, teachers, seed, epochs)
    skipped = claims.train_stage(vconfig, workdir, seed, folder, stage, clock)
    counts['skipped' if skipped else 'trained'] += 1

  (root / SHARED).mkdir(parents=True, exist_ok=True)
  train(every_teacher(sets), SHARED, 'step1')
  for teachers in sets:
    folder = set_name(teachers)
    runs.share_stage(root / folder, 'step1', root / SHARED)
    for stage in SET_STAGES:
      train(teachers, folder, stage)
  return counts


def checked_plan(
    config: ml_collections.ConfigDict,
    workdir: str,
    num_seeds: int,
    epochs: int,
    teachers: str,
) -> tuple[ml_collections.ConfigDict, tuple[tuple[str, ...], ...]]:
  """`(plan_config, the teacher sets)`; ValueError naming the flag and value on bad input.

  Reads no data and creates nothing: the command fails here before anything is built or
  trained.
  """
  claims.check_run_flags(workdir, num_seeds, epochs, 'teachers')
  sets = parse_teachers(teachers, config.deployed or stages.DEFAULT_DEPLOYED)
  return plan_config(config, sets), sets


def run_plan(
    config: ml_collections.ConfigDict,
    sets: tuple[tuple[str, ...], ...],
    workdir: str,
    num_seeds: int,
    epochs: int,
) -> dict[str, Any]:
  """Trains (or finds) every stage of every seed of `checked_plan`'s plan and writes the
  report; returns its JSON."""
  t0 = time.time()
  seeds = [config.seed + k for k in range(num_seeds)]
  cli.build_dataset(config)
  clock = metrics.RunClock(trainings_per_seed(len(sets)) * num_seeds)
  counts = {'trained': 0, 'skipped': 0}
  for seed in seeds:
    for key, value in run_seed(config, sets, workdir, seed, epochs, clock).items():
      counts[key] += value
  summary = summarize(workdir, seeds, sets, stages.roles(config.privileged, config.deployed)[0])
  summary['settings'] = {
      'dataset': config.dataset,
      'builder_config': config.builder_config,
      'protocol': config.protocol,
      'modalities': config.modalities,
      'epochs_per_stage': epochs,
      'num_train_steps': config.num_train_steps,
      'confidence': claims.CONFIDENCE,
  }
  summary['stages'] = counts
  summary['wall_seconds'] = time.time() - t0
  write_report(workdir, summary)
  return summary


def run_teachers(
    config: ml_collections.ConfigDict,
    workdir: str,
    num_seeds: int,
    epochs: int = claims.EPOCHS,
    teachers: str = DEFAULT_TEACHERS,
) -> dict[str, Any]:
  """The whole command: `checked_plan`, then `run_plan`; returns the report's JSON."""
  config, sets = checked_plan(config, workdir, num_seeds, epochs, teachers)
  return run_plan(config, sets, workdir, num_seeds, epochs)


# MARK: the report


def _comparison(text: str, better: list, worse: list, **fields) -> dict[str, Any]:
  diffs = claims.paired(better, worse)
  return {
      'comparison': text,
      **fields,
      'differences': diffs,
      **claims.interval_record(diffs),
      'verdict': claims.verdict(diffs),
  }


def summarize(
    workdir: str, seeds: list[int], sets: tuple[tuple[str, ...], ...], deployed: str
) -> dict[str, Any]:
  """The rows and verdicts from the run folders (nothing trains)."""
  title = modalities.get(deployed).title
  baseline = claims.stage_accuracies(workdir, seeds, SHARED, 'step1', deployed)
  rows = [
      {
          'row': f'step 1, {title} stream alone',
          'teachers': None,
          'per_seed': baseline,
          **claims.interval_record(baseline),
      }
  ]
  step4 = {}
  for teachers in sets:
    name = set_name(teachers)
    step4[teachers] = claims.stage_accuracies(workdir, seeds, name, 'step4', 'fused')
    rows.append(
        {
            'row': f'step 4, taught by {name}',
            'teachers': name,
            'per_seed': step4[teachers],
            **claims.interval_record(step4[teachers]),
        }
    )
  streams = []
  for m in every_teacher(sets):
    values = claims.stage_accuracies(workdir, seeds, SHARED, 'step1', m)
    streams.append(
        {
            'row': f'step 1, {modalities.get(m).title} stream',
            'modality': m,
            'per_seed': values,
            **claims.interval_record(values),
        }
    )
  verdicts = [
      _comparison(
          f'{set_name(t)} helps: step 4 taught by {set_name(t)} beats step 1 {title} alone',
          step4[t],
          baseline,
          kind='helps',
          teachers=set_name(t),
          versus=None,
      )
      for t in sets
  ]
  if PAPER_TEACHER in step4:
    depth = set_name(PAPER_TEACHER)
    verdicts += [
        _comparison(
            f'{set_name(t)} teaches better than {depth}: step 4 taught by {set_name(t)} beats '
            f'step 4 taught by {depth}',
            step4[t],
            step4[PAPER_TEACHER],
            kind='against_depth',
            teachers=set_name(t),
            versus=depth,
        )
        for t in sets
        if t != PAPER_TEACHER
    ]
  return {
      'seeds': seeds,
      'deployed': deployed,
      'teacher_sets': [set_name(t) for t in sets],
      'rows': rows,
      'teacher_streams': streams,
      'verdicts': verdicts,
  }


def verdicts_markdown(summary: dict[str, Any]) -> str:
  lines = claims.verdict_table_head('comparison')
  for v in summary['verdicts']:
    lines.append(claims.verdict_row(v['comparison'], v, f"**{v['verdict']}**"))
  return '\n'.join(lines)


def rows_markdown(rows: list[dict[str, Any]]) -> str:
  lines = ['| model | mean | 95% interval | per seed |', '|---|---|---|---|']
  for r in rows:
    seeds = ', '.join(claims.points(v) for v in r['per_seed'])
    lines.append(
        f"| {r['row']} | {claims.points(r['mean'])} | {claims.interval_text(r)} | {seeds} |"
    )
  return '\n'.join(lines)


def settings_line(summary: dict[str, Any]) -> str:
  s = summary['settings']
  return (
      f"Dataset {s['dataset']}/{s['builder_config'] or 'default'} ({s['protocol']}), seeds "
      f"{', '.join(map(str, summary['seeds']))}, {s['epochs_per_stage']} epoch(s) per stage"
      + (f" ({s['num_train_steps']} steps)" if s['num_train_steps'] > 0 else '')
      + f"; {summary['stages']['trained']} stages trained, {summary['stages']['skipped']} "
      f"found finished; wall time {metrics.format_duration(summary['wall_seconds'])}."
  )


def write_report(workdir: str, summary: dict[str, Any]) -> str:
  """Writes `teachers.json` and `teachers.md`; returns the Markdown's path."""
  root = runs.as_path(workdir)
  runs.write_json(root / 'teachers.json', summary)
  title = modalities.get(summary['deployed']).title
  no_depth = (
      []
      if set_name(PAPER_TEACHER) in summary['teacher_sets']
      else ["Depth, the paper's teacher, is not among the sets: no set is compared with it.", '']
  )
  text = '\n'.join(
      [
          f'# Which privileged modality teaches the {title}-only model best',
          '',
          settings_line(summary),
          '',
          'Verdicts come from the paired per-seed differences: the '
          f'{100 * claims.CONFIDENCE:g}% t-interval of their mean entirely above 0 holds, '
          'entirely below 0 contradicts, anything else (and a single seed) is inconclusive. '
          "The smallest detectable difference is the interval's half-width: a true difference "
          'smaller than it cannot be decided by this many seeds.',
          '',
          '## Verdicts',
          '',
          verdicts_markdown(summary),
          '',
          *no_depth,
          f'## The deployed model, {title} alone at test time (test accuracy, %)',
          '',
          rows_markdown(summary['rows']),
          '',
          "## For reference: the teachers' own step-1 streams (their modality at test time, %)",
          '',
          rows_markdown(summary['teacher_streams']),
          '',
      ]
  )
  path = root / 'teachers.md'
  path.write_text(text)
  return str(path)


def main(argv):
  del argv
  cli.quiet_logging()
  cli.use_compilation_cache(_WORKDIR.value)
  config = _CONFIG.value
  config.data_dir = _DATA_DIR.value
  try:
    config, sets = checked_plan(
        config, _WORKDIR.value, _SEEDS.value, _EPOCHS.value, _TEACHERS.value
    )
  except ValueError as e:  # bad input: one line naming the flag, no traceback
    raise SystemExit(f'error: {e}') from None
  summary = claims.until_stopped(
      lambda: run_plan(config, sets, _WORKDIR.value, _SEEDS.value, _EPOCHS.value)
  )
  print('\n' + verdicts_markdown(summary))
  print('\n' + rows_markdown(summary['rows']))
  print('\n' + settings_line(summary))
  print(f'Report: {runs.as_path(_WORKDIR.value) / "teachers.md"}')


if __name__ == '__main__':
  _CONFIG, _WORKDIR, _SEEDS, _EPOCHS, _DATA_DIR = claims.define_flags('Teachers')
  _TEACHERS = flags.DEFINE_string(
      'teachers',
      DEFAULT_TEACHERS,
      "Teacher sets, separated by ';'; the modalities of a set by ','.",
  )
  app.run(cli.with_refusals(main, *claims.REFUSALS))
