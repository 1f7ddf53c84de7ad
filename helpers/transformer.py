"""RMSNorm, the SwiGLU feed-forward, one transformer block and the whole forward pass.

Notebooks 02, 05 and 06 build each of these by hand and check them against
the versions here.
"""

import math
from pathlib import Path

import torch

from .attention import attention
from .compute import linear, linear_each
from .errors import LlamaError
from .rope import model_frequencies


def rms_norm(x, weight, eps):
    """Scale each row of `x` to a root-mean-square of 1, then multiply by the learned `weight`."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.to(x.dtype)


def feed_forward(x, w1, w2, w3):
    """SwiGLU: w2(silu(w1 x) * w3 x). w1 is the gate, w3 the up projection, w2 the down projection."""
    gate, up = linear_each(x, w1, w3)  # two products, or one where int8 weights are joined (notebook 08)
    return linear(torch.nn.functional.silu(gate) * up, w2)


def transformer_block(x, layer, params, freqs, cache=None):
    """One layer: attention then feed-forward, each on the normalised stream and added back to it."""
    h = x + attention(
        rms_norm(x, layer["attention_norm"], params.norm_eps),
        layer["wq"], layer["wk"], layer["wv"], layer["wo"],
        params.n_heads, params.n_kv_heads, freqs, cache,
    )
    return h + feed_forward(rms_norm(h, layer["ffn_norm"], params.norm_eps), layer["w1"], layer["w2"], layer["w3"])


def check_tokens(model, tokens, start=0):
    """Token ids as a 1-D tensor; a clear error if they are not whole numbers, empty, unknown or too many."""
    if isinstance(tokens, (str, bytes)):
        raise LlamaError("The model reads token ids, not text: encode the text first, with "
                         "model.tokenizer.encode_prompt(text) (it puts <|begin_of_text|> first).")
    try:
        found = torch.as_tensor(tokens)
    except (TypeError, ValueError, RuntimeError):
        raise LlamaError(f"Token ids are a list of whole numbers (or a 1-D tensor), not {tokens!r:.80}.") from None
    if found.numel() == 0:
        raise LlamaError("The prompt is empty: there is nothing to predict from. Type some text.")
    if found.dtype == torch.bool or found.is_floating_point() or found.is_complex():
        # torch would cut 1.7 to 1 and read True as 1: silently another prompt.
        shown = [round(value, 4) if isinstance(value, float) else value for value in found.flatten()[:4].tolist()]
        raise LlamaError(f"Token ids are whole numbers, but these are {found.dtype} ({shown}"
                         f"{', ...' if found.numel() > 4 else ''}). Give the ids the tokenizer returned.")
    if found.dim() > 1 and sum(size > 1 for size in found.shape) > 1:
        raise LlamaError(f"The model reads one sequence of token ids at a time, but these have shape "
                         f"{tuple(found.shape)}. Give one list of ids (a batch of one, shape (1, n), is accepted).")
    tokens = found.to(torch.long).flatten()
    p = model.params
    if tokens.min() < 0 or tokens.max() >= p.vocab_size:
        bad = tokens[(tokens < 0) | (tokens >= p.vocab_size)][0].item()
        raise LlamaError(f"Token id {bad} is outside the vocabulary (0 to {p.vocab_size - 1}).")
    if start + len(tokens) > p.max_seq_len:
        raise LlamaError(
            f"{start + len(tokens)} tokens do not fit in the model's context of {p.max_seq_len} tokens"
            + (f" ({start} already in the cache, {len(tokens)} new)" if start else "")
            + ". Shorten the prompt or ask for fewer new tokens."
        )
    return tokens


def check_finite(x, where, source="consolidated.00.pth"):
    """`x`, or a clear error if it holds a NaN or an infinity: then the weights behind `where`, read from
    `source`, are damaged.

    A NaN or an infinity anywhere in `x` makes its sum one too (and so do finite values
    large enough to overflow it, which no sound checkpoint produces). A sum is one quick
    pass: torch.isfinite(x).all() took 40 times as long on a prompt's logits, here.
    """
    if not math.isfinite(x.sum().item()):
        raise LlamaError(
            f"The checkpoint is damaged (non-finite values): the output of {where} holds NaN or infinity, "
            f"so those weights hold NaN, infinity or values far too large. {redo(source)}"
        )
    return x


def redo(source):
    """What to do about damaged weights read from `source` (a file name, or a model's folder or int8 file)."""
    source = Path(source)
    if source.suffix == ".safetensors" and source.is_file():
        return f"Quantise a sound model and write {source.name} again with helpers.save_int8."
    if source.is_dir() and not any(source.glob("consolidated.*.pth")):
        return "Download the model's .safetensors files again."
    return "Download consolidated.00.pth again."


def forward(model, tokens, cache=None, last_only=False):
    """Logits (seq, vocab_size), in float32, for every position of `tokens`.

    With a `cache`, `tokens` continue the sequence already stored in it.
    With `last_only`, the logits of the last position alone, (1, vocab_size): all that choosing the
    next token needs. The output layer, the largest matrix, then multiplies one row, not every position's.
    A NaN or infinity in the embedding, a layer's output or the logits is a LlamaError
    naming where it first appeared.
    """
    p = model.params
    start = 0 if cache is None else cache.length
    if cache is not None and len(cache.layers) != p.n_layers:
        n = len(cache.layers)
        raise LlamaError(f"The cache holds {n} layer{'s' if n != 1 else ''}, the model {p.n_layers}: it was made for "
                         "another model. Make it with this model's params: KVCache(model.params, capacity).")
    tokens = check_tokens(model, tokens, start)
    # Index the embedding table: only these rows are read from the file.
    x = model.weights["tok_embeddings.weight"][tokens].float()
    x = check_finite(x, "the embedding (tok_embeddings.weight)", model.path)
    freqs = model_frequencies(p, torch.arange(start, start + len(tokens)))
    for i in range(p.n_layers):
        x = transformer_block(x, model.layer(i), p, freqs, None if cache is None else cache.layers[i])
        x = check_finite(x, f"layer {i} (the layers.{i}.* tensors)", model.path)
    if last_only:
        x = x[-1:]
    x = rms_norm(x, model.weights["norm.weight"], p.norm_eps)
    logits = linear(x, model.weights["output.weight"])
    return check_finite(logits, "the output layer (norm.weight and output.weight)", model.path)


@torch.inference_mode()
def next_token_probs(model, tokens):
    """The probability of every vocabulary entry coming next after `tokens`."""
    last = forward(model, tokens, last_only=True)[-1]
    return torch.softmax(last, dim=-1)
