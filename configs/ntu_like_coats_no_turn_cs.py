"""The demo on `synthetic_rgbd/ntu_like_coats_no_turn_cs`: step 4's clips split by subject.

  python -m modistill_jax.train --config=configs/ntu_like_coats_no_turn_cs.py:all --workdir=DIR

Everything is configs/ntu_like_coats_no_turn.py's except the split: the same
clips, held out by subject instead of by camera, read with the protocol
`cross_subject` (subjects 7-8 of every view are the test split, 5-6 the
validation split, 1-4 the training split), as NTU RGB+D's cross-subject
benchmark, which the paper's Table 1 reports. The candidate of the fifth step of
the calibration on the trained step-1 streams (data_builders/synthetic_rgbd/README.md,
"Calibration record"). Built on first use, no download.
"""

from configs import ntu_like_coats_no_turn


def get_config(stage: str = 'step1'):
  config = ntu_like_coats_no_turn.get_config(stage)
  config.builder_config = 'ntu_like_coats_no_turn_cs'
  config.protocol = 'cross_subject'
  return config
