"""Solutions to the exercises of notebook 06: one transformer block, and the whole forward pass."""

import torch

from helpers import attention, feed_forward, linear, model_frequencies, rms_norm


def my_transformer_block(x, layer, params, freqs):
    xn = rms_norm(x, layer["attention_norm"], params.norm_eps)
    h = x + attention(xn, layer["wq"], layer["wk"], layer["wv"], layer["wo"], params.n_heads, params.n_kv_heads, freqs)
    hn = rms_norm(h, layer["ffn_norm"], params.norm_eps)
    return h + feed_forward(hn, layer["w1"], layer["w2"], layer["w3"])


def my_forward(model, tokens):
    p = model.params
    x = model.weights["tok_embeddings.weight"][tokens].float()
    freqs = model_frequencies(p, torch.arange(len(tokens)))
    for i in range(p.n_layers):
        x = my_transformer_block(x, model.layer(i), p, freqs)
    return linear(rms_norm(x, model.weights["norm.weight"], p.norm_eps), model.weights["output.weight"])
