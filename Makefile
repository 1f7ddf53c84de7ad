# make run   - set up, then run the course on the embedded tiny model
# make test  - set up, then run every test (including all notebooks under nbval)
#
# Inside an active virtualenv or conda environment, that environment is used;
# otherwise a .venv is created here. Where torch is missing, the CPU build
# torch==2.13.0 is installed first (a bare `torch` would pull a multi-GB CUDA
# build on Linux). Pass TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# to choose the CPU build on a machine whose pip does not find it by itself.

ifneq ($(VIRTUAL_ENV)$(CONDA_PREFIX),)
PYTHON ?= python
else
PYTHON ?= .venv/bin/python
endif
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PIP = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: install install-test run test tiny-model demo

.venv/bin/python:
	python3 -m venv .venv

install: $(if $(VIRTUAL_ENV)$(CONDA_PREFIX),,.venv/bin/python)
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) $(TORCH_PIP_ARGS) "$(TORCH)"
	$(PIP) -r requirements.txt

install-test: install
	$(PIP) -r requirements-test.txt

run: install
	$(PYTHON) -m helpers "the answer to the ultimate question of life, the universe, and everything is "

test: install-test
	$(PYTHON) -m pytest

tiny-model: install
	$(PYTHON) scripts/train_tiny_model.py
