"""The compute policy: weights stay in bfloat16 (or int8), arithmetic happens in float32.

`linear` asks helpers/kernels.py for a compiled one-row kernel first (a decoded token times a real
model's matrix). Otherwise it converts a block of rows at a time into one float32 buffer, reused for
every block of every matrix, and multiplies while the block is in the CPU cache: no float32 copy of a
whole matrix. Int8 weights (`helpers.int8.Int8Weight`) take the same two paths. docs/kernels.md gives
the measurements behind these choices.
"""

import torch

from . import kernels
from .int8 import Int8Weight, onednn_here, whole_of
from .tolerance import FLOAT32_TOLERANCE, assert_close  # noqa: F401  (helpers/check/harness.py imports them from here)

# A block: 2^20 numbers of a matrix in float32 (4 MiB), and never fewer than 256 rows: on the 8B's w2, 14336
# wide, that is 73 rows, and oneDNN's product of a prompt by blocks of 64 rows took 1.8 times as long as by
# blocks of 256 (bench/linear_bf16.py).
BLOCK_ELEMENTS = 1 << 20
MIN_BLOCK_ROWS = 256
# oneDNN, the second CPU library PyTorch ships, multiplied a prompt's rows by the blocks 1.8 times as fast as
# `@` (MKL) here, in float32 all the same (bench/linear_bf16.py). False where it is not used (`onednn_here`),
# or its operator failed. Blocks of fewer numbers than ONEDNN_MIN_ELEMENTS (the tiny model's matrices) go to
# `@`: there oneDNN's call costs more than its product saves.
ONEDNN = onednn_here()
ONEDNN_MIN_ELEMENTS = 1 << 16

_buffer = torch.empty(0)


def release_buffer():
    """Drop the float32 buffer `linear` reuses; the next call makes one of the size it needs."""
    global _buffer
    _buffer = torch.empty(0)


def linear(x, w):
    """`x @ w.T` in the dtype of `x`, whatever the dtype `w` is stored in, int8 (an `Int8Weight`) included."""
    int8 = isinstance(w, Int8Weight)
    if not int8 and w.dtype == x.dtype:
        return x @ w.T
    if torch.is_grad_enabled() and x.requires_grad:
        return x @ (w.dequantize() if int8 else w.to(x.dtype)).T  # in-place writes below record no gradient
    if int8 and w.rounds_activations:
        return times_rounded_rows(x, w)
    out = kernels.one_row(x, w)
    if out is not None:
        return out
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    out = rows.new_empty(rows.shape[0], w.shape[0])
    with kernels.sharing_cores():
        _blocks(w, rows, out, int8)
    return out.view(*x.shape[:-1], w.shape[0])


def times_transposed(rows, block):
    """`rows @ block.T` for two float32 matrices: by oneDNN where torch has it and the block is large, else by `@`."""
    global ONEDNN
    if ONEDNN and rows.dtype == torch.float32 and block.numel() >= ONEDNN_MIN_ELEMENTS:
        try:
            return torch.ops.mkldnn._linear_pointwise(rows, block, None, "none", [], "")
        except (AttributeError, NotImplementedError, RuntimeError):  # a torch whose oneDNN lacks it
            ONEDNN = False
    return rows @ block.T


def times_rounded_rows(x, w):
    """`x @ w.T` for an `Int8Weight` w with `x` rounded to int8 as well: llama.cpp's Q8_0 arithmetic, opt-in.

    Each row of x becomes int8 numbers and one scale (its largest magnitude / 127, as for the weights);
    the products of int8 numbers are added up in int32 (on the CPU's int8 dot-product instructions, VNNI
    or AMX, where it has them), and the two scales are applied to the sums. No conversion of the weights
    at all, and a quarter of float32's bytes per number of x. The price: each number of x is off by up to
    half its row's step, which the sums carry into the result (llama.cpp takes one scale per 32 numbers
    of x, so its steps are finer than one scale a row).

    A prompt's rows go to oneDNN's int8 product on w's `packed` copy, x shifted by 128 into uint8 (its
    instructions multiply uint8 by int8; the shift is taken back as a zero point); one row, or a matrix
    with no packed copy, to `torch._int_mm`. The same integer sums either way.
    """
    rows = x.reshape(-1, x.shape[-1])
    scale = rows.abs().amax(1, keepdim=True) / 127
    scale[scale == 0] = 1  # a row of zeros: any scale gives back zeros
    rounded = (rows / scale).round_()
    with kernels.sharing_cores():
        if w.packed is not None and len(rows) > 1:
            out = torch.ops.onednn.qlinear_pointwise(
                rounded.add_(128).to(torch.uint8), 1.0, 128, w.packed, w.scales.view(-1), _NO_ZERO_POINT,
                None, 1.0, 0, torch.float32, "none", [], "").mul_(scale)
        else:
            # w's rows times x's, (out, rows): the same sums as x @ w.T, 1.7 times as fast for a prompt's
            # rows on the 8B's matrices here (bench/int8_ops.py).
            sums = torch._int_mm(w.values, rounded.to(torch.int8).T)
            out = sums.T.to(torch.float32, memory_format=torch.contiguous_format).mul_(scale).mul_(w.scales.T)
    return out.view(*x.shape[:-1], w.shape[0]).to(x.dtype)


_NO_ZERO_POINT = torch.zeros(1, dtype=torch.int64)  # the weights' zero point: int8 numbers are symmetric


def _blocks(w, rows, out, int8):
    """out = rows @ w.T, a block of rows of w at a time converted into the reused float32 buffer."""
    global _buffer
    block = max(MIN_BLOCK_ROWS, BLOCK_ELEMENTS // w.shape[1])
    size = min(block, w.shape[0]) * w.shape[1]
    if _buffer.dtype != rows.dtype or _buffer.numel() < size:
        # Made as a normal tensor even under torch.inference_mode: an inference
        # tensor could not be written to outside it, on a later call.
        with torch.inference_mode(False):
            _buffer = torch.empty(size, dtype=rows.dtype)
    for start in range(0, w.shape[0], block):
        n = min(block, w.shape[0] - start)
        upcast = _buffer[: n * w.shape[1]].view(n, w.shape[1])
        if int8:
            w.dequantize(start, start + n, out=upcast)
        else:
            upcast.copy_(w[start : start + n])
        out[:, start : start + n] = times_transposed(rows, upcast)


def linear_each(x, *ws):
    """`[linear(x, w) for w in ws]`, as one product when the matrices are the rows of one (`helpers.int8.join`).

    `helpers.quantize_model` joins each layer's wq, wk and wv so, and its w1 and w3: a decoded token then
    calls the one-row kernel 4 times a layer instead of 7. The results are views of the one product's columns.
    """
    whole = whole_of(ws)
    if whole is None:
        return [linear(x, w) for w in ws]
    return linear(x, whole).split([w.shape[0] for w in ws], dim=-1)
