"""One row times a matrix, as the compiled one-row kernels of helpers/kernels.py compute it.

Each function multiplies a bf16 or int8 matrix by one row `x`, converting each weight to x's dtype in a
register as it reads it. They are only run compiled: run as they are, `w.to()` would copy a matrix whole.
They read a matrix as PARTS blocks of rows side by side. Each dtype has two forms of the same product, one
reading its numbers from 32-bit words (`matvec_bf16_words`, `matvec_int8`) and one reading each as it is
(`matvec`, `matvec_int8_each`); helpers/kernels.py picks one for the CPU's vector code. All but the int8 words
add up wide rows a block of columns at a time (`in_columns`). docs/kernels.md gives the measurements behind
these choices.
"""

import torch

PARTS = 4
# Inductor adds up more than 4096 float32 numbers with a slower, more careful helper (a cascade of partial sums);
# rows wider than 2 * COLUMNS numbers are added up COLUMNS at a time instead, then the blocks' sums (`in_columns`).
COLUMNS = 2048
# 0xFF000000 as an int32: the top byte of a word. An int8 number there, the bits below it zero, is the number
# times 2^24. A shift left then right (sign-extending) to take it out whole took one instruction more.
TOP_BYTE = -(1 << 24)


def rows_times(w, x):
    """w (out, dim) times x (dim,), in x's dtype; or (out, blocks, columns) times (blocks, columns), a sum a block."""
    return (w.to(x.dtype) * x).sum(-1)


def rows_times_bf16_words(words, x2):
    """A bf16 matrix times one row, its numbers read two at a time from 32-bit words.

    `words` (out, dim / 2) holds the bf16 numbers two to a word, typed float32 (its loads are then plain vector
    loads), x2 (2, dim / 2) the entries of x that each half multiplies: on a little-endian CPU the low half of word
    j is entry 2j, the high half entry 2j + 1. A bf16 number is the top half of a float32 one, so each half becomes
    a float32 number by a shift or a mask, with no widening; or blocks of columns of both, as `in_columns` gives.
    """
    words = words.view(torch.int32)
    low = (words << 16).view(torch.float32)
    high = (words & -65536).view(torch.float32)  # -65536 is 0xFFFF0000: the high half, the low one zeroed
    return (low * x2[0] + high * x2[1]).sum(-1)


def rows_times_int8(words, scales, x4):
    """An int8 matrix times one row, its numbers read four at a time from 32-bit words.

    `words` (out, dim / 4) holds the int8 numbers four at a time, typed int32 or float32 (the same bytes: which
    type the kernel is given decides how its code loads them, helpers/kernels.py's `words_for`), `scales`
    (out, groups) their scales, x4[k] (dim / 4,) the entries of x that the k-th byte of each word multiplies.
    Byte k shifted to the top of its word, the bits below it zeroed (`TOP_BYTE`), is its number times 2^24 as an
    int32, which converts to float32 exactly: one or two instructions a byte. The sums come out 2^24 times too
    large, and a power of two scales them back exactly. The four bytes' products are added before the sum over
    each group, so that the loop keeps one running sum per row.
    """
    rows, groups = scales.shape
    words = words.view(torch.int32).view(rows, groups, -1)
    products = 0
    for k in range(4):
        top = words << (24 - 8 * k) if k < 3 else words  # byte k in the top 8 bits
        if k > 0:
            top = top & TOP_BYTE  # the bytes below it zeroed: (number k) * 2^24
        products = products + top.to(x4.dtype) * x4[k].view(groups, -1)
    return (products.sum(-1) * scales).sum(-1) * 2.0**-24


def rows_times_int8_each(values, scales, x):
    """An int8 matrix times one row, its numbers read each as it is: `values` (out, dim) int8, `scales`
    (out, groups), x (dim,); or blocks of columns of them, as `in_columns` gives (then a sum a block)."""
    groups = scales.shape[-1]
    products = values.unflatten(-1, (groups, -1)).to(x.dtype) * x.unflatten(-1, (groups, -1))
    return (products.sum(-1) * scales).sum(-1)


def in_columns(w, x, scales=None, per_number=1):
    """A matrix `w` (out, dim), x (dim,) or (2, dim) and, for int8, w's `scales` (out, groups), as blocks of COLUMNS
    numbers (COLUMNS / `per_number` columns where a column holds `per_number` numbers, as bf16 words hold 2): w (out,
    blocks, columns), x (blocks, columns) or (2, blocks, columns), scales (out, blocks, groups a block), or (out, 1,
    1) for one scale a row, which multiplies each block's sum. Views: nothing is copied. Unchanged where rows are no
    wider than 2 * COLUMNS numbers, or where a group would straddle two blocks. Returns (w, x, scales).
    """
    rows, dim = w.shape
    columns = COLUMNS // per_number
    blocks = dim // columns
    groups = 1 if scales is None else scales.shape[1]
    if dim <= 2 * columns or dim % columns or (groups > 1 and groups % blocks):
        return w, x, scales
    if scales is not None:
        scales = scales.view(rows, 1, 1) if groups == 1 else scales.unflatten(1, (blocks, -1))
    return w.unflatten(1, (blocks, columns)), x.unflatten(-1, (blocks, columns)), scales


def in_parts(product, matrices, *vectors, parts=PARTS):
    """`product(*matrices, *vectors)` computed for `parts` blocks of rows, then joined: the same result,
    row for row, which torch.compile fuses into one loop that streams from `parts` places in memory."""
    rows = len(matrices[0])
    parts = min(parts, rows)
    cuts = [rows // parts * i for i in range(parts)] + [rows]
    return torch.cat([product(*(m[cuts[i]:cuts[i + 1]] for m in matrices), *vectors) for i in range(parts)])


def matvec(w, x, parts=PARTS):
    out = in_parts(rows_times, (w,), x, parts=parts)
    return out.sum(-1) if out.dim() > 1 else out  # blocks of columns (`in_columns`): their sums added


def matvec_bf16_words(words, x2, parts=PARTS):
    out = in_parts(rows_times_bf16_words, (words,), x2, parts=parts)
    return out.sum(-1) if out.dim() > 1 else out


def matvec_int8(words, scales, x4, parts=PARTS):
    return in_parts(rows_times_int8, (words, scales), x4, parts=parts)


def matvec_int8_each(values, scales, x, parts=PARTS):
    out = in_parts(rows_times_int8_each, (values, scales), x, parts=parts)
    return out.sum(-1) if out.dim() > 1 else out
