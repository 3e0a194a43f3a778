"""The demo on `synthetic_rgbd/ntu_like_coats`: `ntu_like_faces` with two more RGB-only classes.

  python -m modistill_jax.train --config=configs/ntu_like_coats.py:all --workdir=workdirs/coats

Everything is configs/ntu_like.py's (the demo's tiny stream, epochs and
batches) except the dataset's builder config: `ntu_like_faces` with 'put on
raincoat' and 'take off raincoat' added, the jacket's gesture with a dark blue
coat, the candidate of the third step of the calibration on the trained step-1
streams (data_builders/synthetic_rgbd/README.md, "Calibration record"). Built on
first use, no download.
"""

from configs import ntu_like


def get_config(stage: str = 'step1'):
  config = ntu_like.get_config(stage)
  config.builder_config = 'ntu_like_coats'
  return config
