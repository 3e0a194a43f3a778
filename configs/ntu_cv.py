"""NTU RGB+D 60, cross-view (paper Table 1/3 column "Cross-View", NTU p2; Tables 2 and 4).

  python -m modistill_jax.train --config=configs/ntu_cv.py:all --workdir=runs/ntu_cv

Splits: cameras 2 and 3 train, the reference's seeded 31-per-class validation
draw from them (1,860 clips), camera 1 test (18,960 clips). The paper reports
(cross-view) step 1 depth 75.16%, RGB 71.39%; step 2 81.43%; step 3 74.10%;
step 4 77.21%. Table 4 (RGB privileged): add `--config.privileged=rgb`.
"""

from modistill_jax import config_lib


def get_config(stage: str = 'step1'):
  config = config_lib.base_config()
  config.dataset = 'ntu_rgbd'
  config.protocol = 'cross_view'
  config.builder_config = 'res224'
  return config_lib.finalize(config, stage)
