"""NTU RGB+D 60, cross-subject (paper Table 1/3 column "Cross-Subject", NTU p1).

Build the data once (see data_builders/ntu_rgbd/README.md), then:

  python -m modistill_jax.train --config=configs/ntu_cs.py:all --workdir=runs/ntu_cs

or one stage at a time (step1, step2, step3, step4; step1_rgb / step1_depth
train the step-1 streams as separate jobs; hoffman is the Table 1 rows 3-5
baseline). Splits: the reference's 19 training subjects, subject 1 as
validation (2,160 clips), the 20 standard test subjects (16,560 clips).
Reference settings: Adam 1e-3, 5 clips of 5 frames per step, 40 epochs per
stage. The paper reports (cross-subject) step 1 depth 70.44%, RGB 66.52%;
step 2 79.73%; step 3 71.93%; step 4 73.42%.
"""

from modistill_jax import config_lib


def get_config(stage: str = 'step1'):
  config = config_lib.base_config()
  config.dataset = 'ntu_rgbd'
  config.protocol = 'cross_subject'
  config.builder_config = 'res224'
  return config_lib.finalize(config, stage)
