r"""`python -m data_builders.custom_rgbd build NAME --manual_dir=ROOT`: a folder -> dataset NAME.

    python -m data_builders.custom_rgbd build my_gestures --manual_dir=ROOT --data_dir=DATA \
        --config=res112

builds `DATA/my_gestures/res112/2.0.0/` from the folder ROOT (layout:
data_builders/custom_rgbd/README.md). TFDS cannot name a builder after the data
it is given, so this command makes the builder for ROOT under the name you
choose (`builder.make_builder_class`) and prepares it, config by config: without
`--config` it builds both (`res224`, the reference's frame size, and `res112`).
`--overwrite` rebuilds a config that is already built; otherwise a built one is
left as it is. An absl command like every other of the project (`--help` lists
its flags); its flags are named as `tfds build`'s.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds

from data_builders.custom_rgbd import builder

USAGE = 'python -m data_builders.custom_rgbd build NAME --manual_dir=ROOT [--data_dir=DATA]'

_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'Your folder: labels.csv, rgb/, depth/ (README.md here).'
)
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Where the dataset is written (default: TFDS default, ~/tensorflow_datasets).'
)
_CONFIG = flags.DEFINE_list(
    'config', [], 'Builder configs to build, e.g. res112 (default: every one: res224 and res112).'
)
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Delete and rebuild a config already built.')


def main(argv: list[str]) -> None:
  if len(argv) != 3 or argv[1] != 'build':
    raise app.UsageError(f'Usage: {USAGE}\n(got: {" ".join(argv[1:]) or "no arguments"})')
  if _MANUAL_DIR.value is None:
    raise app.UsageError(
        '--manual_dir=ROOT is required: the folder holding labels.csv, rgb/ and depth/.'
    )
  # The builder's progress and skip reports are logged at INFO.
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.INFO)
  if not sys.stderr.isatty():  # In a log file, progress bars are carriage-return noise.
    tfds.disable_progress_bar()
  try:
    folders = builder.build(
        argv[2], _MANUAL_DIR.value, _DATA_DIR.value, _CONFIG.value, _OVERWRITE.value
    )
  except ValueError as e:  # Includes layout.LayoutError: a table's mistake, file and line.
    raise SystemExit(f'error: {e}') from None
  for folder in folders:
    print(f'Built {argv[2]} in {folder}', flush=True)


if __name__ == '__main__':
  app.run(main)
