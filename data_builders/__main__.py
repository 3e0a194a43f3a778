"""`python -m data_builders build ...`: TFDS's `tfds build` command, without Apache Beam.

    python -m data_builders build data_builders/ntu_rgbd --manual_dir=RAW --data_dir=OUT

takes exactly the flags of `tfds build` and runs the same code
(`tensorflow_datasets.scripts.cli.build`). It exists because the `tfds` entry
point of TFDS 4.9.x also loads its `convert_format` command, which subclasses a
Beam class at import time, so `tfds` fails without apache-beam installed
(tensorflow/datasets#5463), and apache-beam's releases pin older protobuf and
Pillow than this project's environment. Where apache-beam is installed (the
`beam` extra, in an environment it resolves in), plain `tfds build` works the same.
"""

import sys

from absl import app
from absl import logging
import tensorflow_datasets as tfds
from tensorflow_datasets.scripts.cli import build
from tensorflow_datasets.scripts.cli import cli_utils

_parse_build_flags = cli_utils.make_flags_parser(build.Args, description=__doc__)


def _parse_flags(argv: list[str]) -> build.Args:
  if len(argv) < 2 or argv[1] != 'build':
    sys.exit(f'usage: python -m data_builders build <dataset> [tfds build flags]\n\n{__doc__}')
  return _parse_build_flags(argv[1:])


def main(args: build.Args) -> None:
  # What `tfds` does before running a command: every dataset visible, Python
  # logging at INFO (progress and the builders' reports show).
  tfds.core.visibility.set_availables([tfds.core.visibility.DatasetType.TFDS_PUBLIC,
                                       tfds.core.visibility.DatasetType.COMMUNITY_PUBLIC])
  logging.use_python_logging(quiet=True)
  logging.set_verbosity(logging.INFO)
  args.execute()


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
