"""The building blocks: one head against all heads, the compute policy, RoPE and the FFN width."""

import math
import sys

import pytest
import torch

import helpers.compute
from helpers import apply_rope, attention, attention_head, causal_mask, linear, params_from_dict, rope_frequencies

from conftest import random_model, random_params


@pytest.mark.parametrize("n_kv_heads", [8, 2, 1])
def test_one_head_at_a_time_equals_all_heads(n_kv_heads, rng):
    """Looping over heads with `attention_head`, concatenating and applying wo equals `attention`."""
    p = random_params(n_heads=8, n_kv_heads=n_kv_heads)
    layer = random_model(p).layer(0)
    x = torch.randn(11, p.dim, generator=rng)
    freqs = rope_frequencies(p.head_dim, torch.arange(11), p.rope_theta)
    hd = p.head_dim
    heads = []
    for h in range(p.n_heads):
        kv = h // p.n_rep  # the key/value head this query head shares
        heads.append(attention_head(x, layer["wq"][h * hd:(h + 1) * hd], layer["wk"][kv * hd:(kv + 1) * hd],
                                    layer["wv"][kv * hd:(kv + 1) * hd], freqs))
    by_head = torch.cat(heads, dim=-1) @ layer["wo"].T
    all_heads = attention(x, layer["wq"], layer["wk"], layer["wv"], layer["wo"], p.n_heads, p.n_kv_heads, freqs)
    torch.testing.assert_close(by_head, all_heads)


def test_a_decoded_token_reads_the_cache_where_it_is_without_copies_for_each_query_head(rng):
    """With 4 query heads to a key/value head, a copy of the keys for every query head would be 4 times the
    cache; attention's largest new tensor stays under one layer's stored keys, and its result is the loop's."""
    from torch.profiler import profile

    from helpers import LayerCache

    p = random_params(n_heads=8, n_kv_heads=2)
    layer, stored, hd = random_model(p).layer(0), 4000, p.head_dim
    cache = LayerCache(stored + 1, p.n_kv_heads, hd)
    cache.update(*torch.randn(2, stored, p.n_kv_heads, hd, generator=rng))
    x = torch.randn(1, p.dim, generator=rng)
    freqs = rope_frequencies(hd, torch.tensor([stored]), p.rope_theta)
    with profile(profile_memory=True) as trace:
        out = attention(x, layer["wq"], layer["wk"], layer["wv"], layer["wo"], p.n_heads, p.n_kv_heads, freqs, cache)
    assert max(event.cpu_memory_usage for event in trace.events()) < cache.keys[:stored].nbytes
    keys, values = cache.keys[: stored + 1], cache.values[: stored + 1]
    q = apply_rope((x @ layer["wq"].T).view(1, p.n_heads, hd), freqs)
    heads = [torch.softmax(q[:, h] @ keys[:, h // p.n_rep].T / math.sqrt(hd), dim=-1) @ values[:, h // p.n_rep]
             for h in range(p.n_heads)]
    torch.testing.assert_close(out, torch.cat(heads, dim=-1) @ layer["wo"].T)


def test_a_decoded_token_builds_no_mask_and_several_new_tokens_do(rng, monkeypatch):
    """One new query sees every stored key, so its mask would be all zeros: attention builds none. Several new
    queries after stored positions get theirs, and each result equals the same positions computed in one pass."""
    from helpers import LayerCache

    p = random_params(n_heads=8, n_kv_heads=2)
    layer, hd = random_model(p).layer(0), p.head_dim
    x = torch.randn(6, p.dim, generator=rng)
    freqs = rope_frequencies(hd, torch.arange(6), p.rope_theta)
    whole = attention(x, layer["wq"], layer["wk"], layer["wv"], layer["wo"], p.n_heads, p.n_kv_heads, freqs)
    attention_module = sys.modules["helpers.attention"]
    masks = []

    def counted_mask(n_queries, n_keys):
        masks.append((n_queries, n_keys))
        return causal_mask(n_queries, n_keys)

    monkeypatch.setattr(attention_module, "causal_mask", counted_mask)
    cache = LayerCache(6, p.n_kv_heads, hd)
    parts = [attention(x[start:stop], layer["wq"], layer["wk"], layer["wv"], layer["wo"], p.n_heads,
                       p.n_kv_heads, freqs[start:stop], cache) for start, stop in ((0, 3), (3, 4), (4, 6))]
    assert masks == [(3, 3), (2, 6)]  # none for the single token at position 3
    torch.testing.assert_close(torch.cat(parts), whole)


def test_block_upcast_equals_plain_product(rng, monkeypatch):
    """bf16 weights converted block by block give x @ w.float().T, also when blocks do not divide the rows."""
    monkeypatch.setattr(helpers.compute, "BLOCK_ELEMENTS", 7 * 64)
    monkeypatch.setattr(helpers.compute, "MIN_BLOCK_ROWS", 7)
    w = torch.randn(100, 64, generator=rng).to(torch.bfloat16)
    x = torch.randn(5, 64, generator=rng)
    torch.testing.assert_close(linear(x, w), x @ w.float().T)
    assert linear(x, w).dtype == torch.float32


def test_causal_mask_with_and_without_cache():
    full = causal_mask(3, 3)
    assert torch.equal(full.isinf(), torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=torch.bool))
    # Two new queries after three cached positions: they see 4 and 5 keys.
    assert causal_mask(2, 5).isinf().sum(dim=1).tolist() == [1, 0]


def test_rope_scores_depend_only_on_relative_position(rng):
    q, k = torch.randn(16, generator=rng), torch.randn(16, generator=rng)
    freqs = rope_frequencies(16, torch.arange(200), 500000.0)
    def score(m, n):
        return apply_rope(q[None], freqs[m:m + 1]) @ apply_rope(k[None], freqs[n:n + 1]).T
    torch.testing.assert_close(score(5, 2), score(105, 102))
    assert not torch.allclose(score(5, 2), score(5, 3))


def test_rope_rotates_adjacent_pairs():
    """Meta's layout: (x0, x1) is the first pair, turned by the fastest angle (1 radian per position)."""
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    out = apply_rope(x, rope_frequencies(4, torch.tensor([1]), 10000.0))
    torch.testing.assert_close(out[0, :2], torch.tensor([math.cos(1), math.sin(1)]))
    torch.testing.assert_close(out[0, 2:], torch.tensor([math.cos(0.01), math.sin(0.01)]))


def test_ffn_width_of_the_8b_follows_from_its_params():
    p = params_from_dict(dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, vocab_size=128256,
                              multiple_of=1024, ffn_dim_multiplier=1.3, norm_eps=1e-5, rope_theta=500000.0))
    assert (p.hidden_dim, p.head_dim, p.n_rep) == (14336, 128, 4)
