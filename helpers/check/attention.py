"""Notebook 04's checks: one head's attention weights, and grouped-query attention over every head."""

import math

import torch

from ..attention import attention_weights as head_weights
from ..attention import causal_mask
from ..params import params_from_dict
from .harness import NAN_IN_SOFTMAX, RANDOM_MODELS, TWO_MODELS, described, model, queries_keys_values, report
from .qkv_rope import NOTEBOOK_MODELS, sizes_of


def _softmax_of_scores(q, k, scale, mask, dim=-1):
    return torch.softmax(q @ k.T * scale + mask, dim=dim)


def _scaled_by(size):
    return lambda q, k: _softmax_of_scores(q, k, 1 / math.sqrt(size), causal_mask(len(q), len(k)))


def _mask_multiplied(q, k):
    """A mask of 1 (may see) and 0 (may not) multiplied into the scores: a hidden key's score becomes 0, not -inf."""
    may_see = torch.ones(len(q), len(k)).tril()
    return torch.softmax(q @ k.T / math.sqrt(q.shape[-1]) * may_see, dim=-1)


def _model_sizes():
    """Each dim and head_dim of the models a notebook may run on, which a learner may divide by in place of the
    check's head_dim, and what it is. On the tiny model, dividing by sqrt(dim) is dividing by its head_dim, 8, as
    its dim, 64, is head_dim squared: the random model's case tells that apart from "divided by head_dim"."""
    named = {}
    for size in ("dim", "head_dim"):
        for value, names in sizes_of(size).items():
            named.setdefault(value, []).append(f"the {size} of {names}")
    return {value: " and ".join(what) for value, what in named.items()}


MODEL_SIZES = _model_sizes()

ATTENTION_WEIGHTS_MISTAKES = {
    "the scores are not divided by sqrt(head_dim)":
        lambda q, k: _softmax_of_scores(q, k, 1, causal_mask(len(q), len(k))),
    "the scores are divided by head_dim; the scale is 1/sqrt(head_dim)":
        lambda q, k: _softmax_of_scores(q, k, 1 / q.shape[-1], causal_mask(len(q), len(k))),
    "the mask is on the wrong side: it hides earlier keys; -inf goes above the diagonal, on later keys":
        lambda q, k: _softmax_of_scores(q, k, q.shape[-1] ** -0.5, causal_mask(len(q), len(k)).T),
    "there is no causal mask: each token sees the tokens after it":
        lambda q, k: _softmax_of_scores(q, k, q.shape[-1] ** -0.5, 0),
    "the softmax runs over the queries (dim 0); each query's row is a distribution over the keys (dim -1)":
        lambda q, k: _softmax_of_scores(q, k, q.shape[-1] ** -0.5, causal_mask(len(q), len(k)), dim=0),
    "k is not transposed: the scores are q @ k.T, each query's dot product with each key":  # raises
        lambda q, k: torch.softmax(q @ k / math.sqrt(q.shape[-1]) + causal_mask(len(q), len(k)), dim=-1),
    "a mask of 0s and 1s is multiplied into the scores, which makes a hidden key's score 0, not -inf: add -inf "
    "to the scores of later keys (or masked_fill them with -inf)": _mask_multiplied,
} | {
    f"the scores are divided by sqrt({size}), the square root of {what}; the scale is 1/sqrt(head_dim), with "
    "head_dim = q.shape[-1] (the check's models have other sizes than the notebook's `p`)": _scaled_by(size)
    for size, what in MODEL_SIZES.items()
}


def attention_weights(my_attention_weights):
    """Exercise 04: one head's weights, softmax(q k^T / sqrt(head_dim) + causal mask), (seq, seq)."""
    def run(name, h, j):
        q, k, _ = queries_keys_values(name=name)
        return lambda fn: fn(q[:, h].clone(), k[:, j].clone())

    cases = {f"{described(name)}, query head {h} with key head {j}": run(name, h, j) for name in TWO_MODELS
             for h, j in ((0, 0), (model(name).params.n_heads - 1, 1))}
    report(my_attention_weights, cases, head_weights, ATTENTION_WEIGHTS_MISTAKES, nan=NAN_IN_SOFTMAX)


def heads_reading(kv_head_of, weights=head_weights):
    """Grouped-query attention where query head h reads key/value head kv_head_of(h, n_heads, n_kv_heads), with
    each head's attention weights from `weights(q, k)`."""
    def heads(q, k, v):
        n_heads, n_kv_heads = q.shape[1], k.shape[1]
        out = []
        for h in range(n_heads):
            j = kv_head_of(h, n_heads, n_kv_heads)
            out.append(weights(q[:, h], k[:, j]) @ v[:, j])
        return torch.stack(out, dim=1)
    return heads


def reads_in_groups(h, n_heads, n_kv_heads):
    """Query head h reads key/value head h // n_rep: each key/value head serves n_rep consecutive query heads."""
    return h // (n_heads // n_kv_heads)


grouped_attention_reference = heads_reading(reads_in_groups)


def _n_reps_that_run():
    """The n_rep of the models a notebook may run on, and which models have it, where `h // n_rep` reads a
    key/value head that each of the check's models has (elsewhere the learner's function raises IndexError)."""
    cases = [NOTEBOOK_MODELS["the tiny model"] if name == "tiny" else params_from_dict(RANDOM_MODELS[name][0])
             for name in TWO_MODELS]
    return {n_rep: name for n_rep, name in sizes_of("n_rep").items()
            if all((p.n_heads - 1) // n_rep < p.n_kv_heads for p in cases)}


SHARE = ("query head h reads key/value head h // n_rep, n_rep = q.shape[1] // k.shape[1]; index k[:, h // n_rep], or "
         "repeat k and v with repeat_interleave(n_rep, dim=1)")
GROUPED_ATTENTION_MISTAKES = {
    "query head h reads key/value head h % n_kv_heads, the order k.repeat(...) gives; it is h // n_rep, the "
    "order of repeat_interleave (consecutive query heads share one)":
        heads_reading(lambda h, n_heads, n_kv_heads: h % n_kv_heads),
    "every query head reads key/value head 0":
        heads_reading(lambda h, n_heads, n_kv_heads: 0),
    "the heads are stacked on the last axis, (seq, head_dim, n_heads); stack them on axis 1, (seq, n_heads, head_dim)":
        lambda q, k, v: grouped_attention_reference(q, k, v).transpose(1, 2),
    # Three that raise, each where a learner meets it: the heads batched, in einsum, and one at a time.
    f"k and v have fewer heads than q (grouped-query attention), and were not repeated to match: {SHARE}":
        lambda q, k, v: q.transpose(0, 1) @ k.transpose(0, 1).transpose(1, 2),
    f"einsum pairs q's heads with k's, but k has fewer (grouped-query attention): {SHARE}":
        lambda q, k, v: torch.einsum("qhd,khd->hqk", q, k),
    f"an index into k's heads goes past k.shape[1], as k has fewer heads than q (grouped-query attention): {SHARE}":
        lambda q, k, v: torch.stack([q[:, h] @ k[:, h].T for h in range(q.shape[1])]),
} | {
    f"query head h reads key/value head h // {n_rep}, with n_rep = {n_rep}, that of {names}; the check's models "
    "have other sizes than the notebook's `p`: n_rep = q.shape[1] // k.shape[1]":
        heads_reading(lambda h, n_heads, n_kv_heads, n_rep=n_rep: h // n_rep)
    for n_rep, names in _n_reps_that_run().items()
}


def grouped_attention(my_grouped_attention):
    """Exercise 04: every query head's output, (seq, n_heads, head_dim), from q and the fewer heads of k and v."""
    def run(name):
        q, k, v = queries_keys_values(name=name)
        return lambda fn: fn(q.clone(), k.clone(), v.clone())

    cases = {f"{described(name)}, layer 0": run(name) for name in TWO_MODELS}
    report(my_grouped_attention, cases, grouped_attention_reference, GROUPED_ATTENTION_MISTAKES, nan=NAN_IN_SOFTMAX)
