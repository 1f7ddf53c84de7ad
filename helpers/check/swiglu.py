"""Notebook 05's checks: the feed-forward width by Meta's rule, and the SwiGLU feed-forward."""

import dataclasses

import torch

from .. import transformer
from .harness import TWO_MODELS, described, layer_inputs, model, report, tiny_model


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
    "it rounds to the nearest multiple of multiple_of; Meta's rule rounds up":
        lambda dim, multiple_of, ffn_dim_multiplier:
            round(_scaled(int(2 * 4 * dim / 3), ffn_dim_multiplier) / multiple_of) * multiple_of,
}


def hidden_dim(my_hidden_dim):
    """Exercise 05: the feed-forward width from dim, multiple_of and ffn_dim_multiplier (None: not scaled)."""
    shapes = {
        **{described(name): (model(name).params.dim, model(name).params.multiple_of,
                             model(name).params.ffn_dim_multiplier) for name in TWO_MODELS},
        "Meta-Llama-3-8B": (4096, 1024, 1.3),
        "Llama 3.2 1B": (2048, 256, 1.5),
        "Llama 3.2 3B": (3072, 256, 1.0),
        "Llama 2 7B, no ffn_dim_multiplier": (4096, 256, None),
        "Llama 2 13B, no ffn_dim_multiplier": (5120, 256, None),  # 13653 is nearer 13568 than 13824
    }
    cases = {f"{name} {shape}": lambda fn, shape=shape: fn(*shape) for name, shape in shapes.items()}
    report(my_hidden_dim, cases, hidden_dim_reference, HIDDEN_DIM_MISTAKES)


FEED_FORWARD_MISTAKES = {
    "w1 and w3 are swapped: SiLU goes on w1's output (the gate), not on w3's":
        lambda x, w1, w2, w3: (torch.nn.functional.silu(x @ w3.T) * (x @ w1.T)) @ w2.T,
    "the gate has no SiLU":
        lambda x, w1, w2, w3: ((x @ w1.T) * (x @ w3.T)) @ w2.T,
    "the gate uses sigmoid(z); SiLU is z * sigmoid(z)":
        lambda x, w1, w2, w3: (torch.sigmoid(x @ w1.T) * (x @ w3.T)) @ w2.T,
    "the gate uses ReLU; Llama's is SiLU":
        lambda x, w1, w2, w3: (torch.relu(x @ w1.T) * (x @ w3.T)) @ w2.T,
    "the gate uses GELU; Llama's is SiLU, z * sigmoid(z)":
        lambda x, w1, w2, w3: (torch.nn.functional.gelu(x @ w1.T) * (x @ w3.T)) @ w2.T,
    "SiLU is applied to the product (w1 x) * (w3 x); it goes on the gate alone, silu(w1 x) * (w3 x)":
        lambda x, w1, w2, w3: torch.nn.functional.silu((x @ w1.T) * (x @ w3.T)) @ w2.T,
}


def feed_forward(my_feed_forward):
    """Exercise 05: SwiGLU, w2(silu(w1 x) * w3 x), on layer 0's feed-forward input; the weights in float32."""
    def run(name):
        weights = [model(name).layer(0)[w].float() for w in ("w1", "w2", "w3")]
        return lambda fn: fn(layer_inputs(0, name)["ffn_input"].clone(), *(w.clone() for w in weights))

    cases = {f"{described(name)}, layer 0": run(name) for name in TWO_MODELS}
    report(my_feed_forward, cases, transformer.feed_forward, FEED_FORWARD_MISTAKES)
