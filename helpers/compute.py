"""The compute policy: weights stay in bfloat16, arithmetic happens in float32.

Meta's checkpoint stores weights in bfloat16. CPUs without native bfloat16
units multiply bfloat16 matrices slowly, and converting a whole matrix with
`w.float()` allocates a new float32 copy, twice the size of the weights, on
every call. `linear` instead converts a block of rows at a time into one
buffer that is reused for every block of every matrix, and multiplies while
the block is still in the CPU cache. The float32 result is the same as
`x @ w.float().T` up to float rounding; the memory cost is one block.

One case gets a faster path. Decoding with a KV cache multiplies every
matrix by a single vector, so its speed is how fast the weights are read.
Converting a block and multiplying it take turns, which reads the weights at
about half the memory bandwidth (bench/linear_bf16.py). For a single row and
a real model's matrix (any Llama 3's, from the 1B up), `linear` uses a
kernel that torch.compile generates from `(w.float() * x).sum(-1)`: it
converts each weight in a register and adds up in float32 as it goes, in one
pass and with no float32 copy, reading four blocks of the matrix's rows side
by side (`_in_parts`). Where torch.compile cannot build it (no C++ compiler,
say), the block path is used from then on.

Int8 weights (`helpers.int8.Int8Weight`, notebook 08) take the same two paths:
a block of int8 rows times their scales into the same float32 buffer, or a
compiled one-row kernel that converts each int8 number in a register, adds up
each group's products and multiplies the group's sum by its scale.
"""

import torch

from .int8 import Int8Weight, whole_of

# One block of float32 rows: 4 MiB. Measured on a 2-core AMD EPYC (1 MiB L2
# per core, 32 MiB L3) for the 8B's 14336 x 4096 matrices: 4 MiB was as fast
# as any size, at 1 token and at 17; blocks small enough for L2 were slower,
# each block costing about 10 microseconds of Python and dispatch overhead.
BLOCK_ELEMENTS = 1 << 20

_buffer = torch.empty(0)

# The fused one-row path is for the matrices of real Llama 3 models, not the tiny model's, whose
# decoding is bound by overheads rather than by reading weights. A real model's matrices are all at
# least FUSED_MIN_WIDTH wide (its width is 2048 or more: Llama 3.2 1B's) and hold at least
# FUSED_MIN_ELEMENTS numbers (the smallest, the 1B's wk and wv, are 512 x 2048); the tiny model's
# are 64 or 224 wide, its 128256 x 64 output table included. On the 1B's 2048 x 2048 and
# 512 x 2048 matrices the fused kernel took a third and a fifth of the block path's time.
# torch.compile builds one kernel per matrix shape on first use (1 to 10 seconds each; a Llama 3 has
# 5 shapes, in bf16 or int8). Past FUSED_MAX_SHAPES shapes for a kernel, new ones take the block path:
# torch.compile would otherwise, past its own limit of 8 per function (torch._dynamo.config.
# recompile_limit), run `_matvec` uncompiled.
FUSED_MIN_ELEMENTS = 1 << 20
FUSED_MIN_WIDTH = 1024
FUSED_MAX_SHAPES = 8
# The int8 kernel is compiled with a multiply and an add as one instruction (FMA), which C compilers
# make only when allowed to: it spends most of its time in arithmetic. The bf16 kernel, which mostly
# waits for memory, ran no faster with it.
INT8_OPTIONS = {"cpp.enable_floating_point_contract_flag": "fast"}
# The one-row kernels read a matrix as PARTS blocks of rows side by side (`_in_parts`).
PARTS = 4
_fused = None  # the compiled kernel; None until first needed, False where it cannot be built
_fused_int8 = None  # the same for int8 weights
_fused_shapes = set()  # (weight shape, its dtype or (torch.int8, group size), x dtype) of each shape built


def _rows_times(w, x):
    """w (out, dim) times x (dim,) in x's dtype. Run only compiled: run as it is, w.to() copies w whole."""
    return (w.to(x.dtype) * x).sum(-1)


def _rows_times_int8(words, scales, x4):
    """An int8 matrix times one row, run only compiled (see `_fused_matvec`).

    `words` (out, dim / 4) int32 holds the matrix's int8 numbers four at a time, `scales` (out, groups)
    their scales, and x4[k] (dim / 4,) the entries of x that the k-th byte of each word multiplies.
    Shifting a word left then right (sign-extending) takes out one byte as an int32, which converts to
    float32 in one instruction. The code torch.compile writes for int8 numbers taken one at a time ran
    2 to 3 times slower on a 2-core AMD EPYC (AVX2), and 7 times slower in AVX2 code on a 2-core Intel
    Xeon, though about as fast in that Xeon's AVX-512 code.

    The four bytes' products are added together before the sum over each group, so that the compiled
    loop keeps one running sum per row rather than four; compiled with multiply-adds (FMA, see
    `_fused_matvec`), it then needs fewer instructions and fits in the CPU's vector registers. On the
    AMD EPYC the four sums ran out of AVX2's 16 registers and kept one in memory; this form took 0.90
    times their time over the Llama 3.2 1B's layer matrices (median of 100 paired rounds). With the
    rows read in four parts (`_in_parts`), the AVX2 loop still keeps its sums in registers: its
    inner loop never reads or writes the stack.

    The words must come in typed int32. Typed float32 and read back with `words.view(torch.int32)`
    here, torch.compile writes the reinterpretation as a copy through the stack, which the C compiler
    removes from AVX2 code but not from AVX-512 code: on a 2-core Intel Xeon (AVX-512) that made the
    Llama 3.2 1B's decoding in int8 2.6 times slower (a step of 233 ms instead of 88.5 ms, both with
    the rows read in two parts).
    """
    rows, groups = scales.shape
    words = words.view(rows, groups, -1)
    products = 0  # the four bytes' products, added up
    for k in range(4):
        byte = (words << (24 - 8 * k)) >> 24
        products = products + byte.to(x4.dtype) * x4[k].view(groups, -1)
    return (products.sum(-1) * scales).sum(-1)


def _in_parts(rows_times, matrices, *vectors, parts=PARTS):
    """`rows_times(*matrices, *vectors)`, computed for `parts` blocks of rows, then joined.

    The result is the same, row for row. What changes is the order of reading: torch.compile fuses
    the blocks' products into one loop that takes a row from each block at every step, so that the CPU
    streams from `parts` places in memory at once instead of one, and each piece of x it loads serves
    that many rows. Rows that do not divide evenly leave the last block a little longer, and that block
    gets a loop of its own (every Llama 3 matrix divides by 8); fewer rows than parts make a row each.

    Both kernels mostly wait for memory, and more places read at once keep more reads in flight. Over
    the Llama 3.2 1B's products on a 2-core Intel Xeon (AVX-512), other numbers of parts took these
    times the time of four (`bench/decode_step.py DIR [--bf16] --compare-parts 1,2,8`; with
    `--simdlen 256`, the AVX2 code a CPU without AVX-512 gets):

    | parts | int8 | bf16 | int8, AVX2 code | bf16, AVX2 code |
    |---|---|---|---|---|
    | 1 | 1.52 | 1.17 | 2.05 | 1.45 |
    | 2 | 1.20 | 1.06 | 1.89 | 1.14 |
    | 8 | 0.94 | 0.98 | 0.90 | 0.96 |

    Eight parts are a little faster still, but a larger kernel takes longer to compile, which every
    session with an empty compile cache (a fresh Kaggle one, say) waits for on its first decoded token:
    on the 1B (`bench/fit.py DIR --skip-tutorial --skip-limits --compile-cache empty`) that token took
    14.5 s in bf16 and 17.3 to 17.8 s in int8 with four parts, 15.2 to 15.8 s and 21.3 to 22.0 s with
    eight, and 13.9 s and 15.1 s with two. On a 2-core AMD EPYC (AVX2), with an earlier int8 kernel,
    one part took 1.10 to 1.12 times the time of two in int8 and 1.20 times in bf16, and four parts
    were no faster than two in int8.
    """
    rows = len(matrices[0])
    parts = min(parts, rows)
    cuts = [rows // parts * i for i in range(parts)] + [rows]
    return torch.cat([rows_times(*(m[start:end] for m in matrices), *vectors) for start, end in zip(cuts, cuts[1:])])


def _matvec(w, x):
    """w (out, dim) times x (dim,) in x's dtype, in PARTS blocks of rows read side by side. Run only compiled."""
    return _in_parts(_rows_times, (w,), x)


def _matvec_int8(words, scales, x4):
    """An int8 matrix times one row (see `_rows_times_int8`), in PARTS blocks of rows read side by side."""
    return _in_parts(_rows_times_int8, (words, scales), x4)


def _as_words(w, x):
    """`_matvec_int8`'s inputs: w's numbers as int32 words, and x's entries split by byte.

    On a little-endian CPU (x86, ARM) the k-th byte of word j is entry 4j + k of a row.
    """
    return w.values.view(torch.int32), w.scales, x.view(-1, 4).T.contiguous()


def _fused_matvec(w, x):
    """`w @ x` for one row x, by the compiled kernel; None where it cannot be used."""
    global _fused, _fused_int8
    int8 = isinstance(w, Int8Weight)
    kernel = _fused_int8 if int8 else _fused
    if kernel is None:
        kernel = torch.compile(_matvec_int8, dynamic=False, options=INT8_OPTIONS) if int8 else \
            torch.compile(_matvec, dynamic=False)
    if int8 and w.group_size % 4:
        return None  # four int8 numbers to a word: every Llama 3 matrix's rows and groups allow it
    shape = (tuple(w.shape), (torch.int8, w.group_size) if int8 else w.dtype, x.dtype)
    built = sum(isinstance(s[1], tuple) == int8 for s in _fused_shapes)  # FUSED_MAX_SHAPES for each kernel
    if kernel is False or (shape not in _fused_shapes and built >= FUSED_MAX_SHAPES):
        return None
    try:
        # Always in inference mode, and on a row made in it (as _as_words's are), so that each shape is
        # compiled once whatever mode the caller is in: torch.compile compiles again for a row made outside
        # inference mode, and a Llama 3's 5 shapes twice over would pass its limit of 8 per kernel, past
        # which it runs the kernel uncompiled (w.to() then copies each matrix whole).
        outside = not torch.is_inference_mode_enabled()
        with torch.inference_mode():
            out = kernel(*_as_words(w, x)) if int8 else kernel(w, x.clone())
    except Exception:  # no C++ compiler, or a platform torch.compile does not support
        kernel, out = False, None
    if int8:
        _fused_int8 = kernel
    else:
        _fused = kernel
    if out is None:
        return None
    _fused_shapes.add(shape)
    return out.clone() if outside else out  # a normal tensor for a caller outside inference mode


def linear(x, w):
    """`x @ w.T` in the dtype of `x`, whatever the dtype `w` is stored in, int8 (an `Int8Weight`) included."""
    int8 = isinstance(w, Int8Weight)
    if not int8 and w.dtype == x.dtype:
        return x @ w.T
    if torch.is_grad_enabled() and x.requires_grad:
        return x @ (w.dequantize() if int8 else w.to(x.dtype)).T  # out= below records no gradient
    if x.numel() == x.shape[-1] and w.numel() >= FUSED_MIN_ELEMENTS and w.shape[1] >= FUSED_MIN_WIDTH:
        out = _fused_matvec(w, x.reshape(-1))
        if out is not None:
            return out.view(*x.shape[:-1], w.shape[0])
    global _buffer
    rows = max(1, BLOCK_ELEMENTS // w.shape[1])
    if _buffer.dtype != x.dtype or _buffer.numel() < rows * w.shape[1]:
        # Made as a normal tensor even under torch.inference_mode: an inference
        # tensor could not be written to outside it, on a later call.
        with torch.inference_mode(False):
            _buffer = torch.empty(rows * w.shape[1], dtype=x.dtype)
    x_t = x.reshape(-1, x.shape[-1]).T
    # The result is built transposed, one row per row of w, so that each
    # block's product fills whole rows of it in place (out=). On the 8B's
    # matrices and a 17-token prompt this ran 1.15x to 1.45x faster than
    # writing each block into a column slice of x @ w.T; at 1 token, the same.
    out_t = x.new_empty(w.shape[0], x_t.shape[1])
    for start in range(0, w.shape[0], rows):
        n = min(rows, w.shape[0] - start)
        upcast = _buffer[: n * w.shape[1]].view(n, w.shape[1])
        if int8:
            w.dequantize(start, start + n, out=upcast)
        else:
            upcast.copy_(w[start : start + n])
        torch.mm(upcast, x_t, out=out_t[start : start + rows])
    return out_t.T.contiguous().view(*x.shape[:-1], w.shape[0])


def linear_each(x, *ws):
    """`[linear(x, w) for w in ws]`, as one product when the matrices are the rows of one (`helpers.int8.join`).

    `helpers.quantize_model` joins each layer's wq, wk and wv so, and its w1 and w3. Decoding then calls
    the compiled one-row kernel 4 times a layer instead of 7 (65 times a token instead of 113 on Llama
    3.2 1B), and each call costs 50 to 120 µs beyond its arithmetic on this project's machine
    (`bench/decode_step.py`). The results are views of the one product's columns.
    """
    whole = whole_of(ws)
    if whole is None:
        return [linear(x, w) for w in ws]
    return linear(x, whole).split([w.shape[0] for w in ws], dim=-1)


# Float32 keeps 24 significant bits: each sum or product is rounded to about 6e-8 of its size. Adding
# the same thousands of products in another order (blocks or one fused pass, a cache or none) changes
# which roundings happen, so two correct computations differ in their last bits, by an amount that grows
# with the size of the values they add up, not with the size of each result. On the 8B's shapes a decode
# step and a full pass differed by 5e-6 of the largest logit. A real mistake (a missing scale, a wrong
# mask, a swapped pair) moves results by a good fraction of their size. So two float32 tensors agree
# when every element is within FLOAT32_TOLERANCE of the largest magnitude in the expected one: a
# thousand times float32's rounding, and still a hundred times smaller than any mistake.
FLOAT32_TOLERANCE = 1e-4


def assert_close(actual, expected):
    """torch.testing.assert_close with the course's one tolerance, relative to the size of `expected`.

    Each element of `actual` may differ from `expected` by FLOAT32_TOLERANCE times the
    largest finite magnitude in `expected`; infinities (a mask's -inf) must match exactly.
    Integer and boolean tensors must be equal.
    """
    if not (expected.is_floating_point() or expected.is_complex()):
        return torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    magnitudes = expected.abs()[torch.isfinite(expected)]
    scale = magnitudes.max().item() if magnitudes.numel() else 0.0
    return torch.testing.assert_close(actual, expected, rtol=0, atol=FLOAT32_TOLERANCE * scale)
