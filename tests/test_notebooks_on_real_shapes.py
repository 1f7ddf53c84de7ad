"""Every notebook, run top to bottom on checkpoints of real models' exact shapes.

nbval compares the committed outputs on the tiny model; learners run the same notebooks on the
real models. This runs each one on checkpoints of four of them, with 2 layers each and random bf16
weights, written once by scripts/write_synthetic_checkpoint.py into .cache/ (ignored by git) and reused:

- Meta-Llama-3-8B's widths, names and dtype (dim 4096, 32 query heads, 8 key/value heads,
  feed-forward 14336, vocabulary 128256): 3.0 GB;
- Llama 3.1 8B's: the same matrices, RoPE scaled by 8 and a context of 131,072 tokens: 3.0 GB;
- Llama 3.2 1B's (dim 2048, feed-forward 8192, RoPE scaled by 32, no output.weight: the output
  layer is the embedding table): 0.8 GB;
- Llama 3.2 3B's (dim 3072, 24 query heads for 8 key/value heads, so 3 to a group where the others
  have 4; RoPE scaled by 32; tied output): 1.2 GB.

Every matrix has the real model's shape, so the code takes the real model's paths, the compiled
one-row kernel of helpers/kernels.py included.

What is checked: each notebook runs to the end with its own assertions, finds the model it was
given, says what it should about RoPE and the output layer, and prints no warning; not the outputs
(random weights predict nothing).

- Llama 3.2 1B's again, in Hugging Face's format (config.json, two safetensors shards, tokenizer.json;
  `scripts/write_synthetic_checkpoint.py --format hf`): 0.8 GB.

`make test` runs the 3.2 1B shape alone (LLAMA3_TEST_SHAPES chooses), in a fraction of the time all
four take. It takes the 8B shape's code paths but two, which the tiny model takes under nbval: RoPE
unscaled, and an output matrix of its own. `make test-real-shapes` runs all four shapes.
"""

import dataclasses
import os
import re
from dataclasses import dataclass

import pytest

from helpers import REPO_ROOT, SHAPES, params_from_dict

from conftest import load_script

runner = load_script("scripts/run_notebooks.py")
writer = load_script("scripts/write_synthetic_checkpoint.py")


@dataclass(frozen=True)
class Case:
    name: str  # the test class's name, after "Test"
    shape: str  # a key of helpers.params.SHAPES
    folder: str  # in .cache/
    dim: int
    hidden_dim: int  # of the feed-forward
    printed: dict  # notebook name prefix -> lines it must print
    key: str = ""  # LLAMA3_TEST_SHAPES's name for it: the shape's, with "-hf" for Hugging Face's format
    hf: bool = False  # in Hugging Face's format (config.json, safetensors shards, tokenizer.json)


def case_of(key, shape, hf=False):
    """The case of one of helpers.params.SHAPES, and the lines its notebooks must print; with `hf`, in Hugging
    Face's format, whose RoPE factor config.json gives."""
    p = params_from_dict(shape.params)
    if hf:
        p = dataclasses.replace(p, rope_scaling_source="config.json's rope_scaling" if p.rope_scaling else "")
    if p.rope_scaling is None:
        rope = {"03": ["this model is a Llama 3: params.json has no use_scaled_rope, and RoPE is not scaled"]}
    else:
        rope = {"02": [f"RoPE: scaled by {p.rope_scaling_factor:g} ({p.rope_scaling_source}); context "
                       f"{p.max_seq_len:,} tokens."],
                "03": [f"this model scales RoPE by {p.rope_scaling_factor:g} ({p.rope_scaling_source})"]}
    output = "the embedding table itself (tied)" if shape.tied else "a matrix of its own"
    name = "Llama" + key.replace(".", "").replace("-", "_").upper() + ("_HF" if hf else "")
    suffix = "-hf" if hf else ""
    return Case(name, key, f"llama{key}{suffix}-2layers", p.dim, p.hidden_dim,
                rope | {"05": [f"output.weight: {output}"]}, key + suffix, hf)


# Every shape in Meta's format, and Llama 3.2 1B's in Hugging Face's too.
CASES = [case_of(key, shape) for key, shape in SHAPES.items()] + [case_of("3.2-1b", SHAPES["3.2-1b"], hf=True)]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
# tqdm's progress bar (notebook 06) is the one thing a cell may write to stderr.
PROGRESS_BAR = re.compile(r"^\s*layers:.*\|[ \d/]*$")
# Run after notebooks 07 and 08: decoding must have taken the compiled one-row kernel, for bf16
# weights (07) and for int8 weights (08).
ONE_ROW_KERNEL_CHECK = """
from helpers import kernels
print(sorted(f"{shape} {'int8' if isinstance(kind, tuple) else kind}" for shape, kind, _ in kernels.compiled()))
"""
KERNEL_KIND = {"07": "torch.bfloat16", "08": "int8"}


def one_row_kernels(case, number):
    """Matrix shapes whose one-row kernel decoding must have compiled: the feed-forward's and the output
    layer's. In int8 (notebook 08) w1 and w3 are one matrix (helpers.quantize_model joins them)."""
    up = (2 if number == "08" else 1) * case.hidden_dim
    return [f"({up}, {case.dim})", f"({case.dim}, {case.hidden_dim})", f"(128256, {case.dim})"]


# The shapes run, by their keys in helpers.params.SHAPES: `make test` runs Llama 3.2 1B's alone,
# `make test-real-shapes` all four.
SHAPES_TESTED = os.environ.get("LLAMA3_TEST_SHAPES", "3.2-1b").split(",")
if not set(SHAPES_TESTED) <= {case.key for case in CASES}:
    raise ValueError(f"LLAMA3_TEST_SHAPES={','.join(SHAPES_TESTED)}: each must be one of "
                     f"{', '.join(case.key for case in CASES)}")


def stream_lines(notebook, name):
    """The lines a notebook's cells printed to `name` (stdout or stderr)."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("name") == name:
                yield from output["text"].replace("\r", "\n").splitlines()


def check_notebook(case, path):
    number = path.name.split("_")[0]  # "03", "07b", ...
    extra = [ONE_ROW_KERNEL_CHECK] if number in KERNEL_KIND else []
    notebook, _ = runner.execute(path, REPO_ROOT / ".cache" / case.folder, extra_cells=extra)
    printed = list(stream_lines(notebook, "stdout"))
    models = {line for line in printed if line.startswith("Model: ")}
    fmt = ", Hugging Face format" if case.hf else ""
    assert models == {f"Model: .cache/{case.folder} (from LLAMA3_DIR{fmt})."}, models
    for line in case.printed.get(number, []):
        assert line in printed, "\n".join(printed)
    unexpected = [line for line in stream_lines(notebook, "stderr") if line.strip() and not PROGRESS_BAR.match(line)]
    assert not unexpected, f"{path.name} wrote to stderr (a warning?):\n" + "\n".join(unexpected)
    if extra:
        compiled = notebook.cells[-1].outputs[0]["text"]
        assert all(f"{shape} {KERNEL_KIND[number]}" in compiled for shape in one_row_kernels(case, number)), compiled


def checkpoint(case):
    """The case's 2-layer checkpoint in .cache/, written on first use."""
    folder = REPO_ROOT / ".cache" / case.folder
    if not folder.is_dir():  # the writer renames a folder only when complete
        shape = SHAPES[case.shape]
        write = writer.write_hf_checkpoint if case.hf else writer.write_checkpoint
        write(folder, shape.params | {"n_layers": 2}, tied=shape.tied)
    return case


def notebook_tests(case):
    """A class of tests: each notebook on this case's checkpoint. pytest-xdist (`--dist loadscope`) gives a
    class to one worker, so a checkpoint is written by one process, and cases can run side by side."""

    class NotebookTests:
        @pytest.fixture(scope="class")
        @classmethod
        def written_case(cls):
            return checkpoint(case)

        @pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
        def test_notebook_runs(self, written_case, path):
            check_notebook(written_case, path)

    return NotebookTests


for case in CASES:
    if case.key in SHAPES_TESTED:
        globals()[f"Test{case.name}"] = notebook_tests(case)
