"""Notebook 07's checks: the top-p filter, and a preallocated KV cache's update."""

import functools

import torch

from .. import transformer
from ..generate import top_p_filter
from ..kv_cache import LayerCache
from .harness import queries_keys_values, report, tiny_model


def _keep(logits, keep):
    return logits.masked_fill(~keep, float("-inf"))


def _top_p_dropping_crossing_token(logits, p):
    probs = torch.softmax(logits, dim=-1)
    sorted_probs = probs.sort(descending=True).values
    n_kept = int((sorted_probs.cumsum(-1) < p).sum())
    return _keep(logits, probs >= sorted_probs[n_kept - 1]) if n_kept else torch.full_like(logits, float("-inf"))


def _top_p_sorted_ascending(logits, p):
    probs = torch.softmax(logits, dim=-1)
    sorted_probs = probs.sort().values  # least likely first
    n_kept = int((sorted_probs.cumsum(-1) - sorted_probs < p).sum())
    return _keep(logits, probs <= sorted_probs[n_kept - 1])


def _top_p_unsorted(logits, p):
    probs = torch.softmax(logits, dim=-1)
    return _keep(logits, probs.cumsum(-1) - probs < p)


TOP_P_MISTAKES = {
    "the token whose probability carries the sum to p is dropped; keep it (keep while the sum *before* a token "
    "is below p)": _top_p_dropping_crossing_token,
    "the probabilities are sorted ascending, so it keeps the least likely tokens; sort descending":
        _top_p_sorted_ascending,
    "the probabilities are added up in vocabulary order; sort them, most likely first": _top_p_unsorted,
}


@functools.cache
def first_token_logits():
    """The logits after <|begin_of_text|> alone, where the tiny model is unsure, flattened by temperature 2."""
    with torch.inference_mode():
        return transformer.forward(tiny_model(), [tiny_model().tokenizer.bos_id])[-1].clone() / 2


def top_p(my_top_p):
    """Exercise 07: logits with -inf outside the fewest most likely tokens whose probabilities reach p."""
    logits = first_token_logits()
    cases = {f"p = {p}": lambda fn, p=p: fn(logits.clone(), p) for p in (0.5, 0.9)}
    report(my_top_p, cases, top_p_filter, TOP_P_MISTAKES)


class _WritesFromZero(LayerCache):
    def update(self, k, v):
        self.keys[: len(k)], self.values[: len(v)] = k, v
        self.length += len(k)
        return self.keys[: self.length], self.values[: self.length]


class _LengthNotAdvanced(LayerCache):
    def update(self, k, v):
        end = self.length + len(k)
        self.keys[self.length : end], self.values[self.length : end] = k, v
        return self.keys[:end], self.values[:end]


class _ReturnsNewOnly(LayerCache):
    def update(self, k, v):
        super().update(k, v)
        return k, v


class _ReturnsWholeBuffer(LayerCache):
    def update(self, k, v):
        super().update(k, v)
        return self.keys, self.values


KV_CACHE_MISTAKES = {
    "each update writes from position 0, over what is stored; write from position self.length": _WritesFromZero,
    "self.length is not advanced: add the number of new positions to it": _LengthNotAdvanced,
    "update returns only the new positions; return every position stored so far": _ReturnsNewOnly,
    "update returns the whole buffer, empty positions too; return the first self.length": _ReturnsWholeBuffer,
}


def copied(result):
    """`result` with its tensors copied: the cache's later updates must not change what an earlier one returned."""
    if isinstance(result, torch.Tensor):
        return result.clone()
    if isinstance(result, (list, tuple)):
        return type(result)(copied(r) for r in result)
    return result


def fill_cache(cache_class, k, v):
    """A cache with room for every position, given the prompt but two positions, then one position at a time."""
    cache = cache_class(len(k), k.shape[1], k.shape[2])
    n = len(k) - 2
    steps = {"the prompt": slice(0, n), "step 1": slice(n, n + 1), "step 2": slice(n + 1, n + 2)}
    out = {f"update's result after {name}": copied(cache.update(k[s].clone(), v[s].clone()))
           for name, s in steps.items()}
    return out | {"length after step 2": cache.length}


def kv_cache(my_layer_cache):
    """Exercise 07: a class like helpers.LayerCache whose update(k, v) stores the new positions after the others."""
    _, k, v = queries_keys_values()
    cases = {"layer 0's keys and values": lambda cls: fill_cache(cls, k, v)}
    report(my_layer_cache, cases, LayerCache, KV_CACHE_MISTAKES)
