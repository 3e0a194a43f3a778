"""The demo on `synthetic_rgbd/ntu_like_faces`: `ntu_like` whose motions in depth show more in RGB.

  python -m modistill_jax.train --config=configs/ntu_like_faces.py:all --workdir=workdirs/faces

Everything is configs/ntu_like.py's (the demo's tiny stream, epochs and
batches) except the dataset's builder config: `ntu_like` with heads that have a
face and hair, a higher camera and longer walks, the candidate of the
calibration on the trained step-1 streams
(data_builders/synthetic_rgbd/README.md, "Calibration record"). Built on first
use, no download.
"""

from configs import ntu_like


def get_config(stage: str = 'step1'):
  config = ntu_like.get_config(stage)
  config.builder_config = 'ntu_like_faces'
  return config
