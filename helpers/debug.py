"""A layer-by-layer debugger: your pieces of the forward pass next to the course's (notebooks 06 and 07b).

    print(compare_forward(model, tokens, attention=my_attention))

Your functions take the same arguments as the course's: `attention(x, wq, wk, wv, wo, n_heads,
n_kv_heads, freqs)`, `feed_forward(x, w1, w2, w3)`, or a whole `transformer_block(x, layer, params,
freqs)` instead of those two. Both passes run step by step: the embedding, each layer's attention
output and feed-forward output (of a whole block, only its output), the final norm, the logits. The
first step where the two part is reported with the size of the difference and, when one of the known
mistakes gives the same value there, the likely cause. The known mistakes are the checks' (helpers/check/)
wherever their functions are a step of the piece compared, made inside the course's pass: the queries,
RoPE, the attention weights, grouped-query attention, the feed-forward, the norms, the block. Two values agree, as in
`helpers.assert_close`, when every element is within FLOAT32_TOLERANCE of the largest magnitude in
the course's value.
"""

import sys
from dataclasses import dataclass
from unittest import mock

import torch

from . import check
from .attention import attention
from .check import attention as check_attention
from .compute import linear
from .rope import apply_rope, apply_rope_half_split, model_frequencies
from .tolerance import FLOAT32_TOLERANCE
from .transformer import check_tokens, feed_forward, rms_norm, transformer_block


def forward_steps(model, tokens, attention=attention, feed_forward=feed_forward, transformer_block=None,
                  cache=None):
    """helpers.forward with your functions in place of the course's, as (step, value) pairs in order.

    With a `cache` (a `KVCache`), `tokens` continue the sequence stored in it, as in helpers.forward,
    and your `attention` or `transformer_block` is given each layer's cache as one more argument.
    """
    p = model.params
    start = 0 if cache is None else cache.length
    tokens = check_tokens(model, tokens, start)
    x = model.weights["tok_embeddings.weight"][tokens].float()
    yield "the embedding", x
    freqs = model_frequencies(p, torch.arange(start, start + len(tokens)))
    for i in range(p.n_layers):
        layer = model.layer(i)
        layer_cache = () if cache is None else (cache.layers[i],)  # no cache: no extra argument for yours
        if transformer_block is not None:
            x = transformer_block(x, layer, p, freqs, *layer_cache)
            yield f"layer {i}'s output", x
            continue
        a = attention(rms_norm(x, layer["attention_norm"], p.norm_eps),
                      layer["wq"], layer["wk"], layer["wv"], layer["wo"], p.n_heads, p.n_kv_heads, freqs, *layer_cache)
        yield f"layer {i}'s attention output", a
        h = x + a
        f = feed_forward(rms_norm(h, layer["ffn_norm"], p.norm_eps), layer["w1"], layer["w2"], layer["w3"])
        yield f"layer {i}'s feed-forward output", f
        x = h + f
    x = rms_norm(x, model.weights["norm.weight"], p.norm_eps)
    yield "the final norm", x
    yield "the logits", linear(x, model.weights["output.weight"])


@torch.inference_mode()
def forward_with(model, tokens, cache=None, **yours):
    """The logits of `forward_steps`: helpers.forward's, when your functions are right."""
    *_, (_, logits) = forward_steps(model, tokens, cache=cache, **yours)
    return logits


def with_parts(function, **parts):
    """`function` run with some names of its module swapped for `parts`: a known mistake made on purpose."""
    module = sys.modules[function.__module__]

    def swapped(*args):
        with mock.patch.multiple(module, **parts):
            return function(*args)
    return swapped


def attention_with(params, rope=None, weights=None, heads=None, head_queries=None):
    """helpers.attention with one step done by a check's known mistake: `head_queries(x, wq, n_heads, h)` for each
    head's queries, `rope(x, rope_theta)` for each head of q and k, `weights(q, k)` for each head's attention
    weights, or `heads(q, k, v)` for all heads at once (helpers/check/attention.py, qkv_rope.py)."""
    def attend(x, wq, wk, wv, wo, n_heads, n_kv_heads, freqs, cache=None):
        seq, head_dim = len(x), wq.shape[0] // n_heads
        if head_queries is None:
            q = linear(x, wq).view(seq, n_heads, head_dim)
        else:
            q = torch.stack([head_queries(x, wq.float(), n_heads, h) for h in range(n_heads)], dim=1)
        k, v = (linear(x, w).view(seq, n_kv_heads, head_dim) for w in (wk, wv))
        if rope is None:
            q, k = apply_rope(q, freqs), apply_rope(k, freqs)
        else:
            q, k = (torch.stack([rope(t[:, h], params.rope_theta) for h in range(t.shape[1])], dim=1) for t in (q, k))
        if cache is not None:
            k, v = cache.update(k, v)
        everyone = heads or check_attention.heads_reading(check_attention.reads_in_groups,
                                                          weights or check_attention.head_weights)
        return linear(everyone(q, k, v).reshape(seq, n_heads * head_dim), wo)
    return attend


def in_float32(feed_forward_mistake):
    """A check's feed-forward mistake, which multiplies float32 weights, given a checkpoint's weights."""
    return lambda x, w1, w2, w3: feed_forward_mistake(x, *(w.float() for w in (w1, w2, w3)))


def residual_on_normalised(sublayer):
    """A layer whose `sublayer` ("attention" or "feed-forward") adds its output to its normalised input."""
    def block(x, layer, p, freqs):
        xn = rms_norm(x, layer["attention_norm"], p.norm_eps)
        h = (xn if sublayer == "attention" else x) + attention(
            xn, layer["wq"], layer["wk"], layer["wv"], layer["wo"], p.n_heads, p.n_kv_heads, freqs)
        hn = rms_norm(h, layer["ffn_norm"], p.norm_eps)
        return (hn if sublayer == "feed-forward" else h) + feed_forward(hn, layer["w1"], layer["w2"], layer["w3"])
    return block


# The debugger's own wording of two mistakes, which it names before the checks' own.
OWN_PIECE_MISTAKES = [
    ("RoPE pairs x_i with x_(i + head_dim/2), Hugging Face's layout, but Meta's wq/wk rows pair neighbours "
     "(x0, x1), (x2, x3), ...: rotate adjacent pairs, or permute the rows (notebook 07b)",
     {"attention": with_parts(attention, apply_rope=apply_rope_half_split)}),
    ("w1 and w3 swapped: silu belongs on w1 x (the gate), not on w3 x (the up projection)",
     {"feed_forward": lambda x, w1, w2, w3: feed_forward(x, w3, w2, w1)}),
]


def piece_mistakes(params):
    """(cause, pieces) for each known mistake of one piece: the debugger's own, then the checks' mistakes whose
    functions are a step of attention or the feed-forward, each made inside the course's attention or
    feed-forward."""
    steps = {"head_queries": "head_queries", "rope": "rope", "attention_weights": "weights",
             "grouped_attention": "heads"}
    found = OWN_PIECE_MISTAKES + [
        (f"{cause} (a mistake check.{name} knows)", {"attention": attention_with(params, **{step: mistake})})
        for name, step in steps.items() for cause, mistake in check.MISTAKES[name].items()]
    return found + [(f"{cause} (a mistake check.feed_forward knows)", {"feed_forward": in_float32(mistake)})
                    for cause, mistake in check.MISTAKES["feed_forward"].items()]


def block_mistakes(params):
    """(cause, pieces) for each known mistake of a whole block: those of its pieces and of its norms, made inside
    the course's transformer_block, check.transformer_block's, and two that only a whole block can make."""
    inside = [(cause, {"transformer_block": with_parts(transformer_block, **piece)})
              for cause, piece in piece_mistakes(params)]
    norms = [(f"{cause} (a mistake check.rms_norm knows, in the block's norms)",
              {"transformer_block": with_parts(transformer_block, rms_norm=mistake)})
             for cause, mistake in check.MISTAKES["rms_norm"].items()]
    blocks = [(f"{cause} (a mistake check.transformer_block knows)", {"transformer_block": mistake})
              for cause, mistake in check.MISTAKES["transformer_block"].items()]
    return inside + norms + blocks + [
        (f"the {sublayer}'s output is added to the normalised stream it read, not to the stream itself",
         {"transformer_block": residual_on_normalised(sublayer)}) for sublayer in ("attention", "feed-forward")]


@dataclass
class Comparison:
    """What `compare_forward` found."""

    steps: int  # how many steps were compared, the parting one included
    step: str | None = None  # the first step where your pass parts from the course's; None if none does
    largest: float = 0.0  # the largest absolute difference there (nan if yours holds a nan)
    relative: float = 0.0  # the same, as a fraction of the largest magnitude in the course's value
    cause: str | None = None  # the known mistake that gives your value there, if one does
    shapes: tuple = ()  # (yours, the course's) where the shapes differ

    def __str__(self):
        if self.step is None:
            return (f"No difference: all {self.steps} steps, from the embedding to the logits, agree within "
                    f"{100 * FLOAT32_TOLERANCE:g}% of their largest value.")
        if self.shapes:
            return f"Your pass parts from the course's at {self.step}: shape {self.shapes[0]}, not {self.shapes[1]}."
        return (f"Your pass parts from the course's at {self.step}: the largest difference is {self.largest:.3g}, "
                f"{100 * self.relative:.3g}% of the largest value there (the course allows "
                f"{100 * FLOAT32_TOLERANCE:g}%).\n"
                f"Likely cause: {self.cause or 'none of the mistakes the debugger knows'}.")


def difference(yours, expected):
    """The largest absolute difference, and that divided by the largest magnitude in `expected`."""
    largest = (yours.float() - expected).abs().max().item()
    return largest, largest / max(expected.abs().max().item(), torch.finfo(torch.float32).tiny)


def agrees(yours, expected):
    return yours.shape == expected.shape and difference(yours, expected)[1] <= FLOAT32_TOLERANCE  # False for a nan


def value_at(step, model, tokens, yours):
    """The value of `forward_steps` at `step`, running the pass only as far as that step."""
    return next(value for name, value in forward_steps(model, tokens, **yours) if name == step)


def gives(mine, step, model, tokens, pieces):
    """True when the known mistake `pieces` gives your value at `step`; False if it cannot run on this model."""
    try:
        return agrees(mine, value_at(step, model, tokens, pieces))
    except Exception:  # a mistake written for shapes this model does not have
        return False


@torch.inference_mode()
def compare_forward(model, tokens, **yours):
    """Run your functions (`attention=`, `feed_forward=`, or `transformer_block=`) and the course's side by
    side on `tokens`; a `Comparison` of the first step where they part (print it), or of none."""
    whole_block = yours.get("transformer_block") is not None
    reference = forward_steps(model, tokens, transformer_block=transformer_block if whole_block else None)
    yours = forward_steps(model, tokens, **yours)
    for n, ((step, mine), (_, expected)) in enumerate(zip(yours, reference, strict=False), 1):
        if mine.shape != expected.shape:
            return Comparison(n, step, shapes=(tuple(mine.shape), tuple(expected.shape)))
        if not agrees(mine, expected):
            mistakes = (block_mistakes if whole_block else piece_mistakes)(model.params)
            cause = next((cause for cause, pieces in mistakes if gives(mine, step, model, tokens, pieces)), None)
            return Comparison(n, step, *difference(mine, expected), cause)
    return Comparison(n)
