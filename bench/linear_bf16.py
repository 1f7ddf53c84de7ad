"""Where a decode step's time goes: reading the bf16 weights, converting them, multiplying; and int8.

    .venv/bin/python bench/linear_bf16.py

Decoding one token multiplies every weight matrix of the 8B by one vector, so
it is bound by how fast the weights are read. This script takes eight
matrices of the 8B's largest shape (14336 x 4096, bf16, 0.94 GB in all, far
beyond the CPU caches) and one float32 vector, and prints, as seconds per
8B token (15 GB of bf16 weights, the embedding table aside) and as GB/s of
bf16 weights read:

- reading the weights alone (a bf16 sum): the memory bandwidth;
- `helpers.linear` for one row: the kernel compiled by torch.compile, which
  converts and multiplies in one pass (its first call, which compiles it, is
  not counted);
- the same for the matrices quantised to int8 (`helpers.quantize_int8`, a
  scale per row), with their compiled int8 kernel: as seconds per 8B token in
  int8 (7.5 GB) and GB/s of int8 weights read;
- the block path, which `linear` takes for several rows (and for one row
  where torch.compile is unavailable), and its two halves alone: converting
  each block into the float32 buffer, and multiplying the buffer (already in
  the CPU cache) by the vector.

Then the same for a 17-token prompt (the classic prompt's prefill), which
takes the block path: as seconds per 8B pass and as GFLOPS, its product alone
by oneDNN (as `linear` makes it, where torch has oneDNN) and by `@` (MKL);
the block path on the 8B's w2 (4096 x 14336) with blocks of 64 to 512 rows;
next to the float32 product of two 2048 x 2048 matrices, about the best rate
this machine's float32 products reach. Seventeen rows are arithmetic-bound, not
memory-bound: 17 products per weight read.

A benchmark, not a test: the figures depend on the machine and on what else
runs on it; each is the best of 4 runs.
"""

import time

import torch

import helpers.compute
from helpers import kernels, linear, quantize_int8
from helpers.compute import BLOCK_ELEMENTS, MIN_BLOCK_ROWS, times_transposed

TOKEN_GB = 15.0  # bf16 weights read per 8B token, the embedding table aside

torch.manual_seed(0)
weights = [torch.randn(14336, 4096).to(torch.bfloat16) for _ in range(8)]
x = torch.randn(1, 4096)
rows = max(MIN_BLOCK_ROWS, BLOCK_ELEMENTS // 4096)
buffer = torch.empty(rows, 4096)
out = torch.empty(1, 14336)
weights_gb = sum(w.numel() for w in weights) * 2 / 1e9
int8_weights = [quantize_int8(w) for w in weights]


def read_only():
    for w in weights:
        w.sum()


def course_linear():
    for w in weights:
        linear(x, w)


def course_linear_int8():
    for w in int8_weights:
        linear(x, w)


def block_path():
    fused_from = kernels.MIN_ELEMENTS
    kernels.MIN_ELEMENTS = float("inf")
    try:
        course_linear()
    finally:
        kernels.MIN_ELEMENTS = fused_from


def convert_only():
    for w in weights:
        for start in range(0, w.shape[0], rows):
            buffer.copy_(w[start : start + rows])


def multiply_only():
    for w in weights:
        for start in range(0, w.shape[0], rows):
            out[:, start : start + rows] = times_transposed(x, buffer)


PROMPT_ROWS = 17
x_prompt = torch.randn(PROMPT_ROWS, 4096)
out_prompt = torch.empty(PROMPT_ROWS, 14336)
square = torch.randn(2048, 2048)


def block_path_prompt():
    for w in weights:
        linear(x_prompt, w)


def multiply_only_prompt():
    for w in weights:
        for start in range(0, w.shape[0], rows):
            out_prompt[:, start : start + rows] = times_transposed(x_prompt, buffer)


def multiply_by_at_prompt():
    for w in weights:
        for start in range(0, w.shape[0], rows):
            out_prompt[:, start : start + rows] = x_prompt @ buffer.T


W2_SHAPE = (4096, 14336)
w2 = torch.randn(*W2_SHAPE).to(torch.bfloat16)
x_w2 = torch.randn(PROMPT_ROWS, W2_SHAPE[1])


def w2_blocks(block_rows):
    """`linear` of the prompt by w2, blocks of exactly `block_rows` rows."""
    elements, fewest = helpers.compute.BLOCK_ELEMENTS, helpers.compute.MIN_BLOCK_ROWS
    helpers.compute.BLOCK_ELEMENTS, helpers.compute.MIN_BLOCK_ROWS = 0, block_rows
    try:
        linear(x_w2, w2)
    finally:
        helpers.compute.BLOCK_ELEMENTS, helpers.compute.MIN_BLOCK_ROWS = elements, fewest


def large_product():
    torch.mm(square, square)


def best_time(run):
    run()  # warm-up (and, for linear, asking for the kernel, which is compiled in the background)
    kernels.wait()
    run()
    times = []
    for _ in range(4):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


print(f"{torch.get_num_threads()} threads; blocks of {rows} rows ({rows * 4096 * 4 / 2**20:.0f} MiB of float32); "
      f"products by {'oneDNN' if helpers.compute.ONEDNN else '@'}")
with torch.inference_mode():
    for name, run in [("read the bf16 weights (sum)", read_only), ("helpers.linear, one row", course_linear),
                      ("the same, int8 weights", course_linear_int8), ("the block path", block_path),
                      ("  its conversion alone", convert_only), ("  its product alone", multiply_only)]:
        best = best_time(run)
        gb = weights_gb / 2 if run is course_linear_int8 else weights_gb  # one byte a weight in int8
        print(f"{name:<30} {best / weights_gb * TOKEN_GB:5.2f} s per 8B token  ({gb / best:5.1f} GB/s)")
    print(f"A {PROMPT_ROWS}-token prompt:")
    prompt_flops = 2 * PROMPT_ROWS * sum(w.numel() for w in weights)
    for name, run in [("the block path", block_path_prompt), ("  its product alone", multiply_only_prompt),
                      ("  the same by @ (MKL)", multiply_by_at_prompt)]:
        best = best_time(run)
        print(f"{name:<30} {best / weights_gb * TOKEN_GB:5.2f} s per 8B pass   "
              f"({prompt_flops / best / 1e9:5.1f} GFLOPS)")
    print(f"The same prompt times the 8B's w2 ({W2_SHAPE[0]} x {W2_SHAPE[1]}) by the block path, with blocks of:")
    for block_rows in (64, 128, 256, 512):
        best = best_time(lambda n=block_rows: w2_blocks(n))
        print(f"  {block_rows:4d} rows ({block_rows * W2_SHAPE[1] * 4 / 2**20:4.1f} MiB)"
              f"{best * 1e3:17.1f} ms          ({2 * PROMPT_ROWS * w2.numel() / best / 1e9:5.1f} GFLOPS)")
    best = best_time(large_product)
    print(f"{'2048 x 2048 times 2048 x 2048':<30} {'':>20}   ({2 * 2048**3 / best / 1e9:5.1f} GFLOPS)")
