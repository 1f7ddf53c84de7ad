"""Rotary position embeddings (RoPE), as in Meta's Llama 3 (taught in notebook 03).

Each head vector is read as head_dim/2 pairs of numbers, each pair a complex
number. A token at position m has pair j turned by the angle m * theta_j,
with theta_j = rope_theta ** (-2j / head_dim): fast turns for the first
pairs, slow ones for the last. Meta's checkpoint puts the two numbers of a
pair next to each other (adjacent pairs).
"""

import torch


def rope_frequencies(head_dim, positions, theta):
    """Unit complex numbers e^(i * m * theta_j): one row per position m, one column per pair j."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.as_tensor(positions).float(), inv_freq)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x, freqs):
    """Rotate `x` (seq, ..., head_dim) by `freqs` (seq, head_dim/2), pair by pair."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    # Line the positions up with x's first axis and repeat them over any head axes.
    freqs = freqs.view(freqs.shape[0], *[1] * (x.dim() - 2), freqs.shape[-1])
    return torch.view_as_real(pairs * freqs).flatten(-2).type_as(x)
