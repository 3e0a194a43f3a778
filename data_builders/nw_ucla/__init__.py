"""NW-UCLA Multiview Action 3D as a TFDS dataset; importing this registers `nw_ucla`."""

from data_builders.nw_ucla.nw_ucla_dataset_builder import Builder

__all__ = ['Builder']
