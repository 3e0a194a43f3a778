"""Procedural RGB+D actions as a TFDS dataset; importing this registers `synthetic_rgbd`."""

from data_builders.synthetic_rgbd.synthetic_rgbd_dataset_builder import Builder

__all__ = ['Builder']
