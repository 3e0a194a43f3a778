# Every target does its own set-up: a fresh clone needs only Python 3.11+ and `make`.
# PYTHON: the interpreter the venv is made from, e.g. `make demo PYTHON=python3.12` where
# `python3` is older than 3.11.
# JAX_EXTRA: `cuda` (NVIDIA GPU, CUDA 12 wheels) or `tpu` (Cloud TPU VM) installs that build of
# JAX into the venv, e.g. `make demo JAX_EXTRA=cuda`; empty (the default) keeps the CPU build.
PYTHON ?= python3
JAX_EXTRA ?=
# CONSTRAINTS: the exact versions every install uses (see constraints.txt); empty: the ranges in
# pyproject.toml alone.
CONSTRAINTS ?= constraints.txt
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS := $(if $(JAX_EXTRA),[$(JAX_EXTRA)],)
# The runtime install's stamp names the JAX build, so changing JAX_EXTRA reinstalls.
INSTALLED := $(VENV)/.installed$(if $(JAX_EXTRA),-$(JAX_EXTRA),)
PIP_INSTALL := $(PY) -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)

.PHONY: test test-fast test-all test-beam test-faults test-commands coverage lint format demo pretext claims teachers install lock lock-extras clean

ifneq ($(filter-out cuda tpu,$(JAX_EXTRA)),)
$(error JAX_EXTRA must be cuda, tpu or empty, not '$(JAX_EXTRA)')
endif

# The runtime install (what `make demo` needs) and the test extras on top of it.
$(INSTALLED): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e ".$(EXTRAS)"
	touch $@

# tests/test_packaging.py builds the project with the venv's own setuptools (no isolation),
# which must be one that pyproject.toml's [build-system] accepts.
$(VENV)/.installed-test: $(INSTALLED)
	$(PIP_INSTALL) --upgrade setuptools
	$(PIP_INSTALL) -e ".[test]"
	touch $@

install: $(INSTALLED)

# The code the formatter and the linter check (their settings: pyproject.toml).
SOURCES := modistill_jax data_builders configs tests tools notebooks/results.py

lint: $(VENV)/.installed-test
	$(PY) -m pyink --check --diff --quiet $(SOURCES)
	$(PY) -m ruff check --quiet $(SOURCES)

# Rewrites the sources as `make lint` wants them (then re-pairs the results notebook with its
# script, which tests/test_demo_notebook.py checks).
format: $(VENV)/.installed-test
	$(PY) -m ruff check --quiet --fix $(SOURCES)
	$(PY) -m pyink --quiet $(SOURCES)
	$(VENV)/bin/jupytext --quiet --sync notebooks/results.py

# The tests run on fake CPU devices (so the data-parallel ones need no accelerator), on two
# workers: each test on whichever worker is free, except that the tests sharing an expensive
# fixture run on one (`--dist loadgroup` with tests/conftest.py's xdist groups).
# docs/testing.md says which target to run when.
PYTEST := XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
  $(PY) -m pytest -n 2 --dist loadgroup -q

# Lint first, then every test but the Beam conversions (marked `beam`: `make test-beam`), the
# injected faults (marked `faults`: `make test-faults`) and the documentation's commands run as
# written (marked `commands`: `make test-commands`), which CI runs after this.
test: lint
	$(PYTEST) -m 'not beam and not faults and not commands'

# While editing: the in-process tests of the model, losses, stages, configs, data and run
# folders; no command-line subprocess, multi-stage training, dataset build, injected fault or
# Beam (the tests marked `slow`, `faults` or `beam`). No lint.
test-fast: $(VENV)/.installed-test
	$(PYTEST) -m 'not slow and not beam and not faults'

# Everything: lint, `make test`'s tests, the documentation's commands, the injected faults and the
# Beam conversions, in one session.
test-all: lint
	$(PYTEST)

# The crash matrix and the other injected faults (marked `faults`): SIGKILL at every moment the
# run folder could disagree with its checkpoints, SIGTERM (with a hanging save), storage that
# refuses writes or returns garbage, processes racing for a lock or a dataset build.
test-faults: $(VENV)/.installed-test
	$(PYTEST) -m faults

# Every command of README.md, docs/*.md and the builders' READMEs, run as a reader types it, in
# its chain of commands (tests/test_documented_commands.py): about 40 subprocesses, `tfds build`s,
# three multi-stage trainings on one device.
test-commands: $(VENV)/.installed-test
	$(PYTEST) -m commands

test-beam: $(VENV)/.installed-test
	JAX_PLATFORMS=cpu $(PY) -m pytest -q -m beam data_builders

# Line coverage of `modistill_jax/` and `data_builders/` over `make test`'s, `make test-commands`'
# and `make test-faults`' tests (all but Beam), their command-line subprocesses included (settings: pyproject.toml's [tool.coverage.run]); prints the
# per-file report. Tracing slows the tests down: time them with `make test`.
coverage: $(VENV)/.installed-test
	rm -f .coverage .coverage.*
	$(PYTEST) -m 'not beam' --cov --cov-report=term

# The whole method on the synthetic dataset: see modistill_jax/demo.py. On CPU unless a
# JAX_EXTRA build is installed, which then runs it on its accelerator.
demo: $(INSTALLED)
	$(if $(JAX_EXTRA),,JAX_PLATFORMS=cpu) $(PY) -m modistill_jax.demo --workdir=workdirs/demo \
	  --data_dir=workdirs/tfds

# The pretraining that plays ImageNet's role for the synthetic miniature (modistill_jax/pretext.py):
# builds synthetic_rgbd/pretext, trains, writes a converted-ImageNet-style checkpoint to
# workdirs/pretext for `--config.init.imagenet=workdirs/pretext`; does nothing when it is there.
pretext: $(INSTALLED)
	$(if $(JAX_EXTRA),,JAX_PLATFORMS=cpu) $(PY) -m modistill_jax.pretext \
	  --config=configs/pretext.py:step1_rgb --out=workdirs/pretext --config.data_dir=workdirs/tfds

# The paper's claims over seeds on a synthetic configuration: see modistill_jax/claims.py.
# Rerunning resumes (finished stages are skipped) and prints the report again. By default the
# calibrated miniature as frozen (data_builders/synthetic_rgbd/README.md, calibration step 7):
# its config, 15 epochs per stage, both step-1 streams from `make pretext`'s checkpoint (made
# first when missing). EPOCHS: epochs per stage (empty: the command's default, claims.EPOCHS);
# PRETRAINED: the checkpoint step 1's streams start from (--config.init.imagenet; empty: from
# scratch); CLAIMS_DIR: the run folder, by default named after the config (and EPOCHS).
CLAIMS_CONFIG ?= configs/ntu_like_coats_cs24.py
SEEDS ?= 5
EPOCHS ?= 15
PRETRAINED ?= workdirs/pretext
# `make pretext` first where PRETRAINED is its checkpoint.
PRETRAINED_PREREQUISITE = $(if $(filter workdirs/pretext,$(PRETRAINED)),pretext,)
CLAIMS_DIR ?= workdirs/claims/$(basename $(notdir $(CLAIMS_CONFIG)))$(if $(EPOCHS),_$(EPOCHS)ep,)
claims: $(INSTALLED) $(PRETRAINED_PREREQUISITE)
	$(if $(JAX_EXTRA),,JAX_PLATFORMS=cpu) $(PY) -m modistill_jax.claims --config=$(CLAIMS_CONFIG) \
	  --seeds=$(SEEDS) $(if $(EPOCHS),--epochs=$(EPOCHS),) --workdir=$(CLAIMS_DIR) \
	  $(if $(PRETRAINED),--config.init.imagenet=$(PRETRAINED),) --data_dir=workdirs/tfds

# Which privileged modality teaches the RGB-only model best, over seeds (issue 27): see
# modistill_jax/teachers.py and docs/modalities.md. By default on the calibrated miniature, as
# claims. SEEDS, EPOCHS and PRETRAINED as for claims; TEACHERS: the
# teacher sets, ';' between sets and ',' within one (empty: the command's default,
# depth;ir;skeleton;depth,ir;depth,ir,skeleton); TEACHERS_DIR: the run folder, by default named
# after the config (and EPOCHS where given); a TEACHERS list of other modalities needs another one.
# Rerunning resumes (finished stages are skipped) and prints the report again.
TEACHERS_CONFIG ?= configs/ntu_like_coats_cs24.py
TEACHERS ?=
TEACHERS_DIR ?= workdirs/teachers/$(basename $(notdir $(TEACHERS_CONFIG)))$(if $(EPOCHS),_$(EPOCHS)ep,)
teachers: $(INSTALLED) $(PRETRAINED_PREREQUISITE)
	$(if $(JAX_EXTRA),,JAX_PLATFORMS=cpu) $(PY) -m modistill_jax.teachers \
	  --config=$(TEACHERS_CONFIG) --seeds=$(SEEDS) $(if $(EPOCHS),--epochs=$(EPOCHS),) \
	  $(if $(TEACHERS),--teachers='$(TEACHERS)',) --workdir=$(TEACHERS_DIR) \
	  $(if $(PRETRAINED),--config.init.imagenet=$(PRETRAINED),) --data_dir=workdirs/tfds

# Re-resolves pyproject.toml's ranges in a scratch venv and writes what it installed (runtime and
# test extras, which hold `build` and `tensorboard`) to constraints.txt, keeping the file's leading
# comment; then `lock-extras`. Commit the result together with the README numbers measured with it.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools
	$(LOCK_VENV)/bin/python -m pip install --quiet -e ".[test]"
	{ grep '^#' constraints.txt || true; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | sort -f; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	$(MAKE) lock-extras

# Pins the extras that are not installed here (GPU and TPU wheels, Beam's Google Cloud packages,
# JupyterLab): pip resolves them together with the test extras without installing anything
# (`--dry-run --report`: package metadata only), keeping every pin constraints.txt already has;
# tools/pin_report.py adds the new ones. After `make lock`, every extra is pinned in one consistent
# set; alone, it pins a new extra without moving any existing pin.
LOCK_EXTRAS := test,cuda,tpu,dataflow,notebook
lock-extras:
	test -x $(LOCK_VENV)/bin/python || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet --dry-run --ignore-installed -c constraints.txt \
	  --report $(LOCK_VENV)/report.json -e ".[$(LOCK_EXTRAS)]"
	$(LOCK_VENV)/bin/python tools/pin_report.py $(LOCK_VENV)/report.json constraints.txt \
	  > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) $(LOCK_VENV) .pytest_cache workdirs .coverage .coverage.*
