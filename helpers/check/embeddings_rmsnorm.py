"""Notebook 02's checks: the embeddings of the prompt's tokens, and RMSNorm."""

from .. import transformer
from .harness import prompt_embeddings, prompt_tokens, report, tiny_model

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
