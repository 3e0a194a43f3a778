"""UWA3D Multiview Activity II, views 1, 2, 3 -> 4 (paper Table 3, UWA3DII).

As in the paper, step 1 starts from the NTU model rather than ImageNet:

  python -m modistill_jax.train --config=configs/uwa3dii.py:all --workdir=runs/uwa3dii \
      --config.init.from_workdir=runs/ntu_cs

No validation set (as the reference); other view splits: --config.protocol=views12_3.
Paper: step 1 depth 75.28%, RGB 63.67%; step 2 79.66%; step 3 71.54%; step 4 73.23%.
"""

from modistill_jax import config_lib


def get_config(stage: str = 'step1'):
  config = config_lib.base_config()
  config.dataset = 'uwa3dii'
  config.protocol = 'views123_4'
  config.builder_config = 'res224'
  return config_lib.finalize(config, stage)
