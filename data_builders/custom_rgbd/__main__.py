"""`python -m data_builders.custom_rgbd build NAME --manual_dir=ROOT ...`: a folder -> dataset NAME.

    python -m data_builders.custom_rgbd build my_gestures --manual_dir=ROOT --data_dir=DATA \
        --config=res112

builds `DATA/my_gestures/res112/2.0.0/` from the folder ROOT (layout:
data_builders/custom_rgbd/README.md). It takes exactly the flags of `tfds build`
(`tfds build`), with the dataset given by the name you
choose instead of a builder's path: TFDS cannot name a builder after the data
it is given, so this command makes the builder for ROOT under that name
(`builder.make_builder_class`) and then runs TFDS's build on it. Without
`--config` TFDS builds every config (`res224` and `res112`).
"""

import dataclasses
import sys

from absl import app
from absl import logging
import tensorflow_datasets as tfds
from tensorflow_datasets.scripts.cli import build
from tensorflow_datasets.scripts.cli import cli_utils

from data_builders.custom_rgbd import builder


def parse_flags(argv: list[str]) -> build.Args:
  """`tfds build`'s flags, and only those.

  TFDS's own parser also accepts every absl flag defined in the process; this
  one does not, so the command means the same whatever else was imported (an
  absl `--data_dir` defined elsewhere would clash with TFDS's).
  """
  if len(argv) < 2 or argv[1] != 'build':
    sys.exit(
        f'usage: python -m data_builders.custom_rgbd build NAME --manual_dir=ROOT '
        f'[tfds build flags]\n\n{__doc__}'
    )
  parser = cli_utils.ArgumentParser(
      description=__doc__, allow_abbrev=False, inherited_absl_flags=None
  )
  parser.add_arguments(build.Args, dest='args')
  return parser.parse_args(argv[2:]).args


def main(args: build.Args) -> None:
  names = args.positional_datasets + args.datasets
  if len(names) != 1:
    sys.exit(f'Give exactly one dataset name to build, got {names}.')
  if args.paths.manual_dir is None:
    sys.exit('--manual_dir=ROOT is required: the folder holding labels.csv, rgb/ and depth/.')
  root = args.paths.manual_dir
  if args.paths.add_name_to_manual_dir:
    root = root / names[0]
  try:
    builder.make_builder_class(names[0], root)
  except ValueError as e:  # Includes layout.LayoutError: a table's mistake, file and line.
    sys.exit(f'error: {e}')
  # With `imports` set, TFDS looks the name up among registered builders only,
  # never as a path (a folder named like the dataset in the current directory).
  args = dataclasses.replace(
      args, generation=dataclasses.replace(args.generation, imports=builder.__name__)
  )
  # What the `tfds` command does before running `build`: every dataset visible,
  # Python logging at INFO (progress and the builder's reports show).
  tfds.core.visibility.set_availables(
      [
          tfds.core.visibility.DatasetType.TFDS_PUBLIC,
          tfds.core.visibility.DatasetType.COMMUNITY_PUBLIC,
      ]
  )
  logging.use_python_logging(quiet=True)
  logging.set_verbosity(logging.INFO)
  args.execute()


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
