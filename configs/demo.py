"""The CPU demo: the whole method on the synthetic RGB+D dataset with a tiny stream.

  python -m modistill_jax.train --config=configs/demo.py:all --workdir=workdirs/demo

(`configs/demo.py:all,tiny`: the same run shrunk to seconds; any config takes `,tiny`.)

`make demo` runs this plus the baselines, evaluations and the report. The
dataset (data_builders/synthetic_rgbd) is built on first use, no download.
The stream has the real topology (4 blocks, temporal convs and connections at
unit 1 of each block) at width 8 with 2 units per block, on 64x64 frames.
"""

from modistill_jax import config_lib


def get_config(stage: str = 'step1'):
  config = config_lib.base_config()
  config.dataset = 'synthetic_rgbd'
  config.protocol = 'cross_view'
  # `:<stage>,tiny` reads the 32x32 'tiny' build (192 clips) instead.
  config.builder_config = 'tiny' if config_lib.is_tiny(stage) else 'default'
  config.build_if_missing = True
  config.builder_module = 'data_builders.synthetic_rgbd'
  config.batch_size = 16
  config.eval_batch_size = 64
  config.num_epochs = 3
  config.log_every_steps = 20
  config.checkpoint_every_steps = 500
  config.input.image_size = 64
  # Decoding threads in the training process: on 2 cores a worker process only
  # competes with the step for the same cores.
  config.input.worker_count = 0
  config.model.units_per_block = (2, 2, 2, 2)
  config.model.width = 8
  # The reference's decay 0.997 suits 40 epochs of NTU (~450k steps); after the
  # demo's few hundred steps its running statistics would still be mostly their
  # initial values, and evaluation (which uses them) would lag far behind.
  config.model.bn_momentum = 0.9
  return config_lib.finalize(config, stage)
