"""Notebook 04's checks: one head's attention weights, and grouped-query attention over every head."""

import math

import torch

from ..attention import attention_weights as head_weights
from ..attention import causal_mask
from ..model import TINY_MODEL_DIR
from ..params import SHAPES, load_params
from .harness import NAN_IN_SOFTMAX, TWO_MODELS, described, model, queries_keys_values, report


def _softmax_of_scores(q, k, scale, mask, dim=-1):
    return torch.softmax(q @ k.T * scale + mask, dim=dim)


def _scaled_by_model_width(dim):
    return lambda q, k: _softmax_of_scores(q, k, 1 / math.sqrt(dim), causal_mask(len(q), len(k)))


def _mask_multiplied(q, k):
    """A mask of 1 (may see) and 0 (may not) multiplied into the scores: a hidden key's score becomes 0, not -inf."""
    may_see = torch.ones(len(q), len(k)).tril()
    return torch.softmax(q @ k.T / math.sqrt(q.shape[-1]) * may_see, dim=-1)


# The widths `dim` of the models a notebook may run on: the tiny model's and the real shapes'. Dividing by
# sqrt(p.dim) is right on the tiny model only by chance: its dim, 64, is head_dim squared.
MODEL_WIDTHS = {load_params(TINY_MODEL_DIR).dim: "the tiny model"} | {
    shape.params["dim"]: shape.name for shape in reversed(SHAPES.values())}

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
    "a mask of 0s and 1s is multiplied into the scores, which makes a hidden key's score 0, not -inf: add -inf "
    "to the scores of later keys (or masked_fill them with -inf)": _mask_multiplied,
} | {
    f"the scores are divided by sqrt({dim}), the square root of {name}'s dim; the scale is 1/sqrt(head_dim), "
    "with head_dim = q.shape[-1]": _scaled_by_model_width(dim) for dim, name in MODEL_WIDTHS.items()
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

GROUPED_ATTENTION_MISTAKES = {
    "query head h reads key/value head h % n_kv_heads, the order k.repeat(...) gives; it is h // n_rep, the "
    "order of repeat_interleave (consecutive query heads share one)":
        heads_reading(lambda h, n_heads, n_kv_heads: h % n_kv_heads),
    "every query head reads key/value head 0":
        heads_reading(lambda h, n_heads, n_kv_heads: 0),
    "the heads are stacked on the last axis, (seq, head_dim, n_heads); stack them on axis 1, (seq, n_heads, head_dim)":
        lambda q, k, v: grouped_attention_reference(q, k, v).transpose(1, 2),
}


def grouped_attention(my_grouped_attention):
    """Exercise 04: every query head's output, (seq, n_heads, head_dim), from q and the fewer heads of k and v."""
    def run(name):
        q, k, v = queries_keys_values(name=name)
        return lambda fn: fn(q.clone(), k.clone(), v.clone())

    cases = {f"{described(name)}, layer 0": run(name) for name in TWO_MODELS}
    report(my_grouped_attention, cases, grouped_attention_reference, GROUPED_ATTENTION_MISTAKES, nan=NAN_IN_SOFTMAX)
