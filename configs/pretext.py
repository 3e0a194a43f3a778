"""The pretraining that plays ImageNet's role for the synthetic miniature.

  python -m modistill_jax.pretext --config=configs/pretext.py --out=workdirs/pretext

One RGB stream of the demo's size (configs/demo.py: width 8, 2 units per
block, 64x64 frames) trained on `synthetic_rgbd/pretext`: clips with actors and
rooms that no action split uses, labelled by the hue of the actor's shirt, never
by an action (data_builders/synthetic_rgbd/README.md). The result is saved as a
converted ImageNet checkpoint, so `--config.init.imagenet=workdirs/pretext`
starts both step-1 streams from it, as both start from one ImageNet ResNet-50 on
NTU. `configs/pretext.py:step1_rgb,tiny` is the same at the tests' size.
"""

from configs import demo
from modistill_jax import config_lib

# Epochs of the pretext training (1,344 training clips each).
EPOCHS = 10


def get_config(stage: str = 'step1_rgb'):
  config = demo.get_config(stage)
  config.builder_config = 'pretext_tiny' if config_lib.is_tiny(stage) else 'pretext'
  config.num_epochs = EPOCHS
  return config
