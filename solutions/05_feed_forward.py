"""Solutions to the exercises of notebook 05: the feed-forward width, and SwiGLU."""

import torch


def my_hidden_dim(dim, multiple_of, ffn_dim_multiplier):
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    n_multiples = (hidden + multiple_of - 1) // multiple_of  # rounded up
    return n_multiples * multiple_of


def my_feed_forward(x, w1, w2, w3):
    gate = torch.nn.functional.silu(x @ w1.T)
    return (gate * (x @ w3.T)) @ w2.T
