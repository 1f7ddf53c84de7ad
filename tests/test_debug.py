"""The layer-by-layer debugger (helpers/debug.py) on a learner's own code, right and wrong.

The learner's pieces here are written the plain way, one head at a time, independently of helpers,
and each known mistake is made the way a learner would make it: Hugging Face's own rotate-half code
applied to Meta's weights, a forgotten mask or scale, swapped arguments, a wrong residual.
"""

import itertools

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

import helpers.transformer
from helpers import (
    KVCache,
    apply_rope,
    apply_rope_half_split,
    assert_close,
    compare_forward,
    forward,
    forward_with,
    transformer_block,
)
from helpers import attention as course_attention

from conftest import CLASSIC_IDS


def rope_adjacent(x, angles):
    """Meta's RoPE with cos and sin: pair (x0, x1), (x2, x3), ... turned by `angles` (seq, head_dim/2)."""
    a, b = x[:, 0::2], x[:, 1::2]
    return torch.stack([a * angles.cos() - b * angles.sin(), a * angles.sin() + b * angles.cos()], -1).flatten(-2)


def rope_rotate_half(x, angles):
    """Hugging Face's RoPE, by their own code: right for their permuted weights only."""
    both = torch.cat([angles, angles], -1)
    q, _ = apply_rotary_pos_emb(x[:, None], x[:, None], both.cos(), both.sin(), unsqueeze_dim=1)
    return q[:, 0]


def learner_attention(rope=rope_adjacent, mask=True, scale=True, softmax_dim=-1, repeat=False):
    def attend(x, wq, wk, wv, wo, n_heads, n_kv_heads, freqs):
        head_dim, angles = wq.shape[0] // n_heads, freqs.angle()
        outputs = []
        for h in range(n_heads):
            kv = h % n_kv_heads if repeat else h // (n_heads // n_kv_heads)
            q = rope(x @ wq[h * head_dim:(h + 1) * head_dim].float().T, angles)
            k = rope(x @ wk[kv * head_dim:(kv + 1) * head_dim].float().T, angles)
            v = x @ wv[kv * head_dim:(kv + 1) * head_dim].float().T
            scores = q @ k.T / (head_dim ** 0.5 if scale else 1)
            if mask:
                scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
            outputs.append(scores.softmax(softmax_dim) @ v)
        return torch.cat(outputs, -1) @ wo.float().T
    return attend


def learner_feed_forward(x, w1, w2, w3):
    return (torch.nn.functional.silu(x @ w1.float().T) * (x @ w3.float().T)) @ w2.float().T


def swapped_feed_forward(x, w1, w2, w3):
    return learner_feed_forward(x, w3, w2, w1)


def gelu_feed_forward(x, w1, w2, w3):
    return (torch.nn.functional.gelu(x @ w1.float().T) * (x @ w3.float().T)) @ w2.float().T


def learner_norm(x, weight, eps):
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * weight.float()


def layer_norm(x, weight, eps):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps) * weight.float()


def learner_block(attention=None, feed_forward=learner_feed_forward, adds_to_normalised="", swap_norms=False,
                  norm=None):
    attention = attention or learner_attention()
    norms = ("ffn_norm", "attention_norm") if swap_norms else ("attention_norm", "ffn_norm")
    learner_norm = norm or globals()["learner_norm"]

    def block(x, layer, p, freqs):
        xn = learner_norm(x, layer[norms[0]], p.norm_eps)
        a = attention(xn, layer["wq"], layer["wk"], layer["wv"], layer["wo"], p.n_heads, p.n_kv_heads, freqs)
        h = (xn if adds_to_normalised == "attention" else x) + a
        hn = learner_norm(h, layer[norms[1]], p.norm_eps)
        return (hn if adds_to_normalised == "feed_forward" else h) + feed_forward(hn, layer["w1"], layer["w2"],
                                                                                  layer["w3"])
    return block


def test_right_pieces_show_no_difference(tiny):
    found = compare_forward(tiny, CLASSIC_IDS, attention=learner_attention(), feed_forward=learner_feed_forward)
    assert found.step is None and found.steps == 3 + 2 * tiny.params.n_layers
    assert str(found).startswith("No difference: all 11 steps, from the embedding to the logits")


def test_a_right_block_shows_no_difference(tiny):
    assert compare_forward(tiny, CLASSIC_IDS, transformer_block=learner_block()).step is None


PIECE_CASES = {
    "rotate-half RoPE": ({"attention": learner_attention(rope=rope_rotate_half)}, "attention", "RoPE pairs x_i"),
    "no mask": ({"attention": learner_attention(mask=False)}, "attention", "there is no causal mask"),
    "no scale": ({"attention": learner_attention(scale=False)}, "attention", "the scores are not divided"),
    "softmax over the queries": ({"attention": learner_attention(softmax_dim=0)}, "attention",
                                 "the softmax runs over the queries"),
    "GQA with repeat": ({"attention": learner_attention(repeat=True)}, "attention",
                        "query head h reads key/value head h % n_kv_heads"),
    "w1/w3 swapped": ({"feed_forward": swapped_feed_forward}, "feed-forward", "w1 and w3 swapped"),
    "GELU": ({"feed_forward": gelu_feed_forward}, "feed-forward", "the gate uses GELU"),
}


@pytest.mark.parametrize("case", PIECE_CASES)
def test_a_wrong_piece_is_found_with_its_cause(tiny, case):
    pieces, where, cause = PIECE_CASES[case]
    found = compare_forward(tiny, CLASSIC_IDS, **pieces)
    assert (found.step, found.steps) == (f"layer 0's {where} output", 2 if where == "attention" else 3)
    assert found.cause.startswith(cause) and found.relative > 0.01, found
    assert helpers.transformer.attention is course_attention  # the mistakes made on purpose are undone


BLOCK_CASES = {
    "rotate-half RoPE": (learner_block(attention=learner_attention(rope=rope_rotate_half)), "RoPE pairs x_i"),
    "no mask": (learner_block(attention=learner_attention(mask=False)), "there is no causal mask"),
    "no scale": (learner_block(attention=learner_attention(scale=False)), "the scores are not divided"),
    "softmax over the queries": (learner_block(attention=learner_attention(softmax_dim=0)),
                                 "the softmax runs over the queries"),
    "GQA with repeat": (learner_block(attention=learner_attention(repeat=True)), "query head h reads"),
    "w1/w3 swapped": (learner_block(feed_forward=swapped_feed_forward), "w1 and w3 swapped"),
    "GELU": (learner_block(feed_forward=gelu_feed_forward), "the gate uses GELU"),
    "swapped norms": (learner_block(swap_norms=True), "the norms are swapped"),
    "LayerNorm": (learner_block(norm=layer_norm), "this is LayerNorm"),
    "attention added to the normalised stream": (learner_block(adds_to_normalised="attention"), "the attention's"),
    "feed-forward added to the normalised stream": (learner_block(adds_to_normalised="feed_forward"),
                                                    "the feed-forward's"),
}


@pytest.mark.parametrize("case", BLOCK_CASES)
def test_a_wrong_block_is_found_with_its_cause(tiny, case):
    block, cause = BLOCK_CASES[case]
    found = compare_forward(tiny, CLASSIC_IDS, transformer_block=block)
    assert found.step == "layer 0's output" and found.cause.startswith(cause), found


def test_a_mistake_in_a_later_layer_is_found_there(tiny):
    """An attention that goes wrong from its third call (layer 2) on: no known mistake, made in every layer,
    gives its values, so no cause is named."""
    calls = itertools.count()
    right, wrong = learner_attention(), learner_attention(rope=rope_rotate_half)
    found = compare_forward(tiny, CLASSIC_IDS, attention=lambda *args: (right if next(calls) < 2 else wrong)(*args))
    assert (found.step, found.cause) == ("layer 2's attention output", None)
    assert str(found).endswith("Likely cause: none of the mistakes the debugger knows.")


def test_the_course_tolerance_decides(tiny):
    def scaled(factor):
        return lambda *args: course_attention(*args) * factor

    assert compare_forward(tiny, CLASSIC_IDS, attention=scaled(1 + 1e-6)).step is None
    found = compare_forward(tiny, CLASSIC_IDS, attention=scaled(1.001))
    assert found.step == "layer 0's attention output" and found.relative == pytest.approx(1e-3, rel=1e-3)
    assert "0.1% of the largest value there (the course allows 0.01%)" in str(found)


@pytest.mark.parametrize("wrong", [lambda a: a * float("nan"), lambda a: a[:, :3]], ids=["nan", "shape"])
def test_nan_and_wrong_shapes_part(tiny, wrong):
    found = compare_forward(tiny, CLASSIC_IDS, attention=lambda *args: wrong(course_attention(*args)))
    assert found.step == "layer 0's attention output"


def test_forward_with_right_pieces_is_forward(tiny):
    with torch.inference_mode():
        expected = forward(tiny, CLASSIC_IDS)
    assert_close(forward_with(tiny, CLASSIC_IDS), expected)
    assert_close(forward_with(tiny, CLASSIC_IDS, attention=learner_attention()), expected)


def test_forward_with_a_cache_continues_the_sequence(tiny):
    """With a KVCache, each call reads only the new tokens, at their positions, and the course's
    attention and transformer_block get their layer's cache; the logits match a full pass."""
    with torch.inference_mode():
        expected = forward(tiny, CLASSIC_IDS)
    for yours in [{}, {"transformer_block": transformer_block}]:
        cache = KVCache(tiny.params, len(CLASSIC_IDS))
        first = forward_with(tiny, CLASSIC_IDS[:-2], cache=cache, **yours)
        rest = [forward_with(tiny, [token], cache=cache, **yours) for token in CLASSIC_IDS[-2:]]
        assert cache.length == len(CLASSIC_IDS)
        assert_close(torch.cat([first, *rest]), expected)


def test_rope_half_split_is_hugging_faces_rope(rng):
    """helpers' half-split RoPE against transformers' own, for several heads at once; and not Meta's."""
    x = torch.randn(5, 3, 8, generator=rng)
    freqs = torch.polar(torch.ones(5, 4), torch.rand(5, 4, generator=rng) * 6)
    both = torch.cat([freqs.angle(), freqs.angle()], -1)
    theirs, _ = apply_rotary_pos_emb(x, x, both.cos(), both.sin(), unsqueeze_dim=1)
    assert_close(apply_rope_half_split(x, freqs), theirs)
    assert (apply_rope_half_split(x, freqs) - apply_rope(x, freqs)).abs().max() > 0.1
