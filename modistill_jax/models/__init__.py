"""Flax modules: the ResNet-50 stream and the multi-stream network."""

from modistill_jax.models.multistream import MultiStream
from modistill_jax.models.multistream import stage_network
from modistill_jax.models.multistream import StageNetwork
from modistill_jax.models.resnet import Stream

__all__ = ['MultiStream', 'StageNetwork', 'Stream', 'stage_network']
