"""Int8 weights (notebook 08): each row cut into groups, each group stored as int8 numbers and one float32 scale.

A group's scale is its largest magnitude divided by 127, so that its numbers, divided by the
scale and rounded, fall in -127..127. Multiplying back gives each weight to within half a scale:
the rounding error of a group is at most its largest magnitude / 254. Small groups follow the
weights more closely, at the cost of more scales: one float32 per group is 32 / group_size bits
per weight on top of the 8.

`helpers.linear` multiplies by an `Int8Weight` as it does by a bf16 matrix: a block of rows at
a time, converted into float32, for a prompt; the compiled one-row kernel for a decoded token
(helpers/kernels.py). `quantize_model` turns a model's matrices into int8, joining those that
multiply the same row (`join`); helpers/int8_file.py writes and memory-maps such a model.

Opt-in, `quantize_model(model, activations="int8")` (or `with_activations` on a quantised model, such
as one `load_int8` gives back) rounds the activations too, as llama.cpp's Q8_0 does: each row of `x`
becomes int8 numbers and one scale, and `linear` multiplies integers by integers (oneDNN's int8 products,
on the CPU's int8 dot-product instructions where it has them). Faster for a prompt, and no longer float32
arithmetic: see `compute.times_rounded_rows`.
"""

import dataclasses
import platform
from dataclasses import dataclass, field

import torch

from .errors import LlamaError
from .params import JOINED, is_matrix  # noqa: F401  (is_matrix: notebook 08 imports it from here)

# Rows quantised at a time: a float32 copy of a whole matrix would be 2.1 GB for the 8B's output layer.
ROWS_AT_A_TIME = 4096


@dataclass
class Int8Weight:
    """A matrix (out, in) as int8 `values` (out, in) and float32 `scales` (out, in / group_size).

    `part_of` is set on a matrix stored as rows of a larger one (see `join`): that Int8Weight, and
    the first of its rows that are this one's. `rounds_activations`: `linear` rounds the rows it
    multiplies by this matrix to int8 as well (see `quantize_model`); `packed` is then oneDNN's copy
    of `values` in the layout its int8 product reads fastest, for a prompt's rows (see `with_activations`).
    """

    values: torch.Tensor
    scales: torch.Tensor
    part_of: tuple = field(default=None, repr=False, compare=False)
    rounds_activations: bool = field(default=False, repr=False, compare=False)
    packed: torch.Tensor = field(default=None, repr=False, compare=False)

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
    whole = Int8Weight(torch.cat([w.values for w in parts]), torch.cat([w.scales for w in parts]),
                       rounds_activations=parts[0].rounds_activations)
    return split_rows(whole, [w.shape[0] for w in parts])


def split_rows(whole, rows):
    """Views of `whole`'s first rows[0] rows, its next rows[1] rows, and so on, each `part_of` it."""
    parts, start = [], 0
    for n in rows:
        stop = start + n
        parts.append(Int8Weight(whole.values[start:stop], whole.scales[start:stop], part_of=(whole, start),
                                rounds_activations=whole.rounds_activations))
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


def quantize_model(model, group_size=None, activations="float32"):
    """A copy of `model` whose matrices are `Int8Weight`s; the embedding table and the norms stay as they are.

    `activations="int8"` (opt-in) has `linear` round each row it multiplies by them to int8 as well, and
    multiply in integers (see the module's docstring and `with_activations`); it needs one scale per row
    (`group_size` None).

    The embedding table is only indexed: a prompt reads a few of its rows, so in int8 it would save
    file size but neither memory nor time. In Llama 3.2 1B and 3B it is also the output layer (tied):
    the output layer gets an int8 copy of its own, and the table stays for the lookups.

    Each layer's wq, wk and wv are stored as one matrix, their rows one after the other, and so are
    its w1 and w3 (`join`): they multiply the same row, and a decoded token then takes one call of the
    compiled kernel for each group instead of one for each matrix. Each is quantised on its own, as
    its scales are its rows' own.

    The matrices are quantised and joined one layer at a time, so that only one layer's matrices are
    ever held twice, separate and joined (on the 8B's shapes, 8.4 GB of memory after quantising).
    """
    if activations == "int8" and group_size is not None:
        raise LlamaError(f'activations="int8" multiplies whole rows in integers, so it needs one scale per row: '
                         f"leave out group_size={group_size}.")
    check_activations(activations)
    if any(isinstance(w, Int8Weight) for w in model.weights.values()):
        raise LlamaError("This model is already quantised (its matrices are Int8Weights): quantise the model that "
                         "load_model returned, or use this one as it is (with_activations changes its activations).")
    weights = dict(model.weights)
    for i in range(model.params.n_layers):
        for parts in JOINED.values():
            names = [f"layers.{i}.{part}" for part in parts]
            weights.update(zip(names, join([quantize_int8(weights[name], group_size) for name in names]), strict=True))
    for name, w in weights.items():
        if is_matrix(name) and not isinstance(w, Int8Weight):
            weights[name] = quantize_int8(w, group_size)
    quantized = dataclasses.replace(model, weights=weights)
    return quantized if activations == "float32" else with_activations(quantized, activations)


def check_activations(activations):
    if activations not in ("float32", "int8"):
        raise LlamaError(f'activations={activations!r}: choose "float32" (the default: activations are not rounded) '
                         'or "int8" (rounded to int8 too, one scale per row, as llama.cpp\'s Q8_0 does).')


def onednn_here():
    """Whether `linear` uses oneDNN's products: where torch has oneDNN, on an x86 CPU, where they were
    measured faster (docs/kernels.md). Elsewhere (an Arm Mac, say) it keeps `@` and `torch._int_mm`."""
    return torch.backends.mkldnn.is_available() and platform.machine().lower() in ("x86_64", "amd64")


def int8_dot_products():
    """Whether the CPU adds up products of int8 numbers into int32 sums in one instruction (VNNI, AMX). Without them
    oneDNN's uint8 x int8 product adds pairs of products in 16 bits, which saturates (docs/kernels.md)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        return any(capabilities().get(name, False) for name in ("avx512_vnni", "avx_vnni", "amx_int8"))
    return any(getattr(torch.cpu, name, bool)() for name in ("_is_vnni_supported", "_is_amx_tile_supported"))  # older


def packed_for_prompts(values):
    """oneDNN's copy of int8 `values` (out, in) in its own layout: its int8 product of a prompt's rows by
    this copy took half the time of `torch._int_mm` on `values` (bench/int8_ops.py). None where this torch
    cannot make one, where oneDNN is not used (`onednn_here`) or where its sums would saturate (no
    `int8_dot_products`); a prompt then takes `torch._int_mm` too."""
    if not (onednn_here() and int8_dot_products()):
        return None
    try:
        return torch.ops.onednn.qlinear_prepack(values, None)
    except (AttributeError, NotImplementedError, RuntimeError):
        return None


def with_activations(model, activations):
    """`model`, quantised, with the activations its int8 matrices multiply rounded to int8 ("int8") or not
    ("float32"): the same int8 numbers and scales, shared, not copied; joined matrices stay joined.

    With "int8", each matrix a prompt multiplies whole (each joined matrix, `wo`, `w2`, the output layer)
    also gets a `packed` copy of its numbers for prompts (`packed_for_prompts`): as many bytes again as its
    int8 numbers. A decoded token reads `values`, which one row reads as fast."""
    check_activations(activations)
    rounds = activations == "int8"
    if rounds and any(isinstance(w, Int8Weight) and w.group_size != w.shape[1] for w in model.weights.values()):
        raise LlamaError('activations="int8" multiplies whole rows in integers, so it needs one scale per row: '
                         "this model was quantised in groups. Quantise it again with quantize_model and no group_size.")
    wholes = {}  # id of a joined matrix -> its copy with the new setting

    def switched(w):
        packed = packed_for_prompts(w.values) if rounds else None
        return dataclasses.replace(w, rounds_activations=rounds, packed=packed)

    def setting(w):
        if not isinstance(w, Int8Weight):
            return w
        if w.part_of is None:
            return switched(w)
        whole, start = w.part_of
        if id(whole) not in wholes:
            wholes[id(whole)] = switched(whole)
        new = wholes[id(whole)]
        stop = start + w.shape[0]
        return Int8Weight(new.values[start:stop], new.scales[start:stop], part_of=(new, start),
                          rounds_activations=rounds)

    return dataclasses.replace(model, weights={name: setting(w) for name, w in model.weights.items()})


def weight_bytes(model):
    """Bytes of every matrix `linear` multiplies by (what one decoded token reads), whatever its type."""
    return sum(w.nbytes if isinstance(w, Int8Weight) else w.numel() * w.element_size()
               for name, w in model.weights.items() if is_matrix(name))
