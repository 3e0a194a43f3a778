"""Your own RGB-D dataset, built by `python -m data_builders.custom_rgbd build NAME ...`.

  python -m modistill_jax.train --config=configs/custom.py:all --workdir=runs/NAME \
      --config.dataset=NAME --config.data_dir=DATA --config.builder_config=res112

`--config.dataset` is required. The splits are labels.csv's (protocol
`csv_splits`) and the classes those of the built dataset. Without validation
rows each stage keeps its final state, as for NW-UCLA; with them, the state
best on validation. Start from ImageNet (`--config.init.imagenet=DIR`) or
from a trained NTU run (`--config.init.from_workdir=runs/ntu_cs`) when you can:
a small dataset trains poorly from scratch.
"""

from modistill_jax import config_lib
from modistill_jax.data import protocols


def get_config(stage: str = 'step1'):
  config = config_lib.base_config()
  config.dataset = ''  # the name given at build: --config.dataset=NAME (required)
  config.protocol = protocols.CSV_SPLITS
  config.builder_config = 'res224'
  return config_lib.finalize(config, stage)
