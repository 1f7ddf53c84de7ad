"""What every check runs on and how it judges: the verdict a check prints, and the tiny model's tensors.

`report` runs the learner's function, helpers' reference and each known mistake on the same cases and
prints one line (see helpers/check/__init__.py). The tensors (the classic prompt's tokens, embeddings,
layer 0's queries, keys and values, each layer's input) are computed once, on the embedded tiny model.
"""

import functools

import torch

from .. import transformer
from ..attention import attention
from ..compute import FLOAT32_TOLERANCE, assert_close, linear
from ..model import TINY_MODEL_DIR, load_model
from ..rope import apply_rope, rope_frequencies

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
                    and all(same(g, e) for g, e in zip(got, expected, strict=True)))
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
        i = next(i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if not same(g, e))
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
