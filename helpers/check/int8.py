"""Notebook 08's checks: int8 weights with one scale per row, and back to float32 with one scale per group."""

import torch

from ..int8 import quantize_int8
from .harness import TWO_MODELS, described, model, report


def int8_matrix(name="tiny"):
    """Layer 0's w1 of a model in float32: (hidden_dim, dim), so that rows and columns differ in number."""
    return model(name).layer(0)["w1"].float()


def quantize_rows_reference(w):
    q = quantize_int8(w)  # one group per row
    return q.values, q.scales[:, 0]


def _quantize_truncating(w):
    scales = w.abs().amax(dim=1) / 127
    return (w / scales[:, None]).to(torch.int8), scales


def _quantize_per_column(w):
    scales = w.abs().amax(dim=0) / 127
    return (w / scales).round().to(torch.int8), scales


def _quantize_scale_is_absmax(w):
    absmax = w.abs().amax(dim=1)
    return (w / absmax[:, None] * 127).round().to(torch.int8), absmax


def _quantize_by_128(w):
    scales = w.abs().amax(dim=1) / 128
    return (w / scales[:, None]).round().to(torch.int8), scales


def _quantize_signed_max(w):
    scales = w.amax(dim=1) / 127
    return (w / scales[:, None]).round().to(torch.int8), scales


QUANTIZE_ROWS_MISTAKES = {
    "the numbers are cut toward zero, not rounded: round before converting to int8": _quantize_truncating,
    "one scale per column (the largest magnitude over dim 0); each row needs its own: amax(dim=1)":
        _quantize_per_column,
    "the scale is the row's largest magnitude itself: divide it by 127, so that values * scale gives the weights":
        _quantize_scale_is_absmax,
    "the scale divides by 128: int8 reaches -128, but +128 does not fit; divide the largest magnitude by 127":
        _quantize_by_128,
    "the scale is the row's largest value, w.amax(dim=1), not its largest magnitude, w.abs().amax(dim=1): "
    "a negative number larger in size falls outside -127..127": _quantize_signed_max,
}


def ties_settled(result, w):
    """`result` (values, scales) with each tie of `w` rounded one way, the rest as it is.

    Where w / scale is k + 1/2 (scale: the row's largest magnitude / 127), k and k + 1 are both within half
    a step of w, and which one a correct float32 formula gives depends on the last bit of a rounded product
    or scale: (w * 127 / absmax).round() and (w / scale).round() part there. Either is set to w / scale in
    float64, rounded, for the learner, helpers' reference and each mistake alike. Anything that is not int8
    values of w's shape and scales is returned as it is, for the check to judge."""
    values = result[0] if isinstance(result, (tuple, list)) and len(result) == 2 else None
    if not (isinstance(values, torch.Tensor) and values.dtype == torch.int8 and values.shape == w.shape):
        return result
    exact = w.double() * 127 / w.double().abs().amax(dim=1, keepdim=True)  # w / scale, without float32's rounding
    tie = (exact.abs() % 1 - 0.5).abs() <= 4 * torch.finfo(torch.float32).eps * exact.abs()
    either = tie & ((values.double() - exact).abs() < 1)  # k or k + 1, not a third value
    return (torch.where(either, exact.round().to(torch.int8), values), result[1])


def quantize_rows(my_quantize_rows):
    """Exercise 08: int8 values (out, in) and float32 scales (out,), each row's largest magnitude / 127.
    A tie, w / scale = k + 1/2, may round either way (`ties_settled`)."""
    def run(name):
        w = int8_matrix(name)
        return lambda fn: ties_settled(fn(w.clone()), w)

    cases = {f"{described(name)}, layer 0's w1": run(name) for name in TWO_MODELS}
    report(my_quantize_rows, cases, quantize_rows_reference, QUANTIZE_ROWS_MISTAKES)


def dequantize_reference(values, scales):
    return values.float() * scales.repeat_interleave(values.shape[1] // scales.shape[1], dim=1)


def _dequantize_tiled(values, scales):
    return values.float() * scales.repeat(1, values.shape[1] // scales.shape[1])


def _dequantize_dividing(values, scales):
    return values.float() / scales.repeat_interleave(values.shape[1] // scales.shape[1], dim=1)


def _dequantize_first_scale(values, scales):
    return values.float() * scales[:, :1]


DEQUANTIZE_MISTAKES = {
    "the scales are laid side by side (repeat): a row's first group_size numbers need its first scale, "
    "the next ones its second (repeat_interleave)": _dequantize_tiled,
    "the numbers are divided by their scale: multiply them": _dequantize_dividing,
    "the whole row takes its first group's scale: each group has its own": _dequantize_first_scale,
}


def dequantize_groups(my_dequantize):
    """Exercise 08: float32 (out, in) from int8 values (out, in) and scales (out, in / group_size)."""
    def run(name, group_size):
        q = quantize_int8(int8_matrix(name), group_size)
        return lambda fn: fn(q.values.clone(), q.scales.clone())

    cases = {f"{described(name)}, layer 0's w1, groups of {size}": run(name, size)
             for name, size in zip(TWO_MODELS, (32, 16), strict=True)}
    report(my_dequantize, cases, dequantize_reference, DEQUANTIZE_MISTAKES)
