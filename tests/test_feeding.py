"""The dataset built on first use is found through the module the config names."""

import pytest

from modistill_jax import config_lib
from modistill_jax.data import feeding


def building_config(**overrides):
  config = config_lib.base_config()
  config.build_if_missing = True
  config.update(overrides)
  return config


def test_a_build_without_a_builder_module_names_the_key():
  with pytest.raises(ValueError, match=r"config\.builder_module is empty.*'ntu_rgbd'"):
    feeding.ensure_dataset(building_config())


def test_a_builder_module_that_cannot_be_imported_is_named():
  config = building_config(builder_module='data_builders.no_such_builder')
  with pytest.raises(ValueError, match=r"builder_module='data_builders\.no_such_builder' cannot"):
    feeding.ensure_dataset(config)


def test_a_builder_module_that_does_not_register_the_dataset_is_named():
  config = building_config(builder_module='json', dataset='not_a_registered_dataset')
  with pytest.raises(ValueError, match=r"builder_module='json' does not register.*not_a_regis"):
    feeding.ensure_dataset(config)


def test_no_build_asked_imports_nothing():
  config = building_config(build_if_missing=False, builder_module='data_builders.no_such_builder')
  assert feeding.ensure_dataset(config) is None
