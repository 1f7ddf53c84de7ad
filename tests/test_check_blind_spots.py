"""Wrong answers the checks once accepted or could not name, because the tiny model's sizes hid them (dim 64 is
head_dim squared, n_heads equals head_dim, its RoPE is not scaled, no merge case overlapped): each is written
here the way a learner writes it, and its check must say `wrong:` with the diagnosis that names it."""

import math

import pytest
import torch

from helpers import attention as course_attention
from helpers import check, feed_forward, linear, rms_norm, rope_frequencies, transformer_block

from conftest import load_script

TINY = check.tiny_model().params  # the notebook's `p`, on the tiny model


def sqrt_dim_scale(q, k):
    scores = q @ k.T / math.sqrt(TINY.dim)
    scores = scores.masked_fill(torch.ones(len(q), len(k), dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1)


def mask_multiplied(q, k):
    keep = torch.tril(torch.ones(len(q), len(k)))
    return torch.softmax(keep * (q @ k.T) / math.sqrt(q.shape[-1]), dim=-1)


def softmax_over_queries(q, k):
    scores = (q @ k.T / math.sqrt(q.shape[-1])).masked_fill(torch.ones(len(q), len(k)).triu(1) > 0, -math.inf)
    return scores.softmax(dim=0)


def heads_last(q, k, v):
    n_rep = q.shape[1] // k.shape[1]
    outs = [sqrt_head_dim_weights(q[:, h], k[:, h // n_rep]) @ v[:, h // n_rep] for h in range(q.shape[1])]
    return torch.stack(outs, dim=-1)


def gqa_with_repeat(q, k, v):
    n_rep = q.shape[1] // k.shape[1]
    k, v = k.repeat(1, n_rep, 1), v.repeat(1, n_rep, 1)
    return torch.stack([sqrt_head_dim_weights(q[:, h], k[:, h]) @ v[:, h] for h in range(q.shape[1])], dim=1)


def sqrt_head_dim_weights(q, k):
    scores = q @ k.T / math.sqrt(q.shape[-1])
    return scores.masked_fill(torch.ones(len(q), len(k), dtype=torch.bool).triu(1), float("-inf")).softmax(-1)


def merge_right_to_left(ids, pair, new_id):
    out = list(ids)
    i = len(out) - 2
    while i >= 0:
        if out[i] == pair[0] and out[i + 1] == pair[1]:
            out[i : i + 2] = [new_id]
            i -= 2
        else:
            i -= 1
    return out


def layer_norm(x, weight, eps):
    centred = x - x.mean(-1, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight


def divided_by_length(x, weight, eps):
    return x / x.norm(dim=-1, keepdim=True) * weight


def rope_with(theta=None, swap=False):
    def rope(x, rope_theta):
        seq, d = x.shape
        angles = torch.arange(seq)[:, None] * (theta or rope_theta) ** (-torch.arange(0, d, 2) / d)
        out = torch.zeros_like(x)
        even, odd = x[:, ::2], x[:, 1::2]
        first, second = even * angles.cos() - odd * angles.sin(), even * angles.sin() + odd * angles.cos()
        out[:, ::2], out[:, 1::2] = (second, first) if swap else (first, second)
        return out
    return rope


def gelu_gate(x, w1, w2, w3):
    return (torch.nn.functional.gelu(x @ w1.T) * (x @ w3.T)) @ w2.T


def silu_of_product(x, w1, w2, w3):
    return torch.nn.functional.silu((x @ w1.T) * (x @ w3.T)) @ w2.T


def block_without(part):
    def block(x, layer, params, freqs):
        h = x + course_attention(rms_norm(x, layer["attention_norm"], params.norm_eps), layer["wq"], layer["wk"],
                                 layer["wv"], layer["wo"], params.n_heads, params.n_kv_heads, freqs)
        ffn_input = h if part == "ffn_norm" else rms_norm(h, layer["ffn_norm"], params.norm_eps)
        out = feed_forward(ffn_input, layer["w1"], layer["w2"], layer["w3"])
        return out if part == "second residual" else h + out
    return block


def forward_with(scaled=True, same_layer=False):
    def forward(model, tokens):
        p = model.params
        x = model.weights["tok_embeddings.weight"][tokens].float()
        factor = p.rope_scaling_factor if scaled else None
        freqs = rope_frequencies(p.head_dim, torch.arange(len(tokens)), p.rope_theta, factor)
        for i in range(p.n_layers):
            x = transformer_block(x, model.layer(0 if same_layer else i), p, freqs)
        return linear(rms_norm(x, model.weights["norm.weight"], p.norm_eps), model.weights["output.weight"])
    return forward


def top_p_mask_unsorted(logits, p):
    probs = logits.softmax(-1)
    ordered = probs.sort(descending=True).values
    needed = torch.cumsum(ordered, 0) - ordered < p
    return torch.where(needed, logits, torch.tensor(float("-inf")))


class CacheValuesFirst:
    def __init__(self, capacity, n_kv_heads, head_dim):
        self.keys = torch.zeros(capacity, n_kv_heads, head_dim)
        self.values = torch.zeros(capacity, n_kv_heads, head_dim)
        self.length = 0

    def update(self, k, v):
        n = len(k)
        self.keys[self.length : self.length + n], self.values[self.length : self.length + n] = k, v
        self.length += n
        return self.values[: self.length], self.keys[: self.length]


def quantize_with(divisor=127, use_abs=True):
    def quantize(w):
        largest = (w.abs() if use_abs else w).max(dim=1).values
        scales = largest / divisor
        return torch.round(w / scales.unsqueeze(1)).to(torch.int8), scales
    return quantize


# (check, the learner's wrong function, words of the diagnosis it must get)
WRONG_ANSWERS = {
    "q @ k.T / sqrt(p.dim)": ("attention_weights", sqrt_dim_scale, "divided by sqrt(64)"),
    "a 0/1 mask multiplied into the scores": ("attention_weights", mask_multiplied, "a mask of 0s and 1s"),
    "softmax over the queries": ("attention_weights", softmax_over_queries, "the softmax runs over the queries"),
    "heads stacked on the last axis": ("grouped_attention", heads_last, "stacked on the last axis"),
    "GQA with repeat": ("grouped_attention", gqa_with_repeat, "k.repeat(...)"),
    "a right-to-left merge": ("merge", merge_right_to_left, "right to left"),
    "LayerNorm": ("rms_norm", layer_norm, "this is LayerNorm"),
    "x / x.norm() * w": ("rms_norm", divided_by_length, "x / x.norm(dim=-1)"),
    "rope_theta hard-coded": ("rope", rope_with(theta=500000.0), "rope_theta is written as 500000"),
    "each pair's outputs swapped": ("rope", rope_with(swap=True), "each pair's two outputs are swapped"),
    "GELU": ("feed_forward", gelu_gate, "GELU"),
    "SiLU on the product": ("feed_forward", silu_of_product, "SiLU is applied to the product"),
    "the second residual missing": ("transformer_block", block_without("second residual"), "second residual"),
    "ffn_norm skipped": ("transformer_block", block_without("ffn_norm"), "ffn_norm is skipped"),
    "a forward pass without rope_scaling_factor": ("forward", forward_with(scaled=False), "RoPE is not scaled"),
    "layer 0's weights in every layer": ("forward", forward_with(same_layer=True), "layer 0's weights"),
    "top-p's mask in sorted order, applied unsorted": ("top_p", top_p_mask_unsorted, "built in sorted order"),
    "a cache returning (values, keys)": ("kv_cache", CacheValuesFirst, "returns (values, keys)"),
    "dividing by 128": ("quantize_rows", quantize_with(divisor=128), "divides by 128"),
    "amax without abs": ("quantize_rows", quantize_with(use_abs=False), "largest value, w.amax(dim=1)"),
}


@pytest.mark.parametrize("case", WRONG_ANSWERS)
def test_a_wrong_answer_is_not_correct_and_is_named(capsys, case):
    name, wrong, words = WRONG_ANSWERS[case]
    getattr(check, name)(wrong)
    out = capsys.readouterr().out
    assert out != "correct\n"
    diagnosis = out.removeprefix("wrong: ").rstrip("\n")
    assert diagnosis in check.MISTAKES[name] and words in diagnosis, out


def test_the_right_versions_of_these_functions_are_correct(capsys):
    """The learner-style code above, put right, is `correct`: what the tests catch is each mistake, not a style."""
    right = {"forward": forward_with(), "transformer_block": block_without(None), "rope": rope_with(),
             "quantize_rows": quantize_with(), "attention_weights": sqrt_head_dim_weights}
    for name, function in right.items():
        getattr(check, name)(function)
        assert capsys.readouterr().out == "correct\n", name


# ---- What a check sees beyond the values returned -------------------------------------------------------------

def rms_norm_in_place(x, weight, eps):
    return x.mul_(torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).mul_(weight)


def merge_in_place(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            ids[i:i + 2] = [new_id]
        i += 1
    return ids


def block_adding_in_place(x, layer, params, freqs):
    x += course_attention(rms_norm(x, layer["attention_norm"], params.norm_eps), layer["wq"], layer["wk"],
                          layer["wv"], layer["wo"], params.n_heads, params.n_kv_heads, freqs)
    x += feed_forward(rms_norm(x, layer["ffn_norm"], params.norm_eps), layer["w1"], layer["w2"], layer["w3"])
    return x


@pytest.mark.parametrize("name, learner, argument", [
    ("rms_norm", rms_norm_in_place, "`x`"),
    ("merge", merge_in_place, "`ids`"),
    ("transformer_block", block_adding_in_place, "`x`"),
])
def test_a_function_that_changes_its_argument_in_place_is_wrong(capsys, name, learner, argument):
    """Right values, but the caller's data changed: each check says which argument, whatever the values."""
    getattr(check, name)(learner)
    assert capsys.readouterr().out.startswith(f"wrong: your function changes its argument {argument} in place")


def test_a_pair_is_a_tuple_and_a_merge_a_list(capsys):
    def pairs(ids):
        counts = {}
        for pair in zip(ids, ids[1:], strict=False):
            counts[pair] = counts.get(pair, 0) + 1
        return max(counts, key=counts.get)

    check.most_frequent_pair(lambda ids: list(pairs(ids)))
    assert capsys.readouterr().out.startswith("wrong: it returns a list; a pair is a tuple")
    check.most_frequent_pair(pairs)
    assert capsys.readouterr().out == "correct\n"
    merge = load_script("solutions/01_tokenizer.py").my_merge
    check.merge(lambda *args: tuple(merge(*args)))
    assert capsys.readouterr().out == "wrong: it returns a tuple; merge returns a new list of ids\n"


def top_p_in_float64(logits, p):
    probs, order = logits.double().softmax(-1).sort(descending=True)
    keep = order[probs.cumsum(0) - probs < p]
    out = torch.full_like(logits, -math.inf)
    out[keep] = logits[keep]
    return out


def test_top_p_summed_in_float64_is_correct(capsys):
    """At temperature 2 the tiny model's p = 0.9 cut fell among 95,000 tokens of 3e-6 each, where float32's
    rounding of the running sum decided one token: the sum in float64 was told it was off by inf."""
    check.top_p(top_p_in_float64)
    assert capsys.readouterr().out == "correct\n"


def test_no_top_p_case_lies_within_rounding_of_a_cut():
    from helpers.check.generate import TOP_P_CASES, TOP_P_TEMPERATURE, first_token_logits
    for name, temperature in TOP_P_TEMPERATURE.items():
        probs = (first_token_logits(name) / temperature).double().softmax(-1).sort(descending=True).values
        before = probs.cumsum(0) - probs
        for p in TOP_P_CASES:
            assert (before - p).abs().min() > 1e-4, (name, p)


def test_a_top_k_off_by_one_is_not_correct(capsys):
    """In the other cases top-p keeps fewer tokens than k, so one more token in top-k changed nothing."""
    from helpers.generate import top_k_filter, top_p_filter

    def one_more(logits, temperature, top_k, top_p):
        kept = top_k_filter(logits / temperature, top_k + 1 if top_k else top_k)
        return torch.softmax(top_p_filter(kept, top_p), dim=-1)

    check.sampling_probs(one_more)
    assert capsys.readouterr().out.startswith("wrong: the tiny model, temperature 2.0, top_k 5, top_p 0.95")
