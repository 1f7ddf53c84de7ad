"""An int8 model as one safetensors file (notebook 08): `save_int8` writes it, `load_int8` memory-maps it.

The file holds the model's tensors, its params (as params.json would) and a format tag. An
`Int8Weight` named `name` is stored as `name` (int8) and `name.scales` (float32); matrices
`quantize_model` joined are stored once, joined, under their JOINED name.
"""

import json
from pathlib import Path

import torch

from .errors import LlamaError
from .hf_format import safetensors_extent
from .int8 import Int8Weight, split_rows, whole_of
from .model import Llama, tokenizer_for
from .params import JOINED, expected_shapes, missing_layer, params_from_dict, params_to_dict

FORMAT = "llama3-from-scratch int8"
DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.int8)
RESAVE = "Save it again with helpers.save_int8, or copy the whole file again."


def save_int8(model, path):
    """Write a quantised model to `path`, a safetensors file; returns the path."""
    from safetensors.torch import save_file

    tensors, stored_joined = {}, set()
    for i in range(model.params.n_layers):
        for joined, parts in JOINED.items():
            names = [f"layers.{i}.{part}" for part in parts]
            whole = whole_of([model.weights[name] for name in names])
            if whole is not None:
                tensors[f"layers.{i}.{joined}"], tensors[f"layers.{i}.{joined}.scales"] = whole.values, whole.scales
                stored_joined.update(names)
    for name, w in model.weights.items():
        if name in stored_joined:
            continue
        if isinstance(w, Int8Weight):
            tensors[name], tensors[name + ".scales"] = w.values, w.scales
        elif not (name == "output.weight" and model.tied_output):  # a tied table is stored once
            tensors[name] = w
    metadata = {"format": FORMAT, "params": json.dumps(params_to_dict(model.params))}
    path = Path(path)
    if path.is_dir():
        raise LlamaError(f"{path} is a folder: give save_int8 a file name, such as {path / 'model-int8.safetensors'}.")
    if not path.parent.is_dir():
        raise LlamaError(f"The folder {path.parent} does not exist: create it first, or save elsewhere.")
    partial = path.with_name(path.name + ".partial")  # renamed only when complete
    try:
        save_file({name: t.contiguous() for name, t in tensors.items()}, partial, metadata=metadata)
    except BaseException:  # a full disk, Ctrl-C: nothing half-written is left
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return path


def unreadable(path):
    """Why safetensors could not read `path`, for a LlamaError: not safetensors, header not JSON, truncated."""
    size, head, length, end = safetensors_extent(path)
    if length is None:
        return (f"{path} is not a safetensors file ({size:,} bytes; it starts with {head!r}). "
                f"An int8 model is the file helpers.save_int8 writes. {RESAVE}")
    if end is None:
        return f"{path} is not a safetensors file: its header is not JSON. {RESAVE}"
    if 8 + length + end > size:
        return (f"{path} is truncated: its header describes {8 + length + end:,} bytes, the file holds "
                f"{size:,}. The save or the copy was interrupted. {RESAVE}")
    return f"{path} is not a readable safetensors file. {RESAVE}"


def read_tensors(path):
    """The file's tensors, memory-mapped (copy-on-write), and its metadata; a LlamaError for anything else."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise LlamaError(f"{path} is a safetensors file, but not an int8 model saved by helpers.save_int8 "
                                 f"(its metadata has no format {FORMAT!r}). Quantise the model with quantize_model, "
                                 "then save_int8.")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except SafetensorError:
        raise LlamaError(unreadable(path)) from None
    for name, t in tensors.items():
        if t.dtype not in DTYPES:
            raise LlamaError(f"{path}: {name!r} is stored as {t.dtype}, which no int8 model holds. "
                             "Save the model again with helpers.save_int8.")
    return tensors, metadata


def load_int8(path):
    """Memory-map an int8 model written by `save_int8`: a `Llama` whose matrices are `Int8Weight`s.

    Nothing is copied: each tensor is a view of the file, read from disk when a computation touches it.
    A file that is not one, or is truncated, is a LlamaError saying so.
    """
    path = Path(path)
    if not path.is_file():
        raise LlamaError(f"{path} does not exist or is not a file. Write it first with helpers.save_int8.")
    tensors, metadata = read_tensors(path)
    try:
        raw = json.loads(metadata["params"])
    except (KeyError, json.JSONDecodeError):
        raise LlamaError(f"{path} has no readable params in its metadata (the model's params.json, which "
                         f"helpers.save_int8 writes there). {RESAVE}") from None
    params = params_from_dict(raw, source=f"{path}'s params")
    if (layer := missing_layer(tensors, params.n_layers)) is not None:
        raise LlamaError(f"{path} holds nothing of layer {layer}, though its params say n_layers={params.n_layers}. "
                         f"{RESAVE}")
    shapes = expected_shapes(params)
    parts = {}  # the matrices stored joined (see save_int8), as views of the joined one's rows
    for i in range(params.n_layers):
        for joined, names in JOINED.items():
            joined, names = f"layers.{i}.{joined}", [f"layers.{i}.{name}" for name in names]
            if joined in tensors:
                rows = [shapes[name][0] for name in names]
                whole = Int8Weight(tensors.pop(joined), tensors.pop(joined + ".scales", None))
                if whole.scales is None or whole.shape[0] != sum(rows):
                    raise LlamaError(f"{path}: {joined!r} should hold the {sum(rows)} rows of {', '.join(names)}, "
                                     f"but holds {whole.shape[0]}, or has no scales. The file was not written by "
                                     "helpers.save_int8, or was changed since: save it again.")
                parts |= dict(zip(names, split_rows(whole, rows), strict=True))
    weights = {}
    for name, shape in shapes.items():
        if name == "output.weight" and name not in tensors:
            weights[name] = tensors.get("tok_embeddings.weight")  # tied
        elif name in parts:
            weights[name] = parts[name]
        elif name + ".scales" in tensors:
            weights[name] = Int8Weight(tensors.pop(name), tensors.pop(name + ".scales"))
        else:
            weights[name] = tensors.pop(name, None)
        w = weights[name]
        if w is None or tuple(w.shape) != shape or (isinstance(w, Int8Weight) and (
                w.values.dtype != torch.int8 or w.scales.dtype != torch.float32 or w.values.shape[1] %
                w.scales.shape[1] or w.scales.shape[0] != shape[0])):
            found = "missing" if w is None else f"of shape {tuple(w.shape)}"
            raise LlamaError(f"{path}: {name!r} is {found} or stored wrongly, but its params imply {shape}. "
                             "The file was not written by helpers.save_int8, or was changed since: save it again.")
    if tensors:
        raise LlamaError(f"{path} holds tensors its params do not explain ({', '.join(list(tensors)[:3])}). "
                         "Save the model again with helpers.save_int8.")
    return Llama(path, params, weights, tokenizer_for(path.parent, params, f"{path}'s params"))
