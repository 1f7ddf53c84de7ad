"""Notebook 04's checks: one head's attention weights, and grouped-query attention over every head."""

import torch

from ..attention import attention_weights as head_weights
from ..attention import causal_mask
from .harness import queries_keys_values, report


def _softmax_of_scores(q, k, scale, mask, dim=-1):
    return torch.softmax(q @ k.T * scale + mask, dim=dim)


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
}


def attention_weights(my_attention_weights):
    """Exercise 04: one head's weights, softmax(q k^T / sqrt(head_dim) + causal mask), (seq, seq)."""
    q, k, _ = queries_keys_values()
    cases = {
        "query head 0 with key head 0": lambda fn: fn(q[:, 0].clone(), k[:, 0].clone()),
        "query head 7 with key head 1": lambda fn: fn(q[:, 7].clone(), k[:, 1].clone()),
    }
    report(my_attention_weights, cases, head_weights, ATTENTION_WEIGHTS_MISTAKES)


def heads_reading(kv_head_of):
    """Grouped-query attention where query head h reads key/value head kv_head_of(h, n_heads, n_kv_heads)."""
    def heads(q, k, v):
        n_heads, n_kv_heads = q.shape[1], k.shape[1]
        out = []
        for h in range(n_heads):
            j = kv_head_of(h, n_heads, n_kv_heads)
            out.append(head_weights(q[:, h], k[:, j]) @ v[:, j])
        return torch.stack(out, dim=1)
    return heads


# Query head h reads key/value head h // n_rep: each key/value head serves n_rep consecutive query heads.
grouped_attention_reference = heads_reading(lambda h, n_heads, n_kv_heads: h // (n_heads // n_kv_heads))

GROUPED_ATTENTION_MISTAKES = {
    "query head h reads key/value head h % n_kv_heads; it is h // n_rep (consecutive query heads share one)":
        heads_reading(lambda h, n_heads, n_kv_heads: h % n_kv_heads),
    "every query head reads key/value head 0":
        heads_reading(lambda h, n_heads, n_kv_heads: 0),
}


def grouped_attention(my_grouped_attention):
    """Exercise 04: every query head's output, (seq, n_heads, head_dim), from q and the fewer heads of k and v."""
    q, k, v = queries_keys_values()
    cases = {"layer 0": lambda fn: fn(q.clone(), k.clone(), v.clone())}
    report(my_grouped_attention, cases, grouped_attention_reference, GROUPED_ATTENTION_MISTAKES)
