"""The course's one float32 tolerance, and `assert_close`, which compares with it.

Two correct float32 computations that add the same products in another order differ in their last
bits, by an amount that grows with the size of the values added up. So two tensors agree when every
element is within FLOAT32_TOLERANCE of the largest magnitude in the expected one: over a thousand times
float32's rounding, and more than ten times below a real mistake (a forgotten eps in RMSNorm, the subtlest,
moves the tiny model's logits by 11 times the tolerance: notebook 02).
"""

import torch

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
