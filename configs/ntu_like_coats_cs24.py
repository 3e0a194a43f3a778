"""The demo on `synthetic_rgbd/ntu_like_coats_cs24`: 10 classes, 24 people, split by subject.

  python -m modistill_jax.train --config=configs/ntu_like_coats_cs24.py:all --workdir=DIR

Everything is configs/ntu_like_coats_no_turn_cs24.py's except the builder
config: the same split (subjects 19-24 of every view are the test split, 13-18
the validation split, 1-12 the training split, protocol `cross_subject`) on
`ntu_like_coats`' 10 classes, 'turn around' included. The candidate of the
seventh step of the calibration on the trained step-1 streams
(data_builders/synthetic_rgbd/README.md, "Calibration record"). Built on first
use, no download.
"""

from configs import ntu_like_coats_no_turn_cs24


def get_config(stage: str = 'step1'):
  config = ntu_like_coats_no_turn_cs24.get_config(stage)
  config.builder_config = 'ntu_like_coats_cs24'
  return config
