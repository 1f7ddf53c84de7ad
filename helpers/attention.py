"""Causal self-attention, one head at a time and all heads at once (notebooks 03 and 04).

With grouped-query attention (GQA), Llama 3 has fewer key/value heads than
query heads: query head h reads key/value head h // n_rep, where
n_rep = n_heads // n_kv_heads.
"""

import math

import torch

from .compute import linear, linear_each
from .rope import apply_rope


def causal_mask(n_queries, n_keys):
    """0 where a query may look, -inf where it may not.

    The queries are the last `n_queries` of `n_keys` positions (all of them,
    without a cache), so query i sees keys 0 to n_keys - n_queries + i.
    """
    blocked = torch.ones(n_queries, n_keys, dtype=torch.bool).triu(n_keys - n_queries + 1)
    return torch.zeros(n_queries, n_keys).masked_fill(blocked, float("-inf"))


def attention_weights(q, k):
    """One head's attention weights: q (n_queries, head_dim), k (n_keys, head_dim) -> (n_queries, n_keys).

    Each row is a query's softmax over the keys it may see: scores scaled by 1/sqrt(head_dim), later keys masked.
    """
    scores = q @ k.T / math.sqrt(q.shape[-1]) + causal_mask(len(q), len(k))
    return torch.softmax(scores, dim=-1)


def attention_head(x, wq, wk, wv, freqs):
    """One head of causal attention: x (seq, dim), wq/wk/wv (head_dim, dim) -> (seq, head_dim)."""
    q = apply_rope(linear(x, wq), freqs)
    k = apply_rope(linear(x, wk), freqs)
    v = linear(x, wv)
    return attention_weights(q, k) @ v


def attention(x, wq, wk, wv, wo, n_heads, n_kv_heads, freqs, cache=None):
    """All heads of grouped-query attention, then the output projection: (seq, dim) -> (seq, dim).

    With a `cache` (one layer's `LayerCache`), the new keys and values are
    appended to it and the queries attend to every position stored so far.
    The query heads are viewed in their groups, (seq, n_kv_heads, n_rep, head_dim): group g's n_rep heads
    all read key/value head g, so the keys and values are not copied n_rep times (notebook 04's
    `repeat_interleave`, a copy the size of the cache at every decoded token; docs/kernels.md).
    """
    seq, head_dim = x.shape[0], wq.shape[0] // n_heads
    q, k, v = linear_each(x, wq, wk, wv)  # three products, or one where int8 weights are joined (notebook 08)
    q = apply_rope(q.view(seq, n_heads, head_dim), freqs)
    k = apply_rope(k.view(seq, n_kv_heads, head_dim), freqs)
    v = v.view(seq, n_kv_heads, head_dim)
    if cache is not None:
        k, v = cache.update(k, v)
    groups = q.view(seq, n_kv_heads, n_heads // n_kv_heads, head_dim)
    scores = torch.einsum("qgrd,kgd->grqk", groups, k) / math.sqrt(head_dim)
    if seq > 1:  # one new query, the latest position, sees every key: its mask would be all zeros
        scores = scores + causal_mask(seq, len(k))
    out = torch.einsum("grqk,kgd->qgrd", torch.softmax(scores, dim=-1), v)
    return linear(out.reshape(seq, n_heads * head_dim), wo)
