"""Notebook 06's checks: one transformer block, and the whole forward pass to the logits.

Both run on the tiny model and on a random model whose sizes differ; the forward pass also on a random
2-layer model with Llama 3.1's RoPE scaling and its output layer tied to the embedding table.
"""

import dataclasses

import torch

from .. import transformer
from ..attention import attention
from ..compute import linear
from ..rope import model_frequencies
from .harness import MODELS, TWO_MODELS, described, freqs, layer_inputs, model, report, tokens


def _block_on_normalised_stream(x, layer, params, freqs):
    xn = transformer.rms_norm(x, layer["attention_norm"], params.norm_eps)
    h = xn + attention(xn, layer["wq"], layer["wk"], layer["wv"], layer["wo"], params.n_heads, params.n_kv_heads, freqs)
    hn = transformer.rms_norm(h, layer["ffn_norm"], params.norm_eps)
    return hn + transformer.feed_forward(hn, layer["w1"], layer["w2"], layer["w3"])


def _block(x, layer, params, freqs, attention_norm="attention_norm", ffn_norm="ffn_norm", ffn_reads_x=False,
           residuals=(True, True)):
    """One layer with one of its parts changed, for the mistakes below; `ffn_norm` None skips that norm."""
    xn = transformer.rms_norm(x, layer[attention_norm], params.norm_eps)
    a = attention(xn, layer["wq"], layer["wk"], layer["wv"], layer["wo"], params.n_heads, params.n_kv_heads, freqs)
    h = x + a if residuals[0] else a
    ffn_input = x if ffn_reads_x else h
    if ffn_norm is not None:
        ffn_input = transformer.rms_norm(ffn_input, layer[ffn_norm], params.norm_eps)
    f = transformer.feed_forward(ffn_input, layer["w1"], layer["w2"], layer["w3"])
    return h + f if residuals[1] else f


TRANSFORMER_BLOCK_MISTAKES = {
    "the sub-layers' outputs are added to the normalised stream; add them to the stream itself":
        _block_on_normalised_stream,
    "the norms are swapped: attention_norm goes before attention, ffn_norm before the feed-forward":
        lambda x, layer, params, freqs: _block(x, layer, params, freqs, attention_norm="ffn_norm",
                                               ffn_norm="attention_norm"),
    "the feed-forward reads the block's input x; it reads h, the stream after attention":
        lambda x, layer, params, freqs: _block(x, layer, params, freqs, ffn_reads_x=True),
    "there are no residual connections: each sub-layer's output is added to its input":
        lambda x, layer, params, freqs: _block(x, layer, params, freqs, residuals=(False, False)),
    "the second residual connection is missing: the block returns h + feed_forward(...), not the feed-forward's "
    "output alone": lambda x, layer, params, freqs: _block(x, layer, params, freqs, residuals=(True, False)),
    "ffn_norm is skipped: the feed-forward reads rms_norm(h, ffn_norm), not h itself":
        lambda x, layer, params, freqs: _block(x, layer, params, freqs, ffn_norm=None),
}


def transformer_block(my_transformer_block):
    """Exercise 06: one layer, h = x + attention(norm(x)), out = h + feed_forward(norm(h))."""
    def run(name, i):
        m = model(name)
        return lambda fn: fn(layer_inputs(i, name)["x"].clone(), m.layer(i), m.params, freqs(name).clone())

    cases = {f"{described(name)}, layer {i}": run(name, i) for name in TWO_MODELS
             for i in (0, model(name).params.n_layers - 1)}
    report(my_transformer_block, cases, transformer.transformer_block, TRANSFORMER_BLOCK_MISTAKES)


def _forward_with(model, tokens, n_layers=None, final_norm=True, output="output.weight", layer_of=None, **rope):
    """The forward pass with one of its parts changed, for the mistakes below. `rope` replaces fields of the
    params RoPE's angles are computed from (rope_theta, rope_scaling); `layer_of(i)` is the layer whose weights
    the i-th layer takes."""
    p = model.params
    x = model.weights["tok_embeddings.weight"][tokens].float()
    freqs = model_frequencies(dataclasses.replace(p, **rope), torch.arange(len(tokens)))
    for i in range(p.n_layers if n_layers is None else n_layers):
        x = transformer.transformer_block(x, model.layer(i if layer_of is None else layer_of(i)), p, freqs)
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
    "rope_theta is written as 500000: read params.rope_theta, models differ":
        lambda model, tokens: _forward_with(model, tokens, rope_theta=500000.0),
    "RoPE is not scaled: Llama 3.1 and later slow its long wavelengths (params.rope_scaling); compute the "
    "angles with model_frequencies(params, positions), or pass params.rope_scaling to rope_frequencies":
        lambda model, tokens: _forward_with(model, tokens, rope_scaling=None),
    "every layer uses layer 0's weights: layer i reads model.layer(i)":
        lambda model, tokens: _forward_with(model, tokens, layer_of=lambda i: 0),
}


def forward(my_forward):
    """Exercise 06: the logits (seq, vocab_size) of every position, from token ids."""
    cases = {described(name): lambda fn, name=name: fn(model(name), tokens(name).clone()) for name in MODELS}
    report(my_forward, cases, transformer.forward, FORWARD_MISTAKES)
