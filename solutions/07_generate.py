"""Solutions to the exercises of notebook 07: a top-p filter, the probabilities a token is sampled from, and a
preallocated KV cache's update."""

import torch

from helpers import top_k_filter, top_p_filter


def my_top_p(logits, p):
    probs = torch.softmax(logits, dim=-1)
    descending = probs.sort(descending=True).values
    before = descending.cumsum(dim=-1) - descending  # the probability of the tokens more likely than each
    n_needed = int((before < p).sum())  # the token that carries the sum to p is needed too
    return logits.masked_fill(probs < descending[n_needed - 1], float("-inf"))


def my_sampling_probs(logits, temperature, top_k, top_p):
    flattened = logits / temperature  # first: top-p must measure the distribution the token is drawn from
    return torch.softmax(top_p_filter(top_k_filter(flattened, top_k), top_p), dim=-1)


class MyPreallocatedCache:
    def __init__(self, capacity, n_kv_heads, head_dim):
        self.keys = torch.zeros(capacity, n_kv_heads, head_dim)
        self.values = torch.zeros(capacity, n_kv_heads, head_dim)
        self.length = 0

    def update(self, k, v):
        start, self.length = self.length, self.length + len(k)
        self.keys[start : self.length] = k
        self.values[start : self.length] = v
        return self.keys[: self.length], self.values[: self.length]
