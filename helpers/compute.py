"""The compute policy: weights stay in bfloat16, arithmetic happens in float32.

Meta's checkpoint stores weights in bfloat16. CPUs without native bfloat16
units multiply bfloat16 matrices slowly, and converting a whole matrix with
`w.float()` allocates a new float32 copy, twice the size of the weights, on
every call. `linear` instead converts a block of rows at a time into one
buffer that is reused for every block of every matrix, and multiplies while
the block is still in the CPU cache. The float32 result is the same as
`x @ w.float().T` up to float rounding; the memory cost is one block.
"""

import torch

# One block of float32 rows: 4 MiB, small enough to stay in the CPU's cache
# between its conversion and its product.
BLOCK_ELEMENTS = 1 << 20

_buffer = torch.empty(0)


def linear(x, w):
    """`x @ w.T` in the dtype of `x`, whatever the dtype `w` is stored in."""
    if w.dtype == x.dtype:
        return x @ w.T
    global _buffer
    rows = max(1, BLOCK_ELEMENTS // w.shape[1])
    if _buffer.dtype != x.dtype or _buffer.numel() < rows * w.shape[1]:
        _buffer = torch.empty(rows * w.shape[1], dtype=x.dtype)
    out = x.new_empty(*x.shape[:-1], w.shape[0])
    for start in range(0, w.shape[0], rows):
        block = w[start : start + rows]
        upcast = _buffer[: block.numel()].view(block.shape)
        upcast.copy_(block)
        out[..., start : start + rows] = x @ upcast.T
    return out
