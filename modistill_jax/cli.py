"""What every command-line entry point does before its work."""

from __future__ import annotations

from absl import flags
from absl import logging


def quiet_logging() -> None:
  """Orbax logs every save at INFO; show warnings unless `--verbosity` is given."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
