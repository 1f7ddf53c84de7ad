"""PyTorch's own int8 products against the course's int8 `linear`, before writing more kernels.

    .venv/bin/python bench/int8_ops.py

Eight matrices of the 8B's largest shape (14336 x 4096), quantised with one scale per row
(`helpers.quantize_int8`: 0.47 GB of int8 in all, far beyond the CPU caches), times one float32 row
(a decoded token) and 17 rows (the classic prompt's prefill), several ways:

- `helpers.linear`: the course's compiled one-row kernel, and its block path for 17 rows; activations
  stay float32;
- `torch.ops.aten._weight_int8pack_mm`: PyTorch's weight-only int8 product (int8 weights, one scale
  per row, float32 activations), the same arithmetic as the course's;
- `torch._int_mm` after rounding the activations to int8 as well, one scale per row of `x` (as
  llama.cpp's Q8_0 does per block of 32): int8 times int8 into int32, which oneDNN can run on
  VNNI or AMX; the two scales are applied afterwards. Twice: as x @ w.T, and as (w @ x.T).T, the
  same integer sums with the weights' rows first; and by oneDNN's int8 linear layer on its own packed
  copy of the weights (`helpers.int8.packed_for_prompts`), x shifted by 128 into uint8;
- `helpers.linear` with x rounded to int8 (`activations="int8"`): for 17 rows, oneDNN's int8 product on
  its own packed copy of the weights (`helpers.int8.packed_for_prompts`), for one row `_int_mm` as
  (w @ x.T).T.

Each is printed as seconds per 8B token (7.5 GB of int8 weights) and GB/s of int8 weights read, with
its largest difference from float32 on the dequantised weights, relative to the largest value. Then
what rounding the activations costs a whole model (`quantize_model(model, activations="int8")`):
the share of positions whose top token stays the one of the model's own weights, and the largest logit
difference, over the tiny model's corpus, for the tiny model and for SmolLM2-135M-Instruct (a trained
model; where `make smollm2` has put it in .cache/), against int8 weights alone, and how far the largest
number of a row of x stands above the row's root mean square, which sets how coarse its one scale is. The speeds are a
benchmark, not a test: they depend on the machine and on what else runs on it; each is the best of 4.
"""

import dataclasses
import platform
import time

import torch

from helpers import TINY_MODEL_DIR, compute, forward, kernels, linear, load_model, quantize_int8, quantize_model
from helpers.int8 import packed_for_prompts
from helpers.smollm2 import find_smollm2

TOKEN_GB = 7.5  # int8 weights read per 8B token, the embedding table aside

torch.manual_seed(0)
weights = [quantize_int8(torch.randn(14336, 4096).to(torch.bfloat16)) for _ in range(8)]
row_scales = [w.scales[:, 0].contiguous() for w in weights]  # one scale per row: (rows, 1) -> (rows,)
weights_gb = sum(w.values.numel() for w in weights) / 1e9


def course(x):
    return [linear(x, w) for w in weights]


def weight_int8pack_mm(x):
    return [torch.ops.aten._weight_int8pack_mm(x, w.values, s) for w, s in zip(weights, row_scales, strict=True)]


def int_mm(x):
    """Activations rounded to int8 per row, int8 x int8 -> int32 (x8 @ w.T), then both scales."""
    x_scale = x.abs().amax(1, keepdim=True) / 127
    x8 = (x / x_scale).round().to(torch.int8)
    return [torch._int_mm(x8, w.values.t()) * x_scale * s for w, s in zip(weights, row_scales, strict=True)]


def int_mm_weights_first(x):
    """The same integer sums as w @ x8.T, transposed back: as `helpers.compute.times_rounded_rows` has it."""
    x_scale = x.abs().amax(1, keepdim=True) / 127
    x8 = (x / x_scale).round().to(torch.int8)
    return [torch._int_mm(w.values, x8.t()).t() * x_scale * s for w, s in zip(weights, row_scales, strict=True)]


rounding = [dataclasses.replace(w, rounds_activations=True, packed=packed_for_prompts(w.values)) for w in weights]


def packed_qlinear(x):
    """oneDNN's int8 linear layer on the packed copies, for any number of rows (x shifted into uint8)."""
    x_scale = x.abs().amax(1, keepdim=True) / 127
    shifted = (x / x_scale).round().add(128).to(torch.uint8)
    zero = torch.zeros(1, dtype=torch.int64)
    return [torch.ops.onednn.qlinear_pointwise(shifted, 1.0, 128, w.packed, s, zero, None, 1.0, 0, torch.float32,
                                               "none", [], "") * x_scale
            for w, s in zip(rounding, row_scales, strict=True)]


def course_rounding(x):
    """`linear` with x rounded: oneDNN's int8 product on the packed copy for 17 rows, `_int_mm` for one."""
    return [linear(x, w) for w in rounding]


def best_time(run, x):
    run(x)  # warm-up: the course's one-row kernel is asked for, and compiled in the background ...
    kernels.wait()
    run(x)  # ... and loaded
    times = []
    for _ in range(4):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return min(times)


def error(results, x):
    """Largest difference from float32 on the dequantised weights, relative to the largest value."""
    worst = 0.0
    for w, y in zip(weights, results, strict=True):
        exact = x @ (w.values.float() * w.scales).T
        worst = max(worst, float((y - exact).abs().max() / exact.abs().max()))
    return worst


print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
with torch.inference_mode():
    for rows in (1, 17):
        x = torch.randn(rows, 4096)
        print(f"{rows} row{'s' if rows > 1 else ''} of x:")
        for name, run in [("helpers.linear", course), ("aten._weight_int8pack_mm", weight_int8pack_mm),
                          ("_int_mm, x rounded to int8", int_mm), ("  the same as w @ x.T", int_mm_weights_first),
                          ("  oneDNN, packed copy", packed_qlinear),
                          ("helpers.linear, x in int8", course_rounding)]:
            best = best_time(run, x)
            print(f"  {name:<28} {best / weights_gb * TOKEN_GB:6.2f} s per 8B token  "
                  f"({weights_gb / best:5.1f} GB/s)   error {error(run(x), x):.1e}")


def agreement(model, lines):
    """(same top token, positions, largest logit difference, largest logit) of int8 with and without
    rounded activations, against the model as it is, over `lines`."""
    with torch.inference_mode():
        reference = torch.cat([forward(model, model.tokenizer.encode(line)) for line in lines])
        for activations in ("float32", "int8"):
            q = quantize_model(model, activations=activations)
            logits = torch.cat([forward(q, model.tokenizer.encode(line)) for line in lines])
            same = int((logits.argmax(-1) == reference.argmax(-1)).sum())
            yield activations, same, len(reference), float((logits - reference).abs().max()), float(
                reference.abs().max())


def row_peaks(model, lines):
    """Each row of x that the products with rounded activations take, over `lines`: its largest magnitude
    divided by its root mean square (a few for random numbers; many where a few dimensions are outliers,
    which one scale a row must cover)."""
    q, rounded, peaks = quantize_model(model, activations="int8"), compute.times_rounded_rows, []

    def recording(x, w):
        rows = x.reshape(-1, x.shape[-1])
        rms = rows.pow(2).mean(1).sqrt()
        peaks.append((rows.abs().amax(1) / rms)[rms > 0])
        return rounded(x, w)

    compute.times_rounded_rows = recording
    try:
        with torch.inference_mode():
            for line in lines:
                forward(q, model.tokenizer.encode(line))
    finally:
        compute.times_rounded_rows = rounded
    return torch.cat(peaks)


print("What rounding x costs, against the model's own weights, over the tiny model's corpus:")
lines = [line for line in (TINY_MODEL_DIR / "corpus.txt").read_text().splitlines() if line.strip()]
for name, model in [("tiny Llama 3", load_model(TINY_MODEL_DIR, verbose=False)),
                    ("SmolLM2-135M", load_model(folder, verbose=False) if (folder := find_smollm2()) else None)]:
    for activations, same, positions, gap, largest in agreement(model, lines) if model else ():
        print(f"  {name}, int8 weights, {activations} activations: same top token at {same} of {positions} "
              f"({same / positions:.1%}); largest logit difference {gap:.3f} ({gap / largest:.2%} of the largest)")
    if model:
        peaks = row_peaks(model, lines)
        print(f"  {name}: a row of x's largest magnitude is {peaks.median():.1f} times its root mean square "
              f"(median over {len(peaks):,} rows; at most {peaks.max():.1f})")
