"""Bring your own RGB-D data: a folder in a documented layout -> a TFDS dataset you name.

`layout.py` reads the folder and converts its samples; `builder.py` makes the
TFDS builder; `python -m data_builders.custom_rgbd build NAME ...` runs it.
See README.md here.
"""
