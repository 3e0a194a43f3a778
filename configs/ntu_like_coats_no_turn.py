"""The demo on `synthetic_rgbd/ntu_like_coats_no_turn`: `ntu_like_coats` without 'turn around'.

  python -m modistill_jax.train --config=configs/ntu_like_coats_no_turn.py:all --workdir=DIR

Everything is configs/ntu_like.py's (the demo's tiny stream, epochs and
batches) except the dataset's builder config: `ntu_like_coats` (`ntu_like_faces`
with a raincoat put on or taken off) without the 'turn around' class, which the
trained RGB stream hardly told; the candidate of the fourth step of the
calibration on the trained step-1 streams (data_builders/synthetic_rgbd/README.md,
"Calibration record"). Built on first use, no download.
"""

from configs import ntu_like


def get_config(stage: str = 'step1'):
  config = ntu_like.get_config(stage)
  config.builder_config = 'ntu_like_coats_no_turn'
  return config
