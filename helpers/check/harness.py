"""What every check runs on and how it judges: the verdict a check prints, and the models' tensors.

`report` runs the learner's function, helpers' reference and each known mistake on the same cases and prints
one line (see helpers/check/__init__.py); a known mistake that raises names the learner's error when it is alike.
The cases come from three models (`MODELS`): the embedded tiny Llama 3 on the classic prompt, and two small
random ones built here, seeded, whose dim, number of query heads, head_dim and n_rep differ from the tiny model's,
and whose sizes differ from each other within each model, so that a function which confuses two sizes (dim and
head_dim, n_heads and head_dim) gives another result. Each tensor is computed once per model.
"""

import copy
import functools
import inspect
import re
from pathlib import Path

import torch

from .. import transformer
from ..attention import attention
from ..compute import FLOAT32_TOLERANCE, assert_close, linear
from ..model import TINY_MODEL_DIR, Llama, load_model
from ..params import expected_shapes, params_from_dict
from ..rope import apply_rope, model_frequencies

PROMPT = "the answer to the ultimate question of life, the universe, and everything is "
# The random models, by name: their params.json, whether the output layer is the embedding table, how many random
# tokens they read, and how a check's message names them. The sizes all differ: head_dim 16 (not dim's square root),
# 6 heads, 2 KV heads (3 queries per KV head), dim 96, hidden 320, vocab 300, 7 tokens. The other has Llama 3.1's
# RoPE scaling, factor 32, a tied output, and reads 200 tokens: enough for the slowed long wavelengths to matter.
RANDOM_MODELS = {
    "dim 96": (dict(dim=96, n_layers=2, n_heads=6, n_kv_heads=2, vocab_size=300, multiple_of=32,
                    ffn_dim_multiplier=1.2, norm_eps=1e-6, rope_theta=100000.0), False, 7,
               "a random model of dim 96 (6 heads of 16, 2 KV heads)"),
    "scaled RoPE": (dict(dim=80, n_layers=2, n_heads=5, n_kv_heads=1, vocab_size=200, multiple_of=16,
                         norm_eps=1e-5, rope_theta=500000.0, use_scaled_rope=True, rope_scaling_factor=32.0),
                    True, 200, "a random 2-layer model with scaled RoPE (factor 32) and a tied output"),
}
MODELS = ("tiny", *RANDOM_MODELS)
# The models a check that takes one model's tensors runs on.
TWO_MODELS = ("tiny", "dim 96")
NAN_ANYWHERE = "a NaN comes from 0/0, inf - inf, 0 * inf or the square root of a negative number"
NAN_IN_SOFTMAX = "a row with every key masked gives NaN in softmax: e^-inf is 0 for each key, and 0/0 is NaN"
BFLOAT16_HINT = ("the model's tensors are stored in bfloat16 and the course computes in float32: convert what you "
                 "take from model.weights, such as the embedding rows, with .float(), as the course does "
                 "(helpers.linear converts the matrices itself)")


# ---- Running and comparing ------------------------------------------------------------------------------

def verdict(learner, cases, reference, mistakes, nan=NAN_ANYWHERE):
    """The line a check prints. `cases` maps a label to a runner, which calls a function on that case's inputs;
    `nan` says where a NaN in the learner's output comes from. A function that changes an argument in place is
    wrong even where its results are right (a class, such as a cache, is left to change itself)."""
    changed = []
    line = _verdict(learner if isinstance(learner, type) else watched(learner, changed), cases, reference, mistakes,
                    nan)
    if changed and line == "correct":
        return f"wrong: {changed[0]}"
    return f"{line}; also, {changed[0]}" if changed and line.startswith("wrong") else line


def watched(learner, changed):
    """`learner`, noting in `changed` how it changed a tensor or list given to it, if it did."""
    def call(*args):
        before = [copy.deepcopy(a) if isinstance(a, (torch.Tensor, list)) else None for a in args]
        result = learner(*args)
        for i, (arg, old) in enumerate(zip(args, before, strict=True)):
            if old is not None and not unchanged(arg, old) and not changed:
                kind = "list" if isinstance(arg, list) else "tensor"
                changed.append(f"your function changes its argument {argument_name(learner, i)} in place "
                               "(with +=, an operation ending in _, or an assignment into it), so the caller's "
                               f"{kind} changes too: leave it as it is, and compute into a new one")
        return result
    return call


def unchanged(arg, old):
    if isinstance(arg, list):
        return arg == old
    return (arg.shape == old.shape and arg.dtype == old.dtype
            and bool(((arg == old) | (arg.isnan() & old.isnan())).all()))


def argument_name(function, i):
    try:
        return f"`{list(inspect.signature(function).parameters)[i]}`"
    except (TypeError, ValueError, IndexError):
        return f"number {i + 1}"


def _verdict(learner, cases, reference, mistakes, nan):
    got = {}
    for label, run in cases.items():
        try:
            got[label] = run(learner)
        except NotImplementedError:
            return "not done yet"
        except Exception as error:
            message = str(error).strip().splitlines()
            likely = next((diagnosis for diagnosis, mistake in mistakes.items() if raises_alike(run, mistake, error)),
                          BFLOAT16_HINT if mixes_bfloat16(error) else None)
            return (f"your function raised {type(error).__name__} on the case {label!r}"
                    + (f": {message[0]}" if message else "") + (f"; likely, {likely}" if likely else ""))
        if holds_none(got[label]):
            return "not done yet"
    expected = {label: run(reference) for label, run in cases.items()}
    if same(got, expected):
        return "correct"
    for diagnosis, mistake in mistakes.items():
        try:
            if same(got, {label: run(mistake) for label, run in cases.items()}):
                return f"wrong: {diagnosis}"
        except Exception:  # noqa: BLE001, S112 (a mistake that raises: named above, if the learner's raises alike)
            continue
    try:
        return f"wrong: {difference(got, expected, nan)}"
    except Exception as error:  # an output too odd to describe
        return f"wrong: the output differs from helpers' and cannot be compared ({type(error).__name__}: {error})"


def raises_alike(run, mistake, error):
    """Whether `mistake` raises on the case `run` an error like `error`: type, words (einsum letters aside), sizes."""
    try:
        run(mistake)
    except Exception as other:  # noqa: BLE001 (any error a mistake raises is one a learner can meet)
        return all(f(other) == f(error) for f in (type, lambda e: re.sub(r"\d+|(?<=subscript )\w", "#", str(e)),
                                                  lambda e: sorted(re.findall(r"\d+", str(e)))))
    return False


def mixes_bfloat16(error):
    """Whether `error` is torch's complaint about a bfloat16 tensor meeting one of another dtype."""
    message = str(error).lower()
    return "bfloat16" in message and "type" in message  # "dtype", "scalar type", "input type"


def is_int(value):
    """A Python int, and not a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def holds_none(result):
    if isinstance(result, dict):
        return any(holds_none(r) for r in result.values())
    if isinstance(result, (list, tuple)):
        return any(holds_none(r) for r in result)
    return result is None


def same(got, expected):
    """True when `got` is `expected`: tensors of the same shape and dtype within assert_close, ints as ints (not
    14336.0, nor True for 1), the rest equal."""
    try:
        if is_int(expected) and not is_int(got):
            return False
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


def difference(got, expected, nan=NAN_ANYWHERE):
    """Where `got` first differs from `expected`, and how; `nan` explains a NaN."""
    if isinstance(expected, dict):
        key = next(key for key in expected if not same(got[key], expected[key]))
        return f"{key}: {difference(got[key], expected[key], nan)}"
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor, got {type(got).__name__}"
        if got.shape != expected.shape:
            return f"wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}"
        if got.dtype != expected.dtype:
            return f"wrong dtype: expected {expected.dtype}, got {got.dtype}"
        return how_far(got, expected, nan)
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return f"expected a {type(expected).__name__}, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"wrong length: expected {len(expected)} items, got {len(got)}"
        i = next(i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if not same(g, e))
        return f"at index {i}, {difference(got[i], expected[i], nan)}"
    if is_int(expected) and not is_int(got):
        return (f"expected the int {expected!r}, got {type(got).__name__} {got!r}"
                + (": make it an int, with // or int() (/ always gives a float)" if isinstance(got, float) else ""))
    return f"expected {expected!r}, got {got!r}"


def how_far(got, expected, nan=NAN_ANYWHERE):
    """Where the output holds a NaN that helpers' does not (and why), or else the largest difference relative
    to the largest expected magnitude, and the first index that is off."""
    new_nan = got.isnan() & ~expected.isnan()
    if new_nan.any():
        index = tuple(new_nan.nonzero()[0].tolist())
        return (f"your output holds NaN ({int(new_nan.sum())} of {got.numel()} numbers, the first at index {index}); "
                f"{nan}")
    finite = expected[torch.isfinite(expected)].abs()
    scale = finite.max().item() if finite.numel() else 1.0
    gap = (got.double() - expected.double()).abs()
    off = ~((gap <= FLOAT32_TOLERANCE * scale) | (got == expected))  # equal infinities are not off; NaN is
    index = tuple(off.nonzero()[0].tolist())
    return (f"off by up to {gap[off].max().item() / scale:.3g} times the largest expected value ({scale:.3g}); "
            f"first at index {index}: expected {expected[index].item():.4g}, got {got[index].item():.4g}")


def report(learner, cases, reference, mistakes, nan=NAN_ANYWHERE):
    print(verdict(learner, cases, reference, mistakes, nan))


# ---- The models and their tensors, computed once ---------------------------------------------------------

def described(name):
    """How a check's message names the model `name`."""
    return "the tiny model" if name == "tiny" else RANDOM_MODELS[name][3]


def random_model(name):
    """The random model `name` of RANDOM_MODELS: seeded normal weights in bfloat16, as in a checkpoint."""
    raw, tied, *_ = RANDOM_MODELS[name]
    params = params_from_dict(raw, source=f"the check's {name!r} model")
    generator = torch.Generator().manual_seed(sum(map(ord, name)))
    weights = {}
    for key, shape in expected_shapes(params, tied).items():
        if len(shape) == 1:  # a norm's weight: about 1
            w = 1 + 0.2 * torch.randn(shape, generator=generator)
        else:  # a matrix: rows of length about 1, so that a product keeps its input's scale
            w = torch.randn(shape, generator=generator) / shape[-1] ** 0.5
        weights[key] = w.to(torch.bfloat16)
    if tied:
        weights["output.weight"] = weights["tok_embeddings.weight"]
    return Llama(Path(name), params, weights, tokenizer=None)


@functools.cache
def model(name="tiny"):
    return load_model(TINY_MODEL_DIR, verbose=False) if name == "tiny" else random_model(name)


def tiny_model():
    return model("tiny")


@functools.cache
def tokens(name="tiny"):
    """The classic prompt's token ids for the tiny model; seeded random ids for a random one."""
    if name == "tiny":
        return torch.tensor(tiny_model().tokenizer.encode(PROMPT))
    generator = torch.Generator().manual_seed(len(name))
    return torch.randint(model(name).params.vocab_size, (RANDOM_MODELS[name][2],), generator=generator)


@functools.cache
def freqs(name="tiny"):
    return model_frequencies(model(name).params, torch.arange(len(tokens(name))))


@functools.cache
def embeddings(name="tiny"):
    return model(name).weights["tok_embeddings.weight"][tokens(name)].float()


@functools.cache
def normalised(name="tiny"):
    """The input of layer 0's attention: the embeddings after its attention_norm."""
    m = model(name)
    return transformer.rms_norm(embeddings(name), m.layer(0)["attention_norm"], m.params.norm_eps)


@functools.cache
def queries_keys_values(rope=True, name="tiny"):
    """Layer 0's q (seq, n_heads, head_dim), k and v (seq, n_kv_heads, head_dim); q and k after RoPE or before."""
    p, layer, xn = model(name).params, model(name).layer(0), normalised(name)
    q = linear(xn, layer["wq"]).view(len(xn), p.n_heads, p.head_dim)
    k = linear(xn, layer["wk"]).view(len(xn), p.n_kv_heads, p.head_dim)
    v = linear(xn, layer["wv"]).view(len(xn), p.n_kv_heads, p.head_dim)
    if rope:
        q, k = apply_rope(q, freqs(name)), apply_rope(k, freqs(name))
    return q, k, v


@functools.cache
def layer_inputs(i, name="tiny"):
    """Layer i's input (the stream after the layers before it), and its feed-forward's input."""
    m, p = model(name), model(name).params
    x = embeddings(name)
    for j in range(i):
        x = transformer.transformer_block(x, m.layer(j), p, freqs(name))
    layer = m.layer(i)
    xn = transformer.rms_norm(x, layer["attention_norm"], p.norm_eps)
    h = x + attention(xn, layer["wq"], layer["wk"], layer["wv"], layer["wo"], p.n_heads, p.n_kv_heads, freqs(name))
    return {"x": x, "ffn_input": transformer.rms_norm(h, layer["ffn_norm"], p.norm_eps)}
