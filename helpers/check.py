"""Checks for the exercises at the end of notebooks 01 to 08: `check.rms_norm(my_rms_norm)`, and so on.

Each check runs the learner's function (or class) on the embedded tiny model's real tensors
(the classic prompt, layer 0's weights) and prints one line:

- "not done yet": the function returns None (its body is still `...`) or raises NotImplementedError;
- "correct": it gives what helpers gives, within `assert_close`'s tolerance (notebook 02);
- "wrong: <a mistake>": it gives what a known mistake gives. Each check's mistakes are written
  out below as small wrong functions, and run: a diagnosis is an output compared, not a guess;
- otherwise what is off: a shape, a dtype, or how far and where.

An exception inside the learner's function is reported in one line; a check never raises for it.
`MISTAKES` lists every check's mistakes, by the diagnosis each one prints.
"""

import dataclasses
import functools
from collections import Counter

import torch

from . import transformer
from .attention import attention, causal_mask
from .attention import attention_weights as head_weights
from .compute import FLOAT32_TOLERANCE, assert_close, linear
from .generate import top_p_filter
from .int8 import quantize_int8
from .kv_cache import LayerCache
from .model import TINY_MODEL_DIR, load_model
from .rope import apply_rope, rope_frequencies

PROMPT = "the answer to the ultimate question of life, the universe, and everything is "


# ---- Running and comparing ------------------------------------------------------------------------------

def verdict(learner, cases, reference, mistakes):
    """The line a check prints. `cases` maps a label to a runner, which calls a function on that case's inputs."""
    try:
        got = {label: run(learner) for label, run in cases.items()}
    except NotImplementedError:
        return "not done yet"
    except Exception as error:
        message = str(error).strip().splitlines()
        return f"your function raised {type(error).__name__}" + (f": {message[0]}" if message else "")
    if holds_none(got):
        return "not done yet"
    expected = {label: run(reference) for label, run in cases.items()}
    if same(got, expected):
        return "correct"
    for diagnosis, mistake in mistakes.items():
        if same(got, {label: run(mistake) for label, run in cases.items()}):
            return f"wrong: {diagnosis}"
    try:
        return f"wrong: {difference(got, expected)}"
    except Exception as error:  # an output too odd to describe
        return f"wrong: the output differs from helpers' and cannot be compared ({type(error).__name__}: {error})"


def holds_none(result):
    if isinstance(result, dict):
        return any(holds_none(r) for r in result.values())
    if isinstance(result, (list, tuple)):
        return any(holds_none(r) for r in result)
    return result is None


def same(got, expected):
    """True when `got` is `expected`: tensors of the same shape and dtype within assert_close, the rest equal."""
    try:
        if isinstance(expected, torch.Tensor):
            if not isinstance(got, torch.Tensor) or got.shape != expected.shape or got.dtype != expected.dtype:
                return False
            assert_close(got, expected)
            return True
        if isinstance(expected, dict):
            return got.keys() == expected.keys() and all(same(got[key], expected[key]) for key in expected)
        if isinstance(expected, (list, tuple)):
            return (isinstance(got, (list, tuple)) and len(got) == len(expected)
                    and all(same(g, e) for g, e in zip(got, expected)))
        return bool(got == expected)
    except Exception:  # AssertionError from assert_close, or an output that cannot be compared at all
        return False


def difference(got, expected):
    """Where `got` first differs from `expected`, and how."""
    if isinstance(expected, dict):
        key = next(key for key in expected if not same(got[key], expected[key]))
        return f"{key}: {difference(got[key], expected[key])}"
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor, got {type(got).__name__}"
        if got.shape != expected.shape:
            return f"wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}"
        if got.dtype != expected.dtype:
            return f"wrong dtype: expected {expected.dtype}, got {got.dtype}"
        return how_far(got, expected)
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return f"expected a {type(expected).__name__}, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"wrong length: expected {len(expected)} items, got {len(got)}"
        i = next(i for i, (g, e) in enumerate(zip(got, expected)) if not same(g, e))
        return f"at index {i}, {difference(got[i], expected[i])}"
    return f"expected {expected!r}, got {got!r}"


def how_far(got, expected):
    """The largest difference relative to the largest expected magnitude, and the first index that is off."""
    finite = expected[torch.isfinite(expected)].abs()
    scale = finite.max().item() if finite.numel() else 1.0
    gap = (got.double() - expected.double()).abs()
    off = ~((gap <= FLOAT32_TOLERANCE * scale) | (got == expected))  # equal infinities are not off; NaN is
    index = tuple(off.nonzero()[0].tolist())
    return (f"off by up to {gap[off].max().item() / scale:.3g} times the largest expected value ({scale:.3g}); "
            f"first at index {index}: expected {expected[index].item():.4g}, got {got[index].item():.4g}")


def report(learner, cases, reference, mistakes):
    print(verdict(learner, cases, reference, mistakes))


# ---- The tiny model's tensors, loaded once --------------------------------------------------------------

@functools.cache
def tiny_model():
    return load_model(TINY_MODEL_DIR, verbose=False)


@functools.cache
def prompt_tokens():
    return torch.tensor(tiny_model().tokenizer.encode(PROMPT))


@functools.cache
def prompt_freqs():
    p = tiny_model().params
    return rope_frequencies(p.head_dim, torch.arange(len(prompt_tokens())), p.rope_theta)


@functools.cache
def prompt_embeddings():
    return tiny_model().weights["tok_embeddings.weight"][prompt_tokens()].float()


@functools.cache
def normalised():
    """The input of layer 0's attention: the embeddings after its attention_norm."""
    model = tiny_model()
    return transformer.rms_norm(prompt_embeddings(), model.layer(0)["attention_norm"], model.params.norm_eps)


@functools.cache
def queries_keys_values(rope=True):
    """Layer 0's q (seq, n_heads, head_dim), k and v (seq, n_kv_heads, head_dim); q and k after RoPE or before."""
    p, layer, xn = tiny_model().params, tiny_model().layer(0), normalised()
    q = linear(xn, layer["wq"]).view(len(xn), p.n_heads, p.head_dim)
    k = linear(xn, layer["wk"]).view(len(xn), p.n_kv_heads, p.head_dim)
    v = linear(xn, layer["wv"]).view(len(xn), p.n_kv_heads, p.head_dim)
    if rope:
        q, k = apply_rope(q, prompt_freqs()), apply_rope(k, prompt_freqs())
    return q, k, v


# ---- 01: one BPE step -----------------------------------------------------------------------------------

PROMPT_BYTES = list(PROMPT.encode("utf-8"))
TH, THE = (ord("t"), ord("h")), (256, ord("e"))  # the prompt's first merges: "th" -> 256, then "th" "e" -> 257


def merge_reference(ids, pair, new_id):
    """Each id as one character: str.replace joins the pair's non-overlapping occurrences, left to right."""
    text = "".join(map(chr, ids)).replace(chr(pair[0]) + chr(pair[1]), chr(new_id))
    return [ord(c) for c in text]


AFTER_TH = merge_reference(PROMPT_BYTES, TH, 256)


def most_frequent_pair_reference(ids):
    """Counter keeps pairs in the order first seen, and most_common keeps that order among equal counts."""
    return Counter(zip(ids, ids[1:])).most_common(1)[0][0]


def _pair_seen_last(ids):
    counts = Counter(zip(ids, ids[1:]))
    return max(reversed(counts), key=counts.get)


def _least_frequent_pair(ids):
    counts = Counter(zip(ids, ids[1:]))
    return min(counts, key=counts.get)


MOST_FREQUENT_PAIR_MISTAKES = {
    "of equally frequent pairs it picks the last seen; the rule is the first seen": _pair_seen_last,
    "it picks the least frequent pair (min instead of max)": _least_frequent_pair,
}


def most_frequent_pair(my_most_frequent_pair):
    """Exercise 01: the pair of neighbouring ids seen most often in `ids`; of equal counts, the first seen."""
    cases = {
        "the prompt's bytes": lambda fn: fn(list(PROMPT_BYTES)),
        "the prompt after merging 'th'": lambda fn: fn(list(AFTER_TH)),
    }
    report(my_most_frequent_pair, cases, most_frequent_pair_reference, MOST_FREQUENT_PAIR_MISTAKES)


def _merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return ids[:i] + [new_id] + ids[i + 2:]
    return list(ids)


def _merge_keeping_second(ids, pair, new_id):
    out = []
    for i in range(len(ids)):
        out.append(new_id if (ids[i], ids[i + 1 : i + 2]) == (pair[0], [pair[1]]) else ids[i])
    return out


def _merge_dropping_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


MERGE_MISTAKES = {
    "only the first occurrence of the pair is merged": _merge_first_only,
    "the pair's second id stays: after a merge, step past both ids (i += 2)": _merge_keeping_second,
    "the last id is lost when it is not part of a merge: the loop stops one id early": _merge_dropping_last,
    "it merges the pair in reverse order, (pair[1], pair[0])":
        lambda ids, pair, new_id: merge_reference(ids, pair[::-1], new_id),
}


def merge(my_merge):
    """Exercise 01: `ids` with every occurrence of `pair`, left to right, replaced by `new_id`."""
    cases = {
        "merging 't' 'h' into 256": lambda fn: fn(list(PROMPT_BYTES), TH, 256),
        "merging 'th' 'e' into 257": lambda fn: fn(list(AFTER_TH), THE, 257),
    }
    report(my_merge, cases, merge_reference, MERGE_MISTAKES)


# ---- 02: embeddings and RMSNorm -------------------------------------------------------------------------

EMBEDDINGS_MISTAKES = {
    "the rows are still bfloat16: convert them to float32": lambda table, tokens: table[tokens],
    "it takes the rows of the positions 0, 1, 2, ..., not of the token ids":
        lambda table, tokens: table[: len(tokens)].float(),
}


def embeddings(my_embeddings):
    """Exercise 02: the float32 embedding of each token id, read from the bfloat16 table by indexing."""
    table, tokens = tiny_model().weights["tok_embeddings.weight"], prompt_tokens()
    cases = {"the classic prompt": lambda fn: fn(table, tokens.clone())}
    report(my_embeddings, cases, lambda table, tokens: table[tokens].float(), EMBEDDINGS_MISTAKES)


RMS_NORM_MISTAKES = {
    "eps is missing: divide by sqrt(mean(x**2) + eps)":
        lambda x, weight, eps: x / x.pow(2).mean(-1, keepdim=True).sqrt() * weight,
    "eps is added outside the square root: it belongs inside, sqrt(mean(x**2) + eps)":
        lambda x, weight, eps: x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * weight,
    "the mean is over the tokens (dim 0); RMSNorm averages each vector's own numbers (dim -1)":
        lambda x, weight, eps: x / (x.pow(2).mean(0, keepdim=True) + eps).sqrt() * weight,
    "the learned weight is not applied":
        lambda x, weight, eps: x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt(),
    "it divides by the norm, sqrt(sum(x**2)), instead of the RMS, sqrt(mean(x**2))":
        lambda x, weight, eps: x / (x.pow(2).sum(-1, keepdim=True) + eps).sqrt() * weight,
    "eps is written as 1e-5 instead of using the eps argument":
        lambda x, weight, eps: x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * weight,
}


def rms_norm(my_rms_norm):
    """Exercise 02: RMSNorm, x / sqrt(mean(x**2) + eps) * weight, for each row of x."""
    x, weight, eps = prompt_embeddings(), tiny_model().layer(0)["attention_norm"].float(), tiny_model().params.norm_eps
    cases = {
        f"eps = {eps:g}": lambda fn: fn(x.clone(), weight.clone(), eps),
        "eps = 0.001": lambda fn: fn(x.clone(), weight.clone(), 1e-3),
    }
    report(my_rms_norm, cases, transformer.rms_norm, RMS_NORM_MISTAKES)


# ---- 03: one head's queries, and RoPE -------------------------------------------------------------------

def head_queries_reference(x, wq, n_heads, h):
    return linear(x, wq).view(len(x), n_heads, -1)[:, h]


HEAD_QUERIES_MISTAKES = {
    "the heads are interleaved (rows h, h + n_heads, ...): head h is the h-th block of head_dim rows":
        lambda x, wq, n_heads, h: linear(x, wq[h::n_heads]),
    "wq is not transposed: the projection is x @ wq.T":
        lambda x, wq, n_heads, h: (x @ wq).view(len(x), n_heads, -1)[:, h],
}


def head_queries(my_head_queries):
    """Exercise 03: head h's queries, (seq, head_dim), from x (seq, dim) and wq (n_heads * head_dim, dim)."""
    p, x, wq = tiny_model().params, normalised(), tiny_model().layer(0)["wq"].float()
    cases = {f"head {h}": lambda fn, h=h: fn(x.clone(), wq.clone(), p.n_heads, h) for h in (0, 3)}
    report(my_head_queries, cases, head_queries_reference, HEAD_QUERIES_MISTAKES)


def rope_reference(x, rope_theta):
    return apply_rope(x, rope_frequencies(x.shape[-1], torch.arange(len(x)), rope_theta))


def pair_angles(n_positions, head_dim, rope_theta, first_position=0, exponent_step=2):
    """The angle m * theta_j of each position m and pair j, theta_j = rope_theta ** (-2j / head_dim)."""
    theta_j = rope_theta ** (-exponent_step * torch.arange(head_dim // 2) / head_dim)
    return torch.outer(torch.arange(first_position, first_position + n_positions).float(), theta_j)


def rotate_adjacent_pairs(x, angles):
    a, b = x[:, 0::2], x[:, 1::2]
    return torch.stack([a * angles.cos() - b * angles.sin(), a * angles.sin() + b * angles.cos()], -1).flatten(-2)


def _rope_half_split(x, rope_theta):
    angles = pair_angles(len(x), x.shape[-1], rope_theta)
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * angles.cos() - b * angles.sin(), a * angles.sin() + b * angles.cos()], -1)


ROPE_MISTAKES = {
    "the pairs are split in halves, (x[j], x[j + head_dim/2]), Hugging Face's layout; "
    "Meta's checkpoint pairs adjacent numbers, (x[2j], x[2j+1])": _rope_half_split,
    "the positions start at 1; the first token is at position 0":
        lambda x, rope_theta: rotate_adjacent_pairs(x, pair_angles(len(x), x.shape[-1], rope_theta, first_position=1)),
    "it rotates the wrong way: the sign of sin is flipped":
        lambda x, rope_theta: rotate_adjacent_pairs(x, -pair_angles(len(x), x.shape[-1], rope_theta)),
    "the 2 is missing from theta_j = rope_theta ** (-2j / head_dim)":
        lambda x, rope_theta: rotate_adjacent_pairs(x, pair_angles(len(x), x.shape[-1], rope_theta, exponent_step=1)),
}


def rope(my_rope):
    """Exercise 03: RoPE on x (seq, head_dim), row m at position m, adjacent pairs turned by m * theta_j."""
    q, k, _ = queries_keys_values(rope=False)
    theta = tiny_model().params.rope_theta
    cases = {
        "head 0's queries": lambda fn: fn(q[:, 0].clone(), theta),
        "key/value head 1's keys": lambda fn: fn(k[:, 1].clone(), theta),
    }
    report(my_rope, cases, rope_reference, ROPE_MISTAKES)


# ---- 04: attention weights, and grouped-query attention -------------------------------------------------

def _softmax_of_scores(q, k, scale, mask, dim=-1):
    return torch.softmax(q @ k.T * scale + mask, dim=dim)


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
}


def attention_weights(my_attention_weights):
    """Exercise 04: one head's weights, softmax(q k^T / sqrt(head_dim) + causal mask), (seq, seq)."""
    q, k, _ = queries_keys_values()
    cases = {
        "query head 0 with key head 0": lambda fn: fn(q[:, 0].clone(), k[:, 0].clone()),
        "query head 7 with key head 1": lambda fn: fn(q[:, 7].clone(), k[:, 1].clone()),
    }
    report(my_attention_weights, cases, head_weights, ATTENTION_WEIGHTS_MISTAKES)


def heads_reading(kv_head_of):
    """Grouped-query attention where query head h reads key/value head kv_head_of(h, n_heads, n_kv_heads)."""
    def heads(q, k, v):
        n_heads, n_kv_heads = q.shape[1], k.shape[1]
        out = []
        for h in range(n_heads):
            j = kv_head_of(h, n_heads, n_kv_heads)
            out.append(head_weights(q[:, h], k[:, j]) @ v[:, j])
        return torch.stack(out, dim=1)
    return heads


# Query head h reads key/value head h // n_rep: each key/value head serves n_rep consecutive query heads.
grouped_attention_reference = heads_reading(lambda h, n_heads, n_kv_heads: h // (n_heads // n_kv_heads))

GROUPED_ATTENTION_MISTAKES = {
    "query head h reads key/value head h % n_kv_heads; it is h // n_rep (consecutive query heads share one)":
        heads_reading(lambda h, n_heads, n_kv_heads: h % n_kv_heads),
    "every query head reads key/value head 0":
        heads_reading(lambda h, n_heads, n_kv_heads: 0),
}


def grouped_attention(my_grouped_attention):
    """Exercise 04: every query head's output, (seq, n_heads, head_dim), from q and the fewer heads of k and v."""
    q, k, v = queries_keys_values()
    cases = {"layer 0": lambda fn: fn(q.clone(), k.clone(), v.clone())}
    report(my_grouped_attention, cases, grouped_attention_reference, GROUPED_ATTENTION_MISTAKES)


# ---- 05: the feed-forward width, and SwiGLU -------------------------------------------------------------

def hidden_dim_reference(dim, multiple_of, ffn_dim_multiplier):
    params = dataclasses.replace(tiny_model().params, dim=dim, multiple_of=multiple_of,
                                 ffn_dim_multiplier=ffn_dim_multiplier)
    return params.hidden_dim


def _round_up(n, multiple_of):
    return -(-n // multiple_of) * multiple_of


def _scaled(hidden, ffn_dim_multiplier):
    return hidden if ffn_dim_multiplier is None else int(ffn_dim_multiplier * hidden)


HIDDEN_DIM_MISTAKES = {
    "ffn_dim_multiplier is not applied":
        lambda dim, multiple_of, ffn_dim_multiplier: _round_up(int(2 * 4 * dim / 3), multiple_of),
    "it rounds down to a multiple of multiple_of; Meta's rule rounds up":
        lambda dim, multiple_of, ffn_dim_multiplier:
            _scaled(int(2 * 4 * dim / 3), ffn_dim_multiplier) // multiple_of * multiple_of,
    "the 2/3 is missing: the width starts from 2/3 of 4 * dim":
        lambda dim, multiple_of, ffn_dim_multiplier: _round_up(_scaled(4 * dim, ffn_dim_multiplier), multiple_of),
    "ffn_dim_multiplier is applied after rounding; it comes before":
        lambda dim, multiple_of, ffn_dim_multiplier:
            _scaled(_round_up(int(2 * 4 * dim / 3), multiple_of), ffn_dim_multiplier),
}


def hidden_dim(my_hidden_dim):
    """Exercise 05: the feed-forward width from dim, multiple_of and ffn_dim_multiplier (None: not scaled)."""
    p = tiny_model().params
    shapes = {
        "the tiny model": (p.dim, p.multiple_of, p.ffn_dim_multiplier),
        "Meta-Llama-3-8B": (4096, 1024, 1.3),
        "Llama 3.2 1B": (2048, 256, 1.5),
        "Llama 3.2 3B": (3072, 256, 1.0),
        "no ffn_dim_multiplier": (4096, 256, None),
    }
    cases = {f"{name} {shape}": lambda fn, shape=shape: fn(*shape) for name, shape in shapes.items()}
    report(my_hidden_dim, cases, hidden_dim_reference, HIDDEN_DIM_MISTAKES)


@functools.cache
def layer_inputs(i):
    """Layer i's input on the classic prompt (the stream after the layers before it), and its FFN's input."""
    model, p = tiny_model(), tiny_model().params
    x = prompt_embeddings()
    for j in range(i):
        x = transformer.transformer_block(x, model.layer(j), p, prompt_freqs())
    layer = model.layer(i)
    xn = transformer.rms_norm(x, layer["attention_norm"], p.norm_eps)
    h = x + attention(xn, layer["wq"], layer["wk"], layer["wv"], layer["wo"], p.n_heads, p.n_kv_heads, prompt_freqs())
    return {"x": x, "ffn_input": transformer.rms_norm(h, layer["ffn_norm"], p.norm_eps)}


FEED_FORWARD_MISTAKES = {
    "w1 and w3 are swapped: SiLU goes on w1's output (the gate), not on w3's":
        lambda x, w1, w2, w3: (torch.nn.functional.silu(x @ w3.T) * (x @ w1.T)) @ w2.T,
    "the gate has no SiLU":
        lambda x, w1, w2, w3: ((x @ w1.T) * (x @ w3.T)) @ w2.T,
    "the gate uses sigmoid(z); SiLU is z * sigmoid(z)":
        lambda x, w1, w2, w3: (torch.sigmoid(x @ w1.T) * (x @ w3.T)) @ w2.T,
    "the gate uses ReLU; Llama's is SiLU":
        lambda x, w1, w2, w3: (torch.relu(x @ w1.T) * (x @ w3.T)) @ w2.T,
}


def feed_forward(my_feed_forward):
    """Exercise 05: SwiGLU, w2(silu(w1 x) * w3 x), on layer 0's feed-forward input; the weights in float32."""
    layer = tiny_model().layer(0)
    w1, w2, w3 = (layer[name].float() for name in ("w1", "w2", "w3"))
    x = layer_inputs(0)["ffn_input"]
    cases = {"layer 0": lambda fn: fn(x.clone(), w1.clone(), w2.clone(), w3.clone())}
    report(my_feed_forward, cases, transformer.feed_forward, FEED_FORWARD_MISTAKES)


# ---- 06: one transformer block, and the whole forward pass ----------------------------------------------

def _block_on_normalised_stream(x, layer, params, freqs):
    xn = transformer.rms_norm(x, layer["attention_norm"], params.norm_eps)
    h = xn + attention(xn, layer["wq"], layer["wk"], layer["wv"], layer["wo"], params.n_heads, params.n_kv_heads, freqs)
    hn = transformer.rms_norm(h, layer["ffn_norm"], params.norm_eps)
    return hn + transformer.feed_forward(hn, layer["w1"], layer["w2"], layer["w3"])


def _block(x, layer, params, freqs, attention_norm="attention_norm", ffn_norm="ffn_norm", ffn_reads_x=False,
           residual=True):
    """One layer with one of its parts changed, for the mistakes below."""
    xn = transformer.rms_norm(x, layer[attention_norm], params.norm_eps)
    a = attention(xn, layer["wq"], layer["wk"], layer["wv"], layer["wo"], params.n_heads, params.n_kv_heads, freqs)
    h = x + a if residual else a
    f = transformer.feed_forward(transformer.rms_norm(x if ffn_reads_x else h, layer[ffn_norm], params.norm_eps),
                     layer["w1"], layer["w2"], layer["w3"])
    return h + f if residual else f


TRANSFORMER_BLOCK_MISTAKES = {
    "the sub-layers' outputs are added to the normalised stream; add them to the stream itself":
        _block_on_normalised_stream,
    "the norms are swapped: attention_norm goes before attention, ffn_norm before the feed-forward":
        lambda x, layer, params, freqs: _block(x, layer, params, freqs, attention_norm="ffn_norm",
                                               ffn_norm="attention_norm"),
    "the feed-forward reads the block's input x; it reads h, the stream after attention":
        lambda x, layer, params, freqs: _block(x, layer, params, freqs, ffn_reads_x=True),
    "there are no residual connections: each sub-layer's output is added to its input":
        lambda x, layer, params, freqs: _block(x, layer, params, freqs, residual=False),
}


def transformer_block(my_transformer_block):
    """Exercise 06: one layer, h = x + attention(norm(x)), out = h + feed_forward(norm(h))."""
    model, p, freqs = tiny_model(), tiny_model().params, prompt_freqs()
    cases = {f"layer {i}": lambda fn, i=i: fn(layer_inputs(i)["x"].clone(), model.layer(i), p, freqs.clone())
             for i in (0, p.n_layers - 1)}
    report(my_transformer_block, cases, transformer.transformer_block, TRANSFORMER_BLOCK_MISTAKES)


def _forward_with(model, tokens, n_layers=None, rope_theta=None, final_norm=True, output="output.weight"):
    """The forward pass with one of its parts changed, for the mistakes below."""
    p = model.params
    x = model.weights["tok_embeddings.weight"][tokens].float()
    freqs = rope_frequencies(p.head_dim, torch.arange(len(tokens)), rope_theta or p.rope_theta)
    for i in range(p.n_layers if n_layers is None else n_layers):
        x = transformer.transformer_block(x, model.layer(i), p, freqs)
    if final_norm:
        x = transformer.rms_norm(x, model.weights["norm.weight"], p.norm_eps)
    return linear(x, model.weights[output])


FORWARD_MISTAKES = {
    "the final RMSNorm (norm.weight) is missing before the output layer":
        lambda model, tokens: _forward_with(model, tokens, final_norm=False),
    "the last layer is skipped: run all n_layers":
        lambda model, tokens: _forward_with(model, tokens, n_layers=model.params.n_layers - 1),
    "the logits come from the embedding table; the output layer is output.weight":
        lambda model, tokens: _forward_with(model, tokens, output="tok_embeddings.weight"),
    "RoPE uses theta 10000 (Llama 2's); Llama 3's is params.rope_theta, 500000":
        lambda model, tokens: _forward_with(model, tokens, rope_theta=10000.0),
}


def forward(my_forward):
    """Exercise 06: the logits (seq, vocab_size) of every position, from token ids."""
    model, tokens = tiny_model(), prompt_tokens()
    cases = {"the classic prompt": lambda fn: fn(model, tokens.clone())}
    report(my_forward, cases, transformer.forward, FORWARD_MISTAKES)


# ---- 07: a top-p filter, and a KV cache's update --------------------------------------------------------

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


# ---- 08: int8 weights, one scale per row; and back to float32, one scale per group ------------------------

def int8_matrix():
    """Layer 0's w1 of the tiny model in float32: (hidden_dim, dim), so that rows and columns differ in number."""
    return tiny_model().layer(0)["w1"].float()


def quantize_rows_reference(w):
    q = quantize_int8(w)  # one group per row
    return q.values, q.scales[:, 0]


def _quantize_truncating(w):
    scales = w.abs().amax(dim=1) / 127
    return (w / scales[:, None]).to(torch.int8), scales


def _quantize_per_column(w):
    scales = w.abs().amax(dim=0) / 127
    return (w / scales).round().to(torch.int8), scales


def _quantize_scale_is_absmax(w):
    absmax = w.abs().amax(dim=1)
    return (w / absmax[:, None] * 127).round().to(torch.int8), absmax


QUANTIZE_ROWS_MISTAKES = {
    "the numbers are cut toward zero, not rounded: round before converting to int8": _quantize_truncating,
    "one scale per column (the largest magnitude over dim 0); each row needs its own: amax(dim=1)":
        _quantize_per_column,
    "the scale is the row's largest magnitude itself: divide it by 127, so that values * scale gives the weights":
        _quantize_scale_is_absmax,
}


def quantize_rows(my_quantize_rows):
    """Exercise 08: int8 values (out, in) and float32 scales (out,), each row's largest magnitude / 127."""
    w = int8_matrix()
    cases = {"layer 0's w1": lambda fn: fn(w.clone())}
    report(my_quantize_rows, cases, quantize_rows_reference, QUANTIZE_ROWS_MISTAKES)


def dequantize_reference(values, scales):
    return values.float() * scales.repeat_interleave(values.shape[1] // scales.shape[1], dim=1)


def _dequantize_tiled(values, scales):
    return values.float() * scales.repeat(1, values.shape[1] // scales.shape[1])


def _dequantize_dividing(values, scales):
    return values.float() / scales.repeat_interleave(values.shape[1] // scales.shape[1], dim=1)


def _dequantize_first_scale(values, scales):
    return values.float() * scales[:, :1]


DEQUANTIZE_MISTAKES = {
    "the scales are laid side by side (repeat): a row's first group_size numbers need its first scale, "
    "the next ones its second (repeat_interleave)": _dequantize_tiled,
    "the numbers are divided by their scale: multiply them": _dequantize_dividing,
    "the whole row takes its first group's scale: each group has its own": _dequantize_first_scale,
}


def dequantize_groups(my_dequantize):
    """Exercise 08: float32 (out, in) from int8 values (out, in) and scales (out, in / group_size)."""
    q = quantize_int8(int8_matrix(), 32)
    cases = {"layer 0's w1, groups of 32": lambda fn: fn(q.values.clone(), q.scales.clone())}
    report(my_dequantize, cases, dequantize_reference, DEQUANTIZE_MISTAKES)


MISTAKES = {
    "most_frequent_pair": MOST_FREQUENT_PAIR_MISTAKES,
    "merge": MERGE_MISTAKES,
    "embeddings": EMBEDDINGS_MISTAKES,
    "rms_norm": RMS_NORM_MISTAKES,
    "head_queries": HEAD_QUERIES_MISTAKES,
    "rope": ROPE_MISTAKES,
    "attention_weights": ATTENTION_WEIGHTS_MISTAKES,
    "grouped_attention": GROUPED_ATTENTION_MISTAKES,
    "hidden_dim": HIDDEN_DIM_MISTAKES,
    "feed_forward": FEED_FORWARD_MISTAKES,
    "transformer_block": TRANSFORMER_BLOCK_MISTAKES,
    "forward": FORWARD_MISTAKES,
    "top_p": TOP_P_MISTAKES,
    "kv_cache": KV_CACHE_MISTAKES,
    "quantize_rows": QUANTIZE_ROWS_MISTAKES,
    "dequantize_groups": DEQUANTIZE_MISTAKES,
}
