# Every target does its own set-up: a fresh clone needs only Python 3.11+ and `make`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Fake CPU devices let the data-parallel tests run without an accelerator.
test: $(STAMP)
	XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
	  $(PY) -m pytest -n 2 --dist loadfile -q

clean:
	rm -rf $(VENV) .pytest_cache
