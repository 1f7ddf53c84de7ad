"""Every notebook, run top to bottom on a checkpoint of Meta-Llama-3-8B's exact shapes.

nbval compares the committed outputs on the tiny model; learners run the same notebooks on the
8B. This runs each one on Meta-Llama-3-8B's widths, names and bf16 dtype (dim 4096, 32 query heads,
8 key/value heads, feed-forward 14336, vocabulary 128256) with 2 of its 32 layers, random weights:
`scripts/write_synthetic_checkpoint.py --layers 2`, 3.0 GB, written once into .cache/ (ignored by
git) and reused. Every matrix has the 8B's shape, so the code takes the 8B's paths, the compiled
one-row kernel of helpers/compute.py included. What is checked: each notebook runs to the end with
its own assertions, finds the model it was given, and prints no warning; not the outputs (random
weights predict nothing).
"""

import re

import pytest
from conftest import load_script

from helpers import REPO_ROOT

runner = load_script("scripts/run_notebooks.py")
writer = load_script("scripts/write_synthetic_checkpoint.py")

SHAPE_DIR = REPO_ROOT / ".cache" / "llama3-8b-2layers"
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# tqdm's progress bar (notebook 06) is the one thing a cell may write to stderr.
PROGRESS_BAR = re.compile(r"^\s*layers:.*\|[ \d/]*$")
# Run after notebook 07: a decode step of the 8B's shapes must have taken the compiled one-row kernel.
ONE_ROW_KERNEL_CHECK = """
import helpers.compute
assert helpers.compute._fused not in (None, False), "the compiled one-row kernel was never built"
print(sorted(shape for shape, _, _ in helpers.compute._fused_shapes))
"""


@pytest.fixture(scope="module")
def shape_dir():
    if not (SHAPE_DIR / "consolidated.00.pth").is_file():  # the writer renames a folder only when complete
        writer.write_checkpoint(SHAPE_DIR, writer.LLAMA3_8B_PARAMS | {"n_layers": 2})
    return SHAPE_DIR


def stream_lines(notebook, name):
    """The lines a notebook's cells printed to `name` (stdout or stderr)."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("name") == name:
                yield from output["text"].replace("\r", "\n").splitlines()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_the_8b_shape(shape_dir, path):
    extra = [ONE_ROW_KERNEL_CHECK] if path.name.startswith("07") else []
    notebook, _ = runner.execute(path, shape_dir, extra_cells=extra)
    models = {line for line in stream_lines(notebook, "stdout") if line.startswith("Model: ")}
    assert models == {"Model: .cache/llama3-8b-2layers (from LLAMA3_DIR)."}, models
    unexpected = [line for line in stream_lines(notebook, "stderr") if line.strip() and not PROGRESS_BAR.match(line)]
    assert not unexpected, f"{path.name} wrote to stderr (a warning?):\n" + "\n".join(unexpected)
    if extra:
        printed = notebook.cells[-1].outputs[0]["text"]
        assert "(14336, 4096)" in printed and "(128256, 4096)" in printed, printed
