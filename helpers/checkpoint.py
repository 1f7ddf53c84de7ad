"""Reading Meta's checkpoint file, consolidated.00.pth, and checking its tensors against params.json.

The checkpoint is memory-mapped: tensors stay in the file (and the OS page
cache) in bfloat16, and only what a computation touches is read.
"""

import pickle
import re
import zipfile
from pathlib import Path

import torch

from .errors import LlamaError
from .params import expected_shapes, missing_layer

WEIGHT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def checkpoint_file(model_dir):
    """The single `consolidated.*.pth` file of `model_dir`."""
    files = sorted(Path(model_dir).glob("consolidated.*.pth"))
    if not files:
        raise LlamaError(
            f"No consolidated.00.pth in {model_dir}. Download it (notebook 00) or point to the folder "
            "that has it (for meta-llama/Meta-Llama-3-8B, the `original/` subfolder)."
        )
    if len(files) > 1:
        raise LlamaError(
            f"{model_dir} holds {len(files)} checkpoint shards; this course loads single-file checkpoints "
            "such as Meta-Llama-3-8B's. The 70B model is split across 8 files and needs 140 GB anyway."
        )
    check_link(files[0])
    if files[0].is_dir():
        raise LlamaError(
            f"{files[0]} is a directory, not a file: Meta's checkpoint is a single file (16 GB for the 8B). "
            "Delete or rename the directory, then download the file again (notebook 00) or copy it there."
        )
    return files[0]


def check_link(path):
    """A LlamaError if `path` is a link to nothing: a file of Hugging Face's cache whose data was deleted."""
    if path.is_symlink() and not path.exists():
        raise LlamaError(
            f"{path} is a link to {path.resolve()}, which does not exist: in Hugging Face's cache, the data it "
            "points to (under blobs/) was deleted, or the folder was copied without it. Download the model again "
            "(notebook 00)."
        )


def load_weights(model_dir, params):
    """Memory-map the checkpoint and check every tensor against `params`.

    Returns a dict of tensors whose storage is the file itself: nothing is
    copied into memory until a computation reads it.
    """
    path = checkpoint_file(model_dir)
    try:
        weights = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's own message suggests weights_only=False: the one thing not to do with this file.
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise LlamaError(
            f"{path} holds objects other than tensors, and was refused: it asks for "
            f"{found[1] if found else 'a Python object'}, and loading it fully could run code hidden in "
            "the file. Only load checkpoints from Meta or this course."
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        if "mmap can only be used" in str(error):  # torch found no zip file at all
            with open(path, "rb") as f:
                head = f.read(24)
            what = f"its first bytes are {head!r}" if head else "it is empty"
            raise LlamaError(
                f"{path} is not a zip-format PyTorch checkpoint like Meta's consolidated.00.pth "
                f"({what}): an interrupted download, "
                "an old torch.save file, a plain pickle, or another file saved under this name. "
                "Download Meta's original/consolidated.00.pth again."
            ) from None
        raise LlamaError(
            f"{path} ({path.stat().st_size:,} bytes) cannot be read as a PyTorch checkpoint: "
            f"{_first_line(error)}. It is probably truncated (an interrupted download): "
            "delete it and download it again."
        ) from None
    if not isinstance(weights, dict):
        raise LlamaError(f"{path} holds a {type(weights).__name__}, not a dictionary of named tensors.")
    # Llama 3.2 1B and 3B have no output.weight: their output layer is the embedding table itself
    # ("tied" weights). Share the tensor, never copy it (a copy would be 0.5 to 0.8 GB for nothing).
    if "output.weight" not in weights and "tok_embeddings.weight" in weights:
        weights["output.weight"] = weights["tok_embeddings.weight"]
    check_weights(weights, params, source=str(path))
    return weights


def check_weights(weights, params, source="the checkpoint"):
    """Raise a clear error if names or shapes disagree with params.json."""
    layer = missing_layer(weights, params.n_layers)
    if layer is not None:
        raise LlamaError(
            f"{source} has no tensor 'layers.{layer}.attention.wq.weight' (nothing of layer {layer}), though "
            f"params.json says n_layers={params.n_layers}. The checkpoint and params.json come from different "
            "models, or the file is incomplete."
        )
    expected = expected_shapes(params)
    missing = [name for name in expected if name not in weights]
    if missing:
        raise LlamaError(
            f"{source} has no tensor {missing[0]!r} ({len(missing)} missing in all), though params.json "
            f"says n_layers={params.n_layers}. The checkpoint and params.json come from different models, "
            "or the file is incomplete."
        )
    unexpected = [name for name in weights if name not in expected]
    if unexpected:
        layers = [int(found[1]) for name in unexpected if (found := re.match(r"layers\.(\d+)\.", name))]
        if layers and max(layers) >= params.n_layers:
            why = f"params.json says n_layers={params.n_layers}, but the checkpoint has {max(layers) + 1} layers."
        else:
            why = "The checkpoint and params.json come from different models, or the file holds other tensors."
        named = ", ".join(map(repr, unexpected[:3])) + (", ..." if len(unexpected) > 3 else "")
        raise LlamaError(
            f"{source} holds {len(unexpected)} tensor{'s' if len(unexpected) != 1 else ''} that params.json does "
            f"not explain ({named}). {why} "
            "Computing with part of the weights would give wrong output without a warning: take params.json "
            "from the same download as the checkpoint."
        )
    for name, shape in expected.items():
        tensor = weights[name]
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise LlamaError(f"{source}: {name!r} is not a floating-point tensor.")
        if tensor.dtype not in WEIGHT_DTYPES:  # float8 needs scales this file does not have; float64 is no Llama's
            raise LlamaError(f"{source}: {name!r} is stored as {tensor.dtype}; the course reads bf16, fp16 or fp32 "
                             "weights, as Meta's checkpoints hold (bf16).")
        if tuple(tensor.shape) != shape:
            raise LlamaError(
                f"{source}: {name!r} has shape {tuple(tensor.shape)}, but params.json implies {shape}. "
                "params.json and the checkpoint come from different models."
            )


def _first_line(error):
    """The first sentence of an error message: torch adds paragraphs of advice after it."""
    text = str(error).strip()
    return text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(error).__name__
