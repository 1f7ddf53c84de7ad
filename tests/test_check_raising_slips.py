"""A learner's function that raises, written as a learner would: the check names the likely slip after the error.

Each function below is written in another way than the known mistake it should be matched with (rsqrt instead of a
division, torch.matmul instead of @, a loop, einsum, complex numbers), so the match rests on the error itself.
"""

import math

import pytest
import torch

from helpers import check
from helpers.attention import causal_mask
from helpers.check import harness


def rms_norm_mean_without_keepdim(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1) + eps) * weight


def scores_with_k_not_transposed(q, k):
    return torch.softmax(torch.matmul(q, k) / math.sqrt(q.shape[-1]) + causal_mask(len(q), len(k)), dim=-1)


def heads_in_a_loop_reading_k_h(q, k, v):
    mask, scale = causal_mask(len(q), len(q)), math.sqrt(q.shape[-1])
    return torch.stack([torch.softmax(q[:, h] @ k[:, h].T / scale + mask, -1) @ v[:, h] for h in range(q.shape[1])], 1)


def heads_in_einsum(q, k, v):
    scores = torch.einsum("shd,thd->hst", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("hst,thd->shd", torch.softmax(scores + causal_mask(len(q), len(q)), -1), v)


def heads_in_einsum_lettered_n(q, k, v):
    weights = torch.softmax(torch.einsum("snd,tnd->nst", q, k) / q.shape[-1] ** 0.5 + causal_mask(len(q), len(q)), -1)
    return torch.einsum("nst,tnd->snd", weights, v)


def heads_batched(q, k, v):
    qt, kt, vt = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    weights = torch.softmax(qt @ kt.transpose(-2, -1) / math.sqrt(q.shape[-1]) + causal_mask(len(q), len(q)), -1)
    return (weights @ vt).transpose(0, 1)


def rope_in_complex_numbers(x, rope_theta, step=2, pairs=True):
    head_dim = x.shape[-1]
    angles = torch.outer(torch.arange(len(x)).float(), rope_theta ** (-torch.arange(0, head_dim, step) / head_dim))
    turned = torch.view_as_complex(x.float().view(len(x), -1, 2) if pairs else x.float())
    return torch.view_as_real(turned * torch.polar(torch.ones_like(angles), angles)).flatten(-2)


SLIPS = {
    "rms_norm": (rms_norm_mean_without_keepdim, "the mean (or norm) of each row lost its dimension"),
    "attention_weights": (scores_with_k_not_transposed, "k is not transposed: the scores are q @ k.T"),
    "grouped_attention loop": (heads_in_a_loop_reading_k_h, "an index into k's heads goes past k.shape[1]"),
    "grouped_attention einsum": (heads_in_einsum, "einsum pairs q's heads with k's, but k has fewer"),
    "grouped_attention einsum, other letters": (heads_in_einsum_lettered_n, "einsum pairs q's heads with k's"),
    "grouped_attention batched": (heads_batched, "k and v have fewer heads than q (grouped-query attention), and were "
                                                 "not repeated to match"),
    "rope angles": (lambda x, rope_theta: rope_in_complex_numbers(x, rope_theta, step=1),
                    "the angles and the pairs do not line up"),
    "rope pairs": (lambda x, rope_theta: rope_in_complex_numbers(x, rope_theta, pairs=False),
                   "view_as_complex reads each pair from a last dimension of size 2"),
}


@pytest.mark.parametrize("slip", SLIPS)
def test_a_slip_that_raises_is_named_after_its_error(capsys, slip):
    function, words = SLIPS[slip]
    getattr(check, slip.split()[0])(function)
    out = capsys.readouterr().out
    assert out.startswith("your function raised ") and f"; likely, {words}" in out, out
    assert out.count("\n") == 1


def test_the_complex_rope_written_right_is_correct(capsys):
    """The slips above are one change away from a right answer: it is the change that the check names."""
    check.rope(rope_in_complex_numbers)
    assert capsys.readouterr().out == "correct\n"


def test_an_error_unlike_every_mistake_gets_no_likely_cause():
    def slip(x):
        raise IndexError("index 9 is out of bounds for dimension 0 with size 2")

    def mistake(x):
        return x[[1, 2]]  # raises IndexError too, with other sizes

    line = harness.verdict(slip, {"case": lambda fn: fn(torch.zeros(2))}, lambda x: x, {"a named mistake": mistake})
    assert line == "your function raised IndexError on the case 'case': index 9 is out of bounds for dimension 0 " \
                   "with size 2"


def test_an_error_alike_with_the_sizes_named_the_other_way_round_is_matched():
    def slip(x):
        raise RuntimeError("The size of tensor a (2) must match the size of tensor b (3) at non-singleton dimension 0")

    def mistake(x):
        return x + torch.zeros(3)  # "The size of tensor a (2) ... b (3)", or the other way round

    line = harness.verdict(slip, {"case": lambda fn: fn(torch.zeros(2))}, lambda x: x, {"a named mistake": mistake})
    assert line.endswith("; likely, a named mistake"), line
