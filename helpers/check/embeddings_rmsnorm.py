"""Notebook 02's checks: the embeddings of the prompt's tokens, and RMSNorm.

The embeddings check also watches what the learner's function does with the whole table (a TorchFunctionMode
sees every torch call it makes): right values got by converting, copying or multiplying the whole table are
wrong too, since on the 8B that costs gigabytes where indexing reads a few rows.
"""

import torch
from torch.overrides import TorchFunctionMode

from .. import transformer
from ..params import LLAMA3_8B_PARAMS
from .harness import TWO_MODELS, described, model, report, tokens, verdict
from .harness import embeddings as model_embeddings

FLOAT32_TABLE_8B = f"{LLAMA3_8B_PARAMS['vocab_size'] * LLAMA3_8B_PARAMS['dim'] * 4 / 1e9:.1f} GB"
CONVERTS_TABLE = ("it makes a float32 copy of the whole table (table.float(), or an nn.Embedding filled from it) and "
                  f"then picks rows: index the rows first, then convert only them (on the 8B that copy takes "
                  f"{FLOAT32_TABLE_8B})")
COPIES_TABLE = ("it copies the whole table (a clone, or an nn.Embedding filled from it) and then picks rows: index "
                "the table itself, then convert the rows")
MULTIPLIES_TABLE = ("it multiplies by the whole table (a one-hot product reads every row, and multiplies almost all "
                    "of them by zero): index the rows instead, table[tokens]")
WHOLE_TABLE = (CONVERTS_TABLE, COPIES_TABLE, MULTIPLIES_TABLE)
PRODUCTS = {"matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "mv", "einsum", "linear", "tensordot", "inner",
            "addmm", "mul", "__mul__", "__rmul__"}


def _filled_embedding_layer(table, tokens, dtype=torch.float32):
    layer = torch.nn.Embedding(*table.shape, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(table)
        return layer(tokens).float()


EMBEDDINGS_MISTAKES = {
    "the rows are still bfloat16: convert them to float32": lambda table, tokens: table[tokens],
    "it takes the rows of the positions 0, 1, 2, ..., not of the token ids":
        lambda table, tokens: table[: len(tokens)].float(),
    CONVERTS_TABLE: lambda table, tokens: table.float()[tokens],
    COPIES_TABLE: lambda table, tokens: _filled_embedding_layer(table, tokens, table.dtype),
    MULTIPLIES_TABLE: lambda table, tokens: (torch.nn.functional.one_hot(tokens, len(table)).to(table.dtype)
                                             @ table).float(),
}


def _tensors(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return _tensors(list(value.values())) if isinstance(value, dict) else []


class WholeTableWatch(TorchFunctionMode):
    """Notes in `seen` each torch call that multiplies by `table`, or makes a new tensor as large as it from it."""

    def __init__(self, table, seen):
        super().__init__()
        self.table, self.seen = table, seen

    def holds_table(self, tensor):
        try:
            return tensor.untyped_storage().data_ptr() == self.table.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):  # a tensor with no storage of its own
            return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(self.holds_table(t) for t in _tensors((args, kwargs))):
            new = [t for t in _tensors(out) if not self.holds_table(t) and t.numel() >= self.table.numel()]
            if getattr(func, "__name__", "") in PRODUCTS:
                self.seen.append(MULTIPLIES_TABLE)
            elif new:
                self.seen.append(COPIES_TABLE if new[0].dtype == self.table.dtype else CONVERTS_TABLE)
        return out


def embeddings(my_embeddings):
    """Exercise 02: the float32 embedding of each token id, read from the bfloat16 table by indexing."""
    seen = []

    def watched(table, tokens):
        with WholeTableWatch(table, seen):
            return my_embeddings(table, tokens)

    cases = {described(name): lambda fn, name=name: fn(model(name).weights["tok_embeddings.weight"],
                                                       tokens(name).clone())
             for name in TWO_MODELS}
    # The whole-table mistakes give the right values: the watch finds them, and their outputs need no running.
    mistakes = {d: m for d, m in EMBEDDINGS_MISTAKES.items() if d not in WHOLE_TABLE}
    result = verdict(watched, cases, lambda table, tokens: table[tokens].float(), mistakes)
    print(f"wrong: {seen[0]}" if result == "correct" and seen else result)


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
    "the mean (or norm) of each row lost its dimension, so x (seq, dim) meets a (seq,) vector, which lines up "
    "with x's columns, not its rows: keep the dimension, with keepdim=True":  # raises where seq != dim
        lambda x, weight, eps: x / (x.pow(2).mean(-1) + eps).sqrt() * weight,
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
