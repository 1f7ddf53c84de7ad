"""Solutions to the exercises of notebook 03: one head's queries, and RoPE with adjacent pairs."""

import torch


def my_head_queries(x, wq, n_heads, h):
    head_dim = wq.shape[0] // n_heads
    rows = wq[h * head_dim : (h + 1) * head_dim]  # head h owns the h-th block of head_dim rows
    return x @ rows.T


def my_rope_positions(x, rope_theta):
    n_positions, head_dim = x.shape
    theta_j = rope_theta ** (-2 * torch.arange(head_dim // 2) / head_dim)
    angles = torch.arange(n_positions).float()[:, None] * theta_j  # (seq, head_dim/2)
    first, second = x[:, 0::2], x[:, 1::2]
    out = torch.empty_like(x)
    out[:, 0::2] = first * angles.cos() - second * angles.sin()
    out[:, 1::2] = first * angles.sin() + second * angles.cos()
    return out
