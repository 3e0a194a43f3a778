# Every target does its own set-up: a fresh clone needs only Python 3.11+ and `make`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test demo install clean

# The runtime install (what `make demo` needs) and the test extras on top of it.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# tests/test_packaging.py builds the project with the venv's own setuptools (no isolation),
# which must be one that pyproject.toml's [build-system] accepts.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet --upgrade setuptools
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

# Fake CPU devices let the data-parallel tests run without an accelerator.
test: $(VENV)/.installed-test
	XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
	  $(PY) -m pytest -n 2 --dist loadfile -q

# The whole method on the synthetic dataset, on CPU: see modistill_jax/demo.py.
demo: $(VENV)/.installed
	JAX_PLATFORMS=cpu $(PY) -m modistill_jax.demo --workdir=workdirs/demo --data_dir=workdirs/tfds

clean:
	rm -rf $(VENV) .pytest_cache workdirs
