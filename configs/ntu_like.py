"""The demo on the NTU-like synthetic configuration: RGB a few points below depth.

  python -m modistill_jax.train --config=configs/ntu_like.py:all --workdir=workdirs/ntu_like

Everything is the demo's (configs/demo.py: the same tiny stream, epochs and
batches) except the dataset's builder config, `synthetic_rgbd/ntu_like`: the
same size as the demo's `default` (so an epoch takes as long), but classes of
which some are told apart only in RGB, some only in depth and most in both
(data_builders/synthetic_rgbd/README.md), as in NTU RGB+D where the two
modalities are close and complementary. Built on first use, no download.
"""

from configs import demo


def get_config(stage: str = 'step1'):
  config = demo.get_config(stage)
  config.builder_config = 'ntu_like'
  return config
