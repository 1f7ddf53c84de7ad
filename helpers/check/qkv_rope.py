"""Notebook 03's checks: one head's queries, and RoPE on adjacent pairs, on layer 0 of the tiny model and of a
random model whose sizes differ from it."""

import torch

from ..compute import linear
from ..model import TINY_MODEL_DIR
from ..params import SHAPES, load_params, params_from_dict
from ..rope import apply_rope, rope_frequencies
from .harness import TWO_MODELS, described, model, normalised, queries_keys_values, report

# The models a notebook may run on, whose sizes a learner may take from the notebook's `p` instead of from the
# tensors: the tiny model and the real shapes.
NOTEBOOK_MODELS = {"the tiny model": load_params(TINY_MODEL_DIR)} | {
    shape.name: params_from_dict(shape.params, source=shape.name) for shape in SHAPES.values()}


def sizes_of(size):
    """Each value of `size` (a Params attribute: "dim", "head_dim", "n_rep") among NOTEBOOK_MODELS, and the models
    that have it, as words: "the tiny model", "Meta-Llama-3-8B and Llama 3.1 8B"."""
    found = {}
    for name, params in NOTEBOOK_MODELS.items():
        found.setdefault(getattr(params, size), []).append(name)
    return {value: ", ".join(names[:-1]) + " and " * (len(names) > 1) + names[-1] for value, names in found.items()}


def head_queries_reference(x, wq, n_heads, h):
    return linear(x, wq).view(len(x), n_heads, -1)[:, h]


HEAD_QUERIES_MISTAKES = {
    "the heads are interleaved (rows h, h + n_heads, ..., as view(seq, head_dim, n_heads) reads them): head h is "
    "the h-th block of head_dim rows, view(seq, n_heads, head_dim)":
        lambda x, wq, n_heads, h: linear(x, wq[h::n_heads]),
    "wq is not transposed: the projection is x @ wq.T":
        lambda x, wq, n_heads, h: (x @ wq).view(len(x), n_heads, -1)[:, h],
} | {
    f"head h's rows are cut with head_dim = {head_dim}, the head_dim of {names}; the check's models have other "
    "sizes than the notebook's `p`: head_dim is wq.shape[0] // n_heads":
        lambda x, wq, n_heads, h, head_dim=head_dim: x @ wq[h * head_dim:(h + 1) * head_dim].T
    for head_dim, names in sizes_of("head_dim").items()
}


def head_queries(my_head_queries):
    """Exercise 03: head h's queries, (seq, head_dim), from x (seq, dim) and wq (n_heads * head_dim, dim)."""
    def run(name, h):
        wq = model(name).layer(0)["wq"].float()
        return lambda fn: fn(normalised(name).clone(), wq.clone(), model(name).params.n_heads, h)

    cases = {f"{described(name)}, head {h}": run(name, h) for name in TWO_MODELS for h in (0, 3)}
    report(my_head_queries, cases, head_queries_reference, HEAD_QUERIES_MISTAKES)


def rope_reference(x, rope_theta):
    return apply_rope(x, rope_frequencies(x.shape[-1], torch.arange(len(x)), rope_theta))


def pair_angles(n_positions, head_dim, rope_theta, first_position=0, exponent_step=2):
    """The angle m * theta_j of each position m and pair j, theta_j = rope_theta ** (-2j / head_dim)."""
    theta_j = rope_theta ** (-exponent_step * torch.arange(head_dim // 2) / head_dim)
    return torch.outer(torch.arange(first_position, first_position + n_positions).float(), theta_j)


def rotate_adjacent_pairs(x, angles, swapped=False):
    a, b = x[:, 0::2], x[:, 1::2]
    pair = [a * angles.cos() - b * angles.sin(), a * angles.sin() + b * angles.cos()]
    return torch.stack(pair[::-1] if swapped else pair, -1).flatten(-2)


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
    "the 2 is counted twice: torch.arange(0, head_dim, 2) already holds 2j, so theta_j = rope_theta ** (-that / "
    "head_dim), with no second 2":
        lambda x, rope_theta: rotate_adjacent_pairs(x, pair_angles(len(x), x.shape[-1], rope_theta, exponent_step=4)),
    "rope_theta is written as 500000 (Meta-Llama-3-8B's): use the rope_theta argument, models differ":
        lambda x, rope_theta: rope_reference(x, 500000.0),
    "view_as_complex reads each pair from a last dimension of size 2: view x as (seq, head_dim // 2, 2) first, "
    "x.float().view(len(x), -1, 2)":  # raises
        lambda x, rope_theta: torch.view_as_complex(x),
    "the angles and the pairs do not line up: there is one angle per pair, head_dim/2 of them, rope_theta ** "
    "(-torch.arange(0, head_dim, 2) / head_dim), each turning one pair (x[:, 0::2], x[:, 1::2])":  # raises
        lambda x, rope_theta: rotate_adjacent_pairs(x, pair_angles(len(x), 2 * x.shape[-1], rope_theta)),
    "each pair's two outputs are swapped: the first is a cos - b sin, the second a sin + b cos":
        lambda x, rope_theta: rotate_adjacent_pairs(x, pair_angles(len(x), x.shape[-1], rope_theta), swapped=True),
}


def rope(my_rope):
    """Exercise 03: RoPE on x (seq, head_dim), row m at position m, adjacent pairs turned by m * theta_j."""
    def run(name, which):
        q, k, _ = queries_keys_values(rope=False, name=name)
        x = q[:, 0] if which == "head 0's queries" else k[:, 1]
        return lambda fn: fn(x.clone(), model(name).params.rope_theta)

    cases = {f"{described(name)}, {which}": run(name, which) for name in TWO_MODELS
             for which in ("head 0's queries", "key/value head 1's keys")}
    report(my_rope, cases, rope_reference, ROPE_MISTAKES)
