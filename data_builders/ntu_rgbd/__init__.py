"""NTU RGB+D 60 as a TFDS dataset; importing this registers `ntu_rgbd`."""

from data_builders.ntu_rgbd.ntu_rgbd_dataset_builder import Builder

__all__ = ['Builder']
