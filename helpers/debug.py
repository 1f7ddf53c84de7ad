"""A layer-by-layer debugger: your pieces of the forward pass next to the course's (notebook 03b).

    print(compare_forward(model, tokens, attention=my_attention))

Your functions take the same arguments as the course's: `attention(x, wq, wk, wv, wo, n_heads,
n_kv_heads, freqs)`, `feed_forward(x, w1, w2, w3)`, or a whole `transformer_block(x, layer, params,
freqs)` instead of those two. Both passes run step by step: the embedding, each layer's attention
output and feed-forward output (of a whole block, only its output), the final norm, the logits. The
first step where the two part is reported with the size of the difference and, when one of the known
mistakes below gives the same value there, the likely cause. Two values agree, as in
`helpers.assert_close`, when every element is within FLOAT32_TOLERANCE of the largest magnitude in
the course's value.
"""

import math
import sys
from dataclasses import dataclass
from unittest import mock

import torch

from .attention import attention
from .compute import linear
from .rope import apply_rope_half_split, model_frequencies
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


def unscaled_attention(x, wq, wk, wv, wo, n_heads, n_kv_heads, freqs, cache=None):
    """Attention with scores q·k not divided by sqrt(head_dim): queries sqrt(head_dim) times larger."""
    head_dim = wq.shape[0] // n_heads
    return attention(x, wq.float() * math.sqrt(head_dim), wk, wv, wo, n_heads, n_kv_heads, freqs, cache)


def residual_on_normalised(sublayer):
    """A layer whose `sublayer` ("attention" or "feed-forward") adds its output to its normalised input."""
    def block(x, layer, p, freqs):
        xn = rms_norm(x, layer["attention_norm"], p.norm_eps)
        h = (xn if sublayer == "attention" else x) + attention(
            xn, layer["wq"], layer["wk"], layer["wv"], layer["wo"], p.n_heads, p.n_kv_heads, freqs)
        hn = rms_norm(h, layer["ffn_norm"], p.norm_eps)
        return (hn if sublayer == "feed-forward" else h) + feed_forward(hn, layer["w1"], layer["w2"], layer["w3"])
    return block


# Each known mistake: what it is, and the piece that makes it.
PIECE_MISTAKES = [
    ("RoPE pairs x_i with x_(i + head_dim/2), Hugging Face's layout, but Meta's wq/wk rows pair neighbours "
     "(x0, x1), (x2, x3), ...: rotate adjacent pairs, or permute the rows (notebook 03b)",
     {"attention": with_parts(attention, apply_rope=apply_rope_half_split)}),
    ("no causal mask: each position also sees the positions after it",
     {"attention": with_parts(attention, causal_mask=lambda n_queries, n_keys: torch.zeros(n_queries, n_keys))}),
    ("the scores q·k are not divided by sqrt(head_dim)", {"attention": unscaled_attention}),
    ("w1 and w3 swapped: silu belongs on w1 x (the gate), not on w3 x (the up projection)",
     {"feed_forward": lambda x, w1, w2, w3: feed_forward(x, w3, w2, w1)}),
]
# The same mistakes inside a whole block (the names "attention" and "feed_forward" that transformer_block
# calls are swapped), and two that only a whole block can make.
BLOCK_MISTAKES = [(cause, {"transformer_block": with_parts(transformer_block, **piece)})
                  for cause, piece in PIECE_MISTAKES] + [
    (f"the {sublayer}'s output is added to the normalised stream it read, not to the stream itself",
     {"transformer_block": residual_on_normalised(sublayer)}) for sublayer in ("attention", "feed-forward")
]


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
    return difference(yours, expected)[1] <= FLOAT32_TOLERANCE  # False for a nan


def value_at(step, model, tokens, yours):
    """The value of `forward_steps` at `step`, running the pass only as far as that step."""
    return next(value for name, value in forward_steps(model, tokens, **yours) if name == step)


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
            mistakes = BLOCK_MISTAKES if whole_block else PIECE_MISTAKES
            cause = next((cause for cause, piece in mistakes if agrees(mine, value_at(step, model, tokens, piece))),
                         None)
            return Comparison(n, step, *difference(mine, expected), cause)
    return Comparison(n)
