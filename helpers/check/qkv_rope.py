"""Notebook 03's checks: one head's queries, and RoPE on adjacent pairs, on layer 0 of the tiny model."""

import torch

from ..compute import linear
from ..rope import apply_rope, rope_frequencies
from .harness import normalised, queries_keys_values, report, tiny_model


def head_queries_reference(x, wq, n_heads, h):
    return linear(x, wq).view(len(x), n_heads, -1)[:, h]


HEAD_QUERIES_MISTAKES = {
    "the heads are interleaved (rows h, h + n_heads, ...): head h is the h-th block of head_dim rows":
        lambda x, wq, n_heads, h: linear(x, wq[h::n_heads]),
    "wq is not transposed: the projection is x @ wq.T":
        lambda x, wq, n_heads, h: (x @ wq).view(len(x), n_heads, -1)[:, h],
}


def head_queries(my_head_queries):
    """Exercise 03: head h's queries, (seq, head_dim), from x (seq, dim) and wq (n_heads * head_dim, dim)."""
    p, x, wq = tiny_model().params, normalised(), tiny_model().layer(0)["wq"].float()
    cases = {f"head {h}": lambda fn, h=h: fn(x.clone(), wq.clone(), p.n_heads, h) for h in (0, 3)}
    report(my_head_queries, cases, head_queries_reference, HEAD_QUERIES_MISTAKES)


def rope_reference(x, rope_theta):
    return apply_rope(x, rope_frequencies(x.shape[-1], torch.arange(len(x)), rope_theta))


def pair_angles(n_positions, head_dim, rope_theta, first_position=0, exponent_step=2):
    """The angle m * theta_j of each position m and pair j, theta_j = rope_theta ** (-2j / head_dim)."""
    theta_j = rope_theta ** (-exponent_step * torch.arange(head_dim // 2) / head_dim)
    return torch.outer(torch.arange(first_position, first_position + n_positions).float(), theta_j)


def rotate_adjacent_pairs(x, angles):
    a, b = x[:, 0::2], x[:, 1::2]
    return torch.stack([a * angles.cos() - b * angles.sin(), a * angles.sin() + b * angles.cos()], -1).flatten(-2)


def _rope_half_split(x, rope_theta):
    angles = pair_angles(len(x), x.shape[-1], rope_theta)
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * angles.cos() - b * angles.sin(), a * angles.sin() + b * angles.cos()], -1)


ROPE_MISTAKES = {
    "the pairs are split in halves, (x[j], x[j + head_dim/2]), Hugging Face's layout; "
    "Meta's checkpoint pairs adjacent numbers, (x[2j], x[2j+1])": _rope_half_split,
    "the positions start at 1; the first token is at position 0":
        lambda x, rope_theta: rotate_adjacent_pairs(x, pair_angles(len(x), x.shape[-1], rope_theta, first_position=1)),
    "it rotates the wrong way: the sign of sin is flipped":
        lambda x, rope_theta: rotate_adjacent_pairs(x, -pair_angles(len(x), x.shape[-1], rope_theta)),
    "the 2 is missing from theta_j = rope_theta ** (-2j / head_dim)":
        lambda x, rope_theta: rotate_adjacent_pairs(x, pair_angles(len(x), x.shape[-1], rope_theta, exponent_step=1)),
}


def rope(my_rope):
    """Exercise 03: RoPE on x (seq, head_dim), row m at position m, adjacent pairs turned by m * theta_j."""
    q, k, _ = queries_keys_values(rope=False)
    theta = tiny_model().params.rope_theta
    cases = {
        "head 0's queries": lambda fn: fn(q[:, 0].clone(), theta),
        "key/value head 1's keys": lambda fn: fn(k[:, 1].clone(), theta),
    }
    report(my_rope, cases, rope_reference, ROPE_MISTAKES)
