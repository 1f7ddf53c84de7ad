"""Notebook 06's checks: one transformer block, and the whole forward pass to the logits."""

import torch

from .. import transformer
from ..attention import attention
from ..compute import linear
from ..rope import rope_frequencies
from .harness import layer_inputs, prompt_freqs, prompt_tokens, report, tiny_model


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
