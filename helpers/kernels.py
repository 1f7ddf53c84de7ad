"""Compiled one-row kernels: a single row times a bf16 or int8 matrix, converting each weight in a register.

`one_row(x, w)` is `x @ w.T` for one row `x` by a kernel torch.compile generates, or None where no
kernel applies (several rows, a matrix smaller than a real Llama 3's) or compiling is unavailable
(no C++ compiler, say: then never tried again). `compiled()` lists what was built, `reset()` forgets
it. The kernels read a matrix as PARTS blocks of rows side by side. docs/kernels.md gives the
measurements behind these choices.
"""

import torch

from .int8 import Int8Weight

# Matrices of real Llama 3 models (width 2048 or more, the 1B's wk and wv 512 x 2048 the smallest) take
# the kernels; the tiny model's (64 or 224 wide), bound by overheads, do not.
MIN_ELEMENTS = 1 << 20
MIN_WIDTH = 1024
# torch.compile builds one kernel per matrix shape; past MAX_SHAPES for a kernel (torch.compile's own
# limit is 8 per function), new shapes get None.
MAX_SHAPES = 8
# The int8 kernel is compiled with multiply-adds (FMA): it spends most of its time in arithmetic.
INT8_OPTIONS = {"cpp.enable_floating_point_contract_flag": "fast"}
PARTS = 4

_kernels = {}  # False (bf16) or True (int8) -> its compiled kernel, or False where it cannot be built
_shapes = set()  # (matrix shape, its dtype or (torch.int8, group size), row dtype) of each shape built


def _rows_times(w, x):
    """w (out, dim) times x (dim,) in x's dtype. Run only compiled: run as it is, w.to() copies w whole."""
    return (w.to(x.dtype) * x).sum(-1)


def _rows_times_int8(words, scales, x4):
    """An int8 matrix times one row, run only compiled.

    `words` (out, dim / 4) int32 holds the int8 numbers four at a time, `scales` (out, groups) their
    scales, x4[k] (dim / 4,) the entries of x that the k-th byte of each word multiplies. Shifting a word
    left then right (sign-extending) takes out one byte as an int32. The four bytes' products are added
    before the sum over each group, so that the loop keeps one running sum per row.
    """
    rows, groups = scales.shape
    words = words.view(rows, groups, -1)
    products = 0
    for k in range(4):
        byte = (words << (24 - 8 * k)) >> 24
        products = products + byte.to(x4.dtype) * x4[k].view(groups, -1)
    return (products.sum(-1) * scales).sum(-1)


def _in_parts(rows_times, matrices, *vectors, parts=PARTS):
    """`rows_times(*matrices, *vectors)` computed for `parts` blocks of rows, then joined: the same result,
    row for row, which torch.compile fuses into one loop that streams from `parts` places in memory."""
    rows = len(matrices[0])
    parts = min(parts, rows)
    cuts = [rows // parts * i for i in range(parts)] + [rows]
    blocks = zip(cuts, cuts[1:], strict=False)
    return torch.cat([rows_times(*(m[start:end] for m in matrices), *vectors) for start, end in blocks])


def _matvec(w, x):
    return _in_parts(_rows_times, (w,), x)


def _matvec_int8(words, scales, x4):
    return _in_parts(_rows_times_int8, (words, scales), x4)


def new_kernel(int8, parts=PARTS):
    """A newly compiled one-row kernel for int8 (or bf16) weights reading `parts` blocks of rows; it takes
    `kernel_inputs(w, x)`. `one_row` uses one of its own (`kernel`)."""
    if parts == PARTS:
        return torch.compile(_matvec_int8, dynamic=False, options=INT8_OPTIONS) if int8 else \
            torch.compile(_matvec, dynamic=False)
    if int8:
        return torch.compile(lambda words, scales, x4: _in_parts(_rows_times_int8, (words, scales), x4, parts=parts),
                             dynamic=False, options=INT8_OPTIONS)
    return torch.compile(lambda w, x: _in_parts(_rows_times, (w,), x, parts=parts), dynamic=False)


def kernel_inputs(w, x):
    """The kernel's arguments for matrix `w` and one row `x` (dim,); call it in inference mode.

    Int8: w's numbers as int32 words, and x's entries split by byte (on a little-endian CPU the k-th
    byte of word j is entry 4j + k of a row).
    """
    if isinstance(w, Int8Weight):
        return w.values.view(torch.int32), w.scales, x.view(-1, 4).T.contiguous()
    return w, x.clone()


def kernel(int8):
    """The compiled kernel `one_row` uses for int8 (or bf16) weights; None before its first use, False where
    it could not be built."""
    return _kernels.get(int8)


def applies(x, w):
    """Whether `one_row` has a kernel for `x` times matrix `w`: one row, a real model's matrix size."""
    if isinstance(w, Int8Weight) and w.group_size % 4:
        return False  # four int8 numbers to a word: every Llama 3 matrix's rows and groups allow it
    return x.numel() == x.shape[-1] and w.numel() >= MIN_ELEMENTS and w.shape[1] >= MIN_WIDTH


def one_row(x, w):
    """`x @ w.T` for one row `x` (..., dim) by a compiled kernel, in x's dtype; None where none applies."""
    if not applies(x, w):
        return None
    int8 = isinstance(w, Int8Weight)
    fn = _kernels.get(int8)
    if fn is None:
        fn = new_kernel(int8)
    shape = (tuple(w.shape), (torch.int8, w.group_size) if int8 else w.dtype, x.dtype)
    built = sum(isinstance(s[1], tuple) == int8 for s in _shapes)
    if fn is False or (shape not in _shapes and built >= MAX_SHAPES):
        return None
    try:
        # Always in inference mode, on a row made in it, so that each shape is compiled once whatever mode
        # the caller is in (a row made outside would compile it again).
        outside = not torch.is_inference_mode_enabled()
        with torch.inference_mode():
            out = fn(*kernel_inputs(w, x.reshape(-1)))
    except Exception:  # no C++ compiler, or a platform torch.compile does not support
        fn, out = False, None
    _kernels[int8] = fn
    if out is None:
        return None
    _shapes.add(shape)
    out = out.clone() if outside else out  # a normal tensor for a caller outside inference mode
    return out.view(*x.shape[:-1], w.shape[0])


def compiled():
    """What `one_row` compiled: a set of (matrix shape, its dtype or (torch.int8, group size), row dtype)."""
    return set(_shapes)


def unavailable():
    """The kernels that could not be built, as "bf16" and "int8"; `one_row` then returns None for them."""
    return {"int8" if int8 else "bf16" for int8, fn in _kernels.items() if fn is False}


def reset():
    """Forget the kernels and what they compiled, as if none had been used (for tests and benchmarks)."""
    _kernels.clear()
    _shapes.clear()
