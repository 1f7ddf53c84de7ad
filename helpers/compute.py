"""The compute policy: weights stay in bfloat16 (or int8), arithmetic happens in float32.

`linear` asks helpers/kernels.py for a compiled one-row kernel first (a decoded token times a real
model's matrix). Otherwise it converts a block of rows at a time into one float32 buffer, reused for
every block of every matrix, and multiplies while the block is in the CPU cache: no float32 copy of a
whole matrix. Int8 weights (`helpers.int8.Int8Weight`) take the same two paths.
"""

import torch

from . import kernels
from .int8 import Int8Weight, whole_of
from .tolerance import FLOAT32_TOLERANCE, assert_close  # noqa: F401  (helpers/check.py imports them from here)

# One block of float32 rows: 4 MiB (as fast as any size on the 8B's matrices, at 1 token and at 17).
BLOCK_ELEMENTS = 1 << 20

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
        return x @ (w.dequantize() if int8 else w.to(x.dtype)).T  # out= below records no gradient
    if int8 and w.rounds_activations:
        return times_rounded_rows(x, w)
    out = kernels.one_row(x, w)
    if out is not None:
        return out
    global _buffer
    rows = max(1, BLOCK_ELEMENTS // w.shape[1])
    if _buffer.dtype != x.dtype or _buffer.numel() < rows * w.shape[1]:
        # Made as a normal tensor even under torch.inference_mode: an inference
        # tensor could not be written to outside it, on a later call.
        with torch.inference_mode(False):
            _buffer = torch.empty(rows * w.shape[1], dtype=x.dtype)
    x_t = x.reshape(-1, x.shape[-1]).T
    # The result is built transposed, one row per row of w, so that each block's product fills whole
    # rows of it in place (out=).
    out_t = x.new_empty(w.shape[0], x_t.shape[1])
    with kernels.sharing_cores():
        _blocks(w, x_t, out_t, rows, int8)
    return out_t.T.contiguous().view(*x.shape[:-1], w.shape[0])


def times_rounded_rows(x, w):
    """`x @ w.T` for an `Int8Weight` w with `x` rounded to int8 as well: llama.cpp's Q8_0 arithmetic, opt-in.

    Each row of x becomes int8 numbers and one scale (its largest magnitude / 127, as for the weights);
    `torch._int_mm` adds up the products of int8 numbers in int32 (on the CPU's int8 dot-product
    instructions, VNNI or AMX, where it has them), and the two scales are applied to the sums. No
    conversion of the weights at all, and a quarter of float32's bytes per number of x. The price: each
    number of x is off by up to half its row's step, which the sums carry into the result (llama.cpp
    takes one scale per 32 numbers of x, so its steps are finer than one scale a row).
    """
    rows = x.reshape(-1, x.shape[-1])
    scale = rows.abs().amax(1, keepdim=True) / 127
    scale[scale == 0] = 1  # a row of zeros: any scale gives back zeros
    rounded = (rows / scale).round_().to(torch.int8)
    with kernels.sharing_cores():
        sums = torch._int_mm(rounded, w.values.T)
    out = sums.to(torch.float32).mul_(scale).mul_(w.scales.T)
    return out.view(*x.shape[:-1], w.shape[0]).to(x.dtype)


def _blocks(w, x_t, out_t, rows, int8):
    """out_t = w @ x_t, `rows` rows of w at a time converted into the reused float32 buffer."""
    for start in range(0, w.shape[0], rows):
        n = min(rows, w.shape[0] - start)
        upcast = _buffer[: n * w.shape[1]].view(n, w.shape[1])
        if int8:
            w.dequantize(start, start + n, out=upcast)
        else:
            upcast.copy_(w[start : start + n])
        torch.mm(upcast, x_t, out=out_t[start : start + rows])


def linear_each(x, *ws):
    """`[linear(x, w) for w in ws]`, as one product when the matrices are the rows of one (`helpers.int8.join`).

    `helpers.quantize_model` joins each layer's wq, wk and wv so, and its w1 and w3: a decoded token then
    calls the one-row kernel 4 times a layer instead of 7. The results are views of the one product's columns.
    """
    whole = whole_of(ws)
    if whole is None:
        return [linear(x, w) for w in ws]
    return linear(x, whole).split([w.shape[0] for w in ws], dim=-1)
