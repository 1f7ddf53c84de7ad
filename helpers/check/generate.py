"""Notebook 07's checks: the top-p filter, the distribution a token is sampled from (temperature first, then
top-k, then top-p), and a preallocated KV cache's update."""

import functools

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .. import transformer
from ..generate import top_k_filter, top_p_filter
from ..kv_cache import LayerCache
from .harness import NAN_ANYWHERE, TWO_MODELS, described, model, queries_keys_values, report, tokens, verdict

NAN_IN_LOGITS = ("softmax of a row whose logits are all -inf is NaN (e^-inf sums to 0, and 0/0 is NaN): "
                 "a filter must keep at least the most likely token; " + NAN_ANYWHERE)


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


def _top_p_mask_in_sorted_order(logits, p):
    probs = torch.softmax(logits, dim=-1)
    descending = probs.sort(descending=True).values
    return _keep(logits, descending.cumsum(-1) - descending < p)  # a mask in sorted order, on unsorted logits


def _top_p_unsorted(logits, p):
    probs = torch.softmax(logits, dim=-1)
    return _keep(logits, probs.cumsum(-1) - probs < p)


TOP_P_MISTAKES = {
    "the token whose probability carries the sum to p is dropped; keep it (keep while the sum *before* a token "
    "is below p)": _top_p_dropping_crossing_token,
    "the probabilities are sorted ascending, so it keeps the least likely tokens; sort descending":
        _top_p_sorted_ascending,
    "the probabilities are added up in vocabulary order; sort them, most likely first": _top_p_unsorted,
    "the mask is built in sorted order (the k-th entry says whether the k-th most likely token is kept) but "
    "applied to the logits in vocabulary order: keep each token at least as likely as the last one needed":
        _top_p_mask_in_sorted_order,
}


@functools.cache
def first_token_logits(name="tiny"):
    """The logits of a first token: after <|begin_of_text|> alone for the tiny model, where it is unsure; after
    one random token for a random model."""
    first = [model(name).tokenizer.bos_id] if name == "tiny" else tokens(name)[:1]
    with torch.inference_mode():
        return transformer.forward(model(name), first)[-1].clone()


# Each case's p lies at least 1e-4 from the mass before any token (1.6e-3 and more on the tiny model), so that
# float32's rounding in a correct cumulative sum cannot move the cut: at temperature 2, p = 0.9 kept 95,051 tokens
# of 3e-6 each, and a sum in float64 kept one more than one in float32.
TOP_P_TEMPERATURE = {"tiny": 1.5, "dim 96": 1}
TOP_P_CASES = (0.5, 0.9)


def top_p(my_top_p):
    """Exercise 07: logits with -inf outside the fewest most likely tokens whose probabilities reach p."""
    def run(name, p):  # the tiny model's logits flattened by temperature 1.5, where more tokens count
        logits = first_token_logits(name) / TOP_P_TEMPERATURE[name]
        return lambda fn: fn(logits.clone(), p)

    cases = {f"{described(name)}, p = {p}": run(name, p) for name in TWO_MODELS for p in TOP_P_CASES}
    report(my_top_p, cases, top_p_filter, TOP_P_MISTAKES, nan=NAN_IN_LOGITS)


def sampling_probs_reference(logits, temperature, top_k, top_p):
    return torch.softmax(top_p_filter(top_k_filter(logits / temperature, top_k), top_p), dim=-1)


SAMPLING_PROBS_MISTAKES = {
    "the filters run before the temperature divides the logits: divide first, so that top-p measures the "
    "distribution the token is drawn from":
        lambda logits, t, k, p: torch.softmax(top_p_filter(top_k_filter(logits, k), p) / t, dim=-1),
    "top-p runs before top-k: top-k first, then top-p measures the mass of the k tokens left":
        lambda logits, t, k, p: torch.softmax(top_k_filter(top_p_filter(logits / t, p), k), dim=-1),
    "the logits are multiplied by the temperature; divide them":
        lambda logits, t, k, p: torch.softmax(top_p_filter(top_k_filter(logits * t, k), p), dim=-1),
    "the temperature divides the probabilities after softmax; it divides the logits before it":
        lambda logits, t, k, p: torch.softmax(top_p_filter(top_k_filter(logits, k), p), dim=-1) / t,
    "the temperature is left out": lambda logits, t, k, p: sampling_probs_reference(logits, 1.0, k, p),
}


def sampling_probs(my_sampling_probs):
    """Exercise 07: the probabilities sample_next draws from: logits / temperature, then top-k, then top-p,
    then softmax."""
    # The last tiny case keeps all of top-k's 5 tokens, so that a top-k off by one shows.
    settings = {"tiny": [(2.0, 50, 0.5), (0.5, None, 0.9), (2.0, 5, 0.95)], TWO_MODELS[1]: [(1.5, 20, 0.6)]}
    cases = {f"{described(name)}, temperature {t}, top_k {k}, top_p {p}":
             lambda fn, name=name, t=t, k=k, p=p: fn(first_token_logits(name).clone(), t, k, p)
             for name, each in settings.items() for t, k, p in each}
    report(my_sampling_probs, cases, sampling_probs_reference, SAMPLING_PROBS_MISTAKES, nan=NAN_IN_LOGITS)


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


class _ReturnsValuesKeys(LayerCache):
    def update(self, k, v):
        keys, values = super().update(k, v)
        return values, keys


class _ReturnsWholeBuffer(LayerCache):
    def update(self, k, v):
        super().update(k, v)
        return self.keys, self.values


KV_CACHE_MISTAKES = {
    "each update writes from position 0, over what is stored; write from position self.length": _WritesFromZero,
    "self.length is not advanced: add the number of new positions to it": _LengthNotAdvanced,
    "update returns only the new positions; return every position stored so far": _ReturnsNewOnly,
    "update returns the whole buffer, empty positions too; return the first self.length": _ReturnsWholeBuffer,
    "update returns (values, keys); attention unpacks keys, values = cache.update(k, v)": _ReturnsValuesKeys,
}


def copied(result):
    """`result` with its tensors copied: the cache's later updates must not change what an earlier one returned."""
    if isinstance(result, torch.Tensor):
        return result.clone()
    if isinstance(result, (list, tuple)):
        return type(result)(copied(r) for r in result)
    return result


def steps(n):
    """The positions each update of a cache with room for `n` stores: all but the last two, then one at a time."""
    return {"the prompt": slice(0, n - 2), "step 1": slice(n - 2, n - 1), "step 2": slice(n - 1, n)}


def fill_cache(cache_class, k, v):
    """A cache with room for every position, given the prompt but two positions, then one position at a time."""
    cache = cache_class(len(k), k.shape[1], k.shape[2])
    out = {f"update's result after {name}": copied(cache.update(k[s].clone(), v[s].clone()))
           for name, s in steps(len(k)).items()}
    return out | {"length after step 2": cache.length}


def storage(tensor):
    return tensor.untyped_storage().data_ptr() if isinstance(tensor, torch.Tensor) else None


class NumbersWritten(TorchDispatchMode):
    """Counts the numbers PyTorch's operations write while it is on: every output's, in-place ones included
    (`a[i:j] = b` writes a[i:j]), but for views, which write nothing."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            self.count += sum(t.numel() for t in (out if isinstance(out, (tuple, list)) else [out])
                              if isinstance(t, torch.Tensor))
        return out


def not_preallocated(cache_class, k, v):
    """What a cache whose results are right does that a preallocated one must not, or None: replace the buffers
    __init__ allocated (self.keys, self.values), return copies of them rather than views into them, or write
    the positions already stored again at each step."""
    cache = cache_class(len(k), k.shape[1], k.shape[2])
    buffers = {name: storage(getattr(cache, name, None)) for name in ("keys", "values")}
    if None in buffers.values():  # no tensors of those names to judge by
        return None
    for s in steps(len(k)).values():
        new_k, new_v = k[s].clone(), v[s].clone()
        with NumbersWritten() as written:
            returned = dict(zip(buffers, cache.update(new_k, new_v), strict=True))
        for (name, buffer), new in zip(buffers.items(), "kv", strict=True):
            if storage(getattr(cache, name, None)) != buffer:
                return (f"update replaces self.{name} with a new tensor (as torch.cat makes one), so the buffer "
                        "__init__ allocated goes unused and every step copies the whole cache; write the new rows "
                        f"into that buffer, self.{name}[self.length : end] = {new} (end = self.length + len({new})), "
                        f"and return self.{name}[:end]")
            if storage(returned[name]) != buffer:
                return (f"update returns a copy of the stored {name}, not a view into self.{name}, so every step "
                        f"copies the whole cache; return the slice self.{name}[:end], which copies nothing")
        positions = written.count / (new_k[0].numel() + new_v[0].numel())
        if positions > 3 * len(new_k):  # the new rows, and room for a copy or two of them on the way
            return (f"update writes {positions:.0f} positions' keys and values in a step that adds {len(new_k)}: "
                    f"it writes the {s.start} already stored again (as self.keys[:end] = "
                    "torch.cat([self.keys[:self.length], k]) does), so every step copies the whole cache; write the "
                    "new rows alone, self.keys[self.length : end] = k")
    return None


def kv_cache(my_layer_cache):
    """Exercise 07: a class like helpers.LayerCache whose update(k, v) stores the new positions after the others,
    in the buffers its __init__ allocated, writing only them, and returns views into them."""
    def run(name):
        _, k, v = queries_keys_values(name=name)
        return lambda cls: fill_cache(cls, k, v)

    cases = {f"{described(name)}, layer 0's keys and values": run(name) for name in TWO_MODELS}
    line = verdict(my_layer_cache, cases, LayerCache, KV_CACHE_MISTAKES)
    if line == "correct":  # right results; are they kept where __init__ put them?
        problem = not_preallocated(my_layer_cache, *queries_keys_values(name=TWO_MODELS[0])[1:])
        line = f"wrong: {problem}" if problem else line
    print(line)
