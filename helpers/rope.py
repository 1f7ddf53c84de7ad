"""Rotary position embeddings (RoPE), as in Meta's Llama 3 (taught in notebook 03).

Each head vector is read as head_dim/2 pairs of numbers, each pair a complex
number. A token at position m has pair j turned by the angle m * theta_j,
with theta_j = rope_theta ** (-2j / head_dim): fast turns for the first
pairs, slow ones for the last. Meta's checkpoint puts the two numbers of a
pair next to each other (adjacent pairs): `apply_rope`. Hugging Face's
converted checkpoints pair each number with the one half a head further on,
their wq/wk rows reordered to match: `apply_rope_half_split` (notebook 03b).

Llama 3.1 and later stretch the slow turns so that a context of 128K tokens
looks, to those pairs, like the 8K the model was first trained on: see
`scale_frequencies`.
"""

import math

import torch

# Llama 3.1's RoPE scaling: the context the model was first trained on, and the two
# wavelength bands, as fractions of it, between which the scaling fades in.
ORIGINAL_CONTEXT = 8192
LOW_FREQ_FACTOR = 1.0
HIGH_FREQ_FACTOR = 4.0


def scale_frequencies(freqs, factor, low_freq_factor=LOW_FREQ_FACTOR, high_freq_factor=HIGH_FREQ_FACTOR,
                      original_context=ORIGINAL_CONTEXT):
    """Llama 3.1's scaling of the turn rates `freqs` (radians per position), for a longer context.

    A pair's wavelength is the number of positions of one full turn, 2*pi / freq. Pairs whose
    wavelength is shorter than original_context / high_freq_factor (2,048 positions) are kept: they
    tell nearby tokens apart. Pairs longer than original_context / low_freq_factor (8,192) turn
    `factor` times slower, so that 8,192 * factor positions look to them like 8,192 did in training.
    Between the two, the rate is a blend, moving smoothly from the first rule to the second.
    """
    wavelength = 2 * math.pi / freqs
    # 1 for short wavelengths (keep), 0 for long ones (divide), linear in 1/wavelength between.
    keep = ((original_context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)).clamp(0, 1)
    return keep * freqs + (1 - keep) * freqs / factor


def rope_frequencies(head_dim, positions, theta, scale_factor=None):
    """Unit complex numbers e^(i * m * theta_j): one row per position m, one column per pair j.

    `scale_factor` (Llama 3.1 and later; `params.rope_scaling_factor`) slows the long wavelengths
    down; None leaves them as Llama 3 has them.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    if scale_factor is not None:
        freqs = scale_frequencies(freqs, scale_factor)
    angles = torch.outer(torch.as_tensor(positions).float(), freqs)
    return torch.polar(torch.ones_like(angles), angles)


def lined_up(freqs, x):
    """`freqs` (seq, head_dim/2) lined up with x's first axis and repeated over any head axes of `x`."""
    return freqs.view(freqs.shape[0], *[1] * (x.dim() - 2), freqs.shape[-1])


def apply_rope(x, freqs):
    """Rotate `x` (seq, ..., head_dim) by `freqs` (seq, head_dim/2), pair by pair: (x0, x1), (x2, x3), ..."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * lined_up(freqs, x)).flatten(-2).type_as(x)


def apply_rope_half_split(x, freqs):
    """RoPE in Hugging Face's layout ("rotate half"): pair j is (x_j, x_(j + head_dim/2)).

    Right for wq/wk rows reordered as Hugging Face's conversion does; on Meta's own rows, wrong.
    """
    half = x.shape[-1] // 2
    pairs = torch.complex(x[..., :half].float(), x[..., half:].float())
    turned = pairs * lined_up(freqs, x)
    return torch.cat([turned.real, turned.imag], dim=-1).type_as(x)
