"""UWA3D Multiview Activity II as a TFDS dataset; importing this registers `uwa3dii`."""

from data_builders.uwa3dii.uwa3dii_dataset_builder import Builder

__all__ = ['Builder']
