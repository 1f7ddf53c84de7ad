"""Int8 weights (notebook 08): each row cut into groups, each group stored as int8 numbers and one float32 scale.

A group's scale is its largest magnitude divided by 127, so that its numbers, divided by the
scale and rounded, fall in -127..127. Multiplying back gives each weight to within half a scale:
the rounding error of a group is at most its largest magnitude / 254. Small groups follow the
weights more closely, at the cost of more scales: one float32 per group is 32 / group_size bits
per weight on top of the 8.

`helpers.linear` multiplies by an `Int8Weight` as it does by a bf16 matrix: a block of rows at
a time, converted into float32, for a prompt; the compiled one-row kernel for a decoded token
(helpers/compute.py). `quantize_model` turns a model's matrices into int8, joining those that
multiply the same row (`join`); `save_int8` and `load_int8` write and memory-map such a model as
one safetensors file.
"""

import dataclasses
import json
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import expected_shapes, params_from_dict
from .errors import LlamaError
from .model import Llama, load_tokenizer

FORMAT = "llama3-from-scratch int8"
# Rows quantised at a time: a float32 copy of a whole matrix would be 2.1 GB for the 8B's output layer.
ROWS_AT_A_TIME = 4096


@dataclass
class Int8Weight:
    """A matrix (out, in) as int8 `values` (out, in) and float32 `scales` (out, in / group_size).

    `part_of` is set on a matrix stored as rows of a larger one (see `join`): that Int8Weight, and
    the first of its rows that are this one's.
    """

    values: torch.Tensor
    scales: torch.Tensor
    part_of: tuple = field(default=None, repr=False, compare=False)

    @property
    def shape(self):
        return self.values.shape

    @property
    def group_size(self):
        return self.values.shape[1] // self.scales.shape[1]

    def numel(self):
        return self.values.numel()

    @property
    def nbytes(self):
        return self.values.nbytes + self.scales.nbytes

    def dequantize(self, start=0, stop=None, out=None):
        """Rows start:stop in float32: each int8 number times its group's scale (into `out` when given)."""
        values, scales = self.values[start:stop], self.scales[start:stop]
        if out is None:
            out = torch.empty(values.shape, dtype=torch.float32)
        # Convert, then scale in place: torch.mul(values, scales, out=out) took 2.5 times as long here.
        out.copy_(values).view(len(values), scales.shape[1], -1).mul_(scales.unsqueeze(-1))
        return out


def dequantize(w):
    """An `Int8Weight` as a float32 matrix; any other tensor as float32."""
    return w.dequantize() if isinstance(w, Int8Weight) else w.float()


def quantize_int8(w, group_size=None):
    """`w` (out, in), any float dtype, as an `Int8Weight`: absmax scales per group of `group_size` (None: per row)."""
    rows, width = w.shape
    group_size = width if group_size is None else group_size
    if group_size <= 0 or width % group_size:
        raise LlamaError(f"A group size of {group_size} does not divide this matrix's rows of {width} numbers: "
                         f"choose one that does (a divisor of {width}), or None for one scale per row.")
    values = torch.empty(rows, width, dtype=torch.int8)
    scales = torch.empty(rows, width // group_size)
    for start in range(0, rows, ROWS_AT_A_TIME):
        block = w[start : start + ROWS_AT_A_TIME].float().view(-1, width // group_size, group_size)
        scale = block.abs().amax(-1) / 127
        scale[scale == 0] = 1  # a group of zeros: any scale gives back zeros
        values[start : start + len(block)] = (block / scale.unsqueeze(-1)).round().view(len(block), width)
        scales[start : start + len(block)] = scale
    return Int8Weight(values, scales)


def join(parts):
    """Int8Weights of the same width and group size as one matrix, their rows one after the other.

    Returns the parts again, now views of the joined matrix's rows (nothing is stored twice), each
    knowing it is part of it: `helpers.linear_each` multiplies a row by all of them in one product.
    """
    whole = Int8Weight(torch.cat([w.values for w in parts]), torch.cat([w.scales for w in parts]))
    return _split(whole, [w.shape[0] for w in parts])


def _split(whole, rows):
    """Views of `whole`'s first rows[0] rows, its next rows[1] rows, and so on, each `part_of` it."""
    parts, start = [], 0
    for n in rows:
        stop = start + n
        parts.append(Int8Weight(whole.values[start:stop], whole.scales[start:stop], part_of=(whole, start)))
        start = stop
    return parts


def whole_of(parts):
    """The matrix `parts` were joined into (see `join`) if they are all its rows, in order; else None."""
    if not (isinstance(parts[0], Int8Weight) and parts[0].part_of):
        return None
    whole, start = parts[0].part_of[0], 0
    for w in parts:
        if not (isinstance(w, Int8Weight) and w.part_of and w.part_of[0] is whole and w.part_of[1] == start):
            return None
        start += w.shape[0]
    return whole if start == whole.shape[0] else None


# The matrices a layer multiplies the same row by, which `quantize_model` joins, under the name
# `save_int8` stores each joined matrix by.
JOINED = {"attention.wqkv.weight": ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight"),
          "feed_forward.w13.weight": ("feed_forward.w1.weight", "feed_forward.w3.weight")}


def is_matrix(name):
    """The tensors `helpers.linear` multiplies by: every layer's 7 matrices and the output layer."""
    return name == "output.weight" or name.endswith(("attention.wq.weight", "attention.wk.weight",
                                                     "attention.wv.weight", "attention.wo.weight",
                                                     "w1.weight", "w2.weight", "w3.weight"))


def quantize_model(model, group_size=None):
    """A copy of `model` whose matrices are `Int8Weight`s; the embedding table and the norms stay as they are.

    The embedding table is only indexed: a prompt reads a few of its rows, so in int8 it would save
    file size but neither memory nor time. In Llama 3.2 1B and 3B it is also the output layer (tied):
    the output layer gets an int8 copy of its own, and the table stays for the lookups.

    Each layer's wq, wk and wv are stored as one matrix, their rows one after the other, and so are
    its w1 and w3 (`join`): they multiply the same row, and a decoded token then takes one call of the
    compiled kernel for each group instead of one for each matrix. Each is quantised on its own, as
    its scales are its rows' own.

    The matrices are quantised and joined one layer at a time, so that only one layer's matrices are
    ever held twice, separate and joined. Quantising every matrix first and joining afterwards, the
    process kept much of the memory the separate copies had used: on the 8B's shapes it held 10.0 GB
    of memory of its own after quantising (7.5 GB of it int8 weights), against 8.4 GB now, and
    `bench/fit.py`'s int8 decoding peaked at 10.1 GB, against 7.9 GB now.
    """
    weights = dict(model.weights)
    for i in range(model.params.n_layers):
        for parts in JOINED.values():
            names = [f"layers.{i}.{part}" for part in parts]
            weights.update(zip(names, join([quantize_int8(weights[name], group_size) for name in names])))
    for name, w in weights.items():
        if is_matrix(name) and not isinstance(w, Int8Weight):
            weights[name] = quantize_int8(w, group_size)
    return dataclasses.replace(model, weights=weights)


def weight_bytes(model):
    """Bytes of every matrix `linear` multiplies by (what one decoded token reads), whatever its type."""
    return sum(w.nbytes if isinstance(w, Int8Weight) else w.numel() * w.element_size()
               for name, w in model.weights.items() if is_matrix(name))


# ---- Saving and loading: one safetensors file, memory-mapped ----------------------------------------------

def _raw_params(params):
    """params as a params.json dictionary, which params_from_dict reads back to the same Params."""
    raw = {k: v for k, v in dataclasses.asdict(params).items() if v is not None and k != "rope_scaling_source"}
    if params.rope_scaling_factor:
        raw["use_scaled_rope"] = True
    return raw


def save_int8(model, path):
    """Write a quantised model to `path`, a safetensors file: its tensors, its params and a format tag.

    An `Int8Weight` named `name` is stored as `name` (int8) and `name.scales` (float32). Matrices
    `quantize_model` joined are stored once, joined, under the JOINED name: `layers.0.attention.wqkv.weight`
    holds layer 0's wq, wk and wv.
    """
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
    metadata = {"format": FORMAT, "params": json.dumps(_raw_params(model.params))}
    from safetensors.torch import save_file

    path = Path(path)
    partial = path.with_name(path.name + ".partial")  # renamed only when complete
    save_file({name: t.contiguous() for name, t in tensors.items()}, partial, metadata=metadata)
    partial.replace(path)
    return path


DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "I8": torch.int8}


def _read_header(path):
    """The safetensors header of `path` (a dict) and where its data starts; a LlamaError for anything else."""
    size = path.stat().st_size
    resave = "Save it again with helpers.save_int8, or copy the whole file again."
    with open(path, "rb") as f:
        head = f.read(8)
        (length,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
        if length is None or length > min(size - 8, 100 << 20):
            raise LlamaError(f"{path} is not a safetensors file ({size:,} bytes; it starts with {head!r}). "
                             f"An int8 model is the file helpers.save_int8 writes. {resave}")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LlamaError(f"{path} is not a safetensors file: its header is not JSON. {resave}") from None
    metadata = header.pop("__metadata__", None) or {}
    if metadata.get("format") != FORMAT:
        raise LlamaError(f"{path} is a safetensors file, but not an int8 model saved by helpers.save_int8 (its "
                         f"metadata has no format {FORMAT!r}). Quantise the model with quantize_model, then save_int8.")
    end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if 8 + length + end > size:
        raise LlamaError(f"{path} is truncated: its header describes {8 + length + end:,} bytes, the file holds "
                         f"{size:,}. The save or the copy was interrupted. {resave}")
    return header, metadata, 8 + length


def load_int8(path):
    """Memory-map an int8 model written by `save_int8`: a `Llama` whose matrices are `Int8Weight`s.

    Nothing is copied: each tensor is a view of the file, read from disk when a computation touches it.
    A file that is not one, or is truncated, is a LlamaError saying so.
    """
    path = Path(path)
    if not path.is_file():
        raise LlamaError(f"{path} does not exist or is not a file. Write it first with helpers.save_int8.")
    header, metadata, start = _read_header(path)
    params = params_from_dict(json.loads(metadata["params"]), source=f"{path}'s params")
    with open(path, "rb") as f:
        # Copy-on-write: the pages come from the file, and torch may treat the buffer as writable.
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if start < path.stat().st_size else b""
    tensors = {}
    for name, entry in header.items():
        dtype, (begin, end) = DTYPES.get(entry["dtype"]), entry["data_offsets"]
        if dtype is None:
            raise LlamaError(f"{path}: {name!r} is stored as {entry['dtype']}, which no int8 model holds. "
                             "Save the model again with helpers.save_int8.")
        count = (end - begin) // dtype.itemsize
        flat = torch.frombuffer(data, dtype=dtype, count=count, offset=start + begin) if count else \
            torch.empty(0, dtype=dtype)
        tensors[name] = flat.view(entry["shape"])
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
                parts |= dict(zip(names, _split(whole, rows)))
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
    return Llama(path, params, weights, load_tokenizer(path.parent))
