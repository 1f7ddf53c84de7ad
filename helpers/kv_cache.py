"""The key/value cache that makes generation fast (taught in notebook 07).

Attention is causal: a token's key and value depend only on that token and
the ones before it, so they never change once computed. Without a cache,
each new token recomputes the keys and values of the whole sequence; with
one, each layer keeps them and the next step computes one new row.

The cache stores keys and values *before* grouped-query attention repeats
them for the query heads: (positions, n_kv_heads, head_dim) per layer,
n_heads / n_kv_heads times smaller than the repeated tensors.

Each layer's buffers are allocated once, for the number of positions the
caller asks for (the prompt plus the tokens to generate), and every step
writes only its new rows into them. Growing them with `torch.cat` would
read and write the whole cache again at every step. Asking for the exact
size keeps the memory small: the model's full context would cost
2 * n_layers * n_kv_heads * head_dim * max_seq_len float32 numbers.
"""

import operator

import torch

from .errors import LlamaError


class LayerCache:
    """One layer's keys and values: room for `capacity` positions, the first `length` of them filled."""

    def __init__(self, capacity, n_kv_heads, head_dim, dtype=torch.float32):
        self.keys = torch.zeros(capacity, n_kv_heads, head_dim, dtype=dtype)
        self.values = torch.zeros(capacity, n_kv_heads, head_dim, dtype=dtype)
        self.length = 0

    def update(self, k, v):
        """Store the new positions' `k` and `v` (new, n_kv_heads, head_dim); return all stored so far."""
        if k.shape[1:] != self.keys.shape[1:]:
            raise LlamaError(
                f"This cache holds keys of {tuple(self.keys.shape[1:])} (n_kv_heads, head_dim) a position, but the "
                f"model gives {tuple(k.shape[1:])}: the cache was made for another model. Make it with this "
                "model's params: KVCache(model.params, capacity)."
            )
        end = self.length + len(k)
        if end > len(self.keys):
            raise LlamaError(
                f"The KV cache has room for {len(self.keys)} positions; {self.length} are stored and "
                f"{len(k)} more do not fit. Make the cache with a larger capacity."
            )
        self.keys[self.length : end] = k
        self.values[self.length : end] = v
        self.length = end
        return self.keys[:end], self.values[:end]


class KVCache:
    """A `LayerCache` for every layer of a model with `params`, each with room for `capacity` positions."""

    def __init__(self, params, capacity):
        if isinstance(capacity, bool) or not hasattr(capacity, "__index__") or operator.index(capacity) < 0:
            raise LlamaError(f"A cache's capacity is how many positions it holds, a whole number of 0 or more, "
                             f"not {capacity!r}. Give the prompt's length plus the tokens to generate.")
        capacity = operator.index(capacity)
        self.layers = [LayerCache(capacity, params.n_kv_heads, params.head_dim) for _ in range(params.n_layers)]

    @property
    def length(self):
        """How many positions are stored; the next token's RoPE position."""
        return self.layers[0].length

    @property
    def capacity(self):
        return len(self.layers[0].keys)
