"""Notebook 02's checks: the embeddings of the prompt's tokens, and RMSNorm."""

import torch

from .. import transformer
from .harness import TWO_MODELS, described, model, report, tokens
from .harness import embeddings as model_embeddings

EMBEDDINGS_MISTAKES = {
    "the rows are still bfloat16: convert them to float32": lambda table, tokens: table[tokens],
    "it takes the rows of the positions 0, 1, 2, ..., not of the token ids":
        lambda table, tokens: table[: len(tokens)].float(),
}


def embeddings(my_embeddings):
    """Exercise 02: the float32 embedding of each token id, read from the bfloat16 table by indexing."""
    cases = {described(name): lambda fn, name=name: fn(model(name).weights["tok_embeddings.weight"],
                                                       tokens(name).clone())
             for name in TWO_MODELS}
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
    "this is LayerNorm: it subtracts each row's mean first; RMSNorm divides x itself by its root mean square":
        lambda x, weight, eps: torch.nn.functional.layer_norm(x, x.shape[-1:], weight.float(), eps=eps),
    "x / x.norm(dim=-1) divides by the length, sqrt(sum(x**2)), which is sqrt(dim) times the RMS, and leaves "
    "out eps: divide by sqrt(mean(x**2) + eps)":
        lambda x, weight, eps: x / x.norm(dim=-1, keepdim=True) * weight,
}


def rms_norm(my_rms_norm):
    """Exercise 02: RMSNorm, x / sqrt(mean(x**2) + eps) * weight, for each row of x."""
    def run(name, eps=None):
        weight, eps = model(name).layer(0)["attention_norm"].float(), eps or model(name).params.norm_eps
        return lambda fn: fn(model_embeddings(name).clone(), weight.clone(), eps)

    eps = model("tiny").params.norm_eps
    cases = {f"the tiny model, eps = {eps:g}": run("tiny"), "the tiny model, eps = 0.001": run("tiny", 1e-3),
             described(TWO_MODELS[1]): run(TWO_MODELS[1])}
    report(my_rms_norm, cases, transformer.rms_norm, RMS_NORM_MISTAKES)
