"""TFDS dataset builders of the project.

Importing `data_builders` registers every builder with TFDS, so that
`tfds.builder('ntu_rgbd')`, `tfds.data_source('nw_ucla', ...)` and the like
find them by name: `ntu_rgbd`, `nw_ucla`, `uwa3dii` (real data, built from a
manual download, see each folder's README.md) and `synthetic_rgbd` (generated).
`raw_clips.py` holds what the three real-data builders share. `custom_rgbd`
builds a user's own folder under a name the user picks, so it registers
nothing on import (`python -m data_builders.custom_rgbd build NAME ...`).
"""

# Imported for their side effect: each registers its builder with TFDS.
from data_builders import ntu_rgbd  # noqa: F401
from data_builders import nw_ucla  # noqa: F401
from data_builders import synthetic_rgbd  # noqa: F401
from data_builders import uwa3dii  # noqa: F401
