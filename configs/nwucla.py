"""Northwestern-UCLA Multiview Action 3D, views 1, 2 -> 3 (paper Table 3, NW-UCLA).

As in the paper, step 1 starts from the NTU model rather than ImageNet:

  python -m modistill_jax.train --config=configs/nwucla.py:all --workdir=runs/nwucla \
      --config.init.from_workdir=runs/ntu_cs

The reference used no validation set here, so each stage keeps its final state
(there is nothing to select on); other view splits: --config.protocol=views13_2.
Paper: step 1 depth 72.38%, RGB 85.22%; step 2 88.87%; step 3 76.30%; step 4 86.72%.
"""

from modistill_jax import config_lib


def get_config(stage: str = 'step1'):
  config = config_lib.base_config()
  config.dataset = 'nw_ucla'
  config.protocol = 'views12_3'
  config.builder_config = 'res224'
  return config_lib.finalize(config, stage)
