"""Reading a Llama 3 in Hugging Face's format: config.json, model*.safetensors (sharded with
model.safetensors.index.json), tokenizer.json.

config.json becomes `Params`; each tensor is memory-mapped from its shard (safetensors' safe_open, one
shard at a time) under Meta's name. Hugging Face stores the rows of q_proj and k_proj reordered for
"rotate half" RoPE (helpers/rope.py, `half_split_rows`): `HalfSplitWeights` gives each of these matrices
back in Meta's order each time it is asked for, as a new bf16 tensor of that one matrix, so that nothing
of the model is copied for longer than a layer's use (docs/models.md says why).
"""

import json
import re
import struct
from collections.abc import MutableMapping
from pathlib import Path

from .checkpoint import WEIGHT_DTYPES, check_link
from .errors import LlamaError
from .params import SHAPES, Params, expected_shapes, missing_layer
from .rope import RopeScaling, interleaved_rows

CONFIG, INDEX, SINGLE = "config.json", "model.safetensors.index.json", "model.safetensors"
# Hugging Face's names of a layer's tensors, and Meta's (helpers.params.LAYER_KEYS).
LAYER_NAMES = {
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
OTHER_NAMES = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
               "lm_head.weight": "output.weight"}
# The RoPE scalings the course implements, by config.json's rope_type.
ROPE_TYPES = {"default": "none: Llama 3", "llama3": "Llama 3.1's, with factor, low_freq_factor, high_freq_factor "
                                                     "and original_max_position_embeddings"}
REFUSED = {"mistral": "Mistral's sliding-window attention", "qwen2": "Qwen2's biases on q, k and v",
           "gemma": "Gemma's own normalisation and activation", "phi3": "Phi-3's joined matrices"}
_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")


def meta_name(name):
    """Meta's name of the Hugging Face tensor `name`, None for a name a Llama does not have."""
    if name in OTHER_NAMES:
        return OTHER_NAMES[name]
    found = _LAYER.fullmatch(name)
    return f"layers.{found[1]}.{LAYER_NAMES[found[2]]}" if found and found[2] in LAYER_NAMES else None


def hf_name(name):
    """The Hugging Face name of Meta's tensor `name` (the inverse of `meta_name`)."""
    return {meta: hf for hf, meta in OTHER_NAMES.items()}.get(name) or re.sub(
        r"layers\.(\d+)\.(.+)", lambda m: f"model.layers.{m[1]}." + {v: k for k, v in LAYER_NAMES.items()}[m[2]], name)


def is_hf_model_dir(path):
    path = Path(path)
    # A link to nothing (a stopped download in Hugging Face's cache) counts: loading it says what is wrong.
    return (path / CONFIG).is_file() and any((path / name).is_file() or (path / name).is_symlink()
                                             for name in (INDEX, SINGLE))


# ---- config.json -----------------------------------------------------------------------------------------

def _get(raw, key, kinds, source, default=...):
    """config.json's `key`, checked to be of `kinds` (and positive when a number)."""
    if raw.get(key) is None:
        if default is ...:
            raise LlamaError(f"{source} has no {key!r}. A Llama config.json has hidden_size, num_hidden_layers, "
                             "num_attention_heads, intermediate_size, vocab_size; is this the right file?")
        return default
    value = raw[key]
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        raise LlamaError(f"{source}: {key!r} should be {' or '.join(k.__name__ for k in kinds)}, but it is {value!r}.")
    if isinstance(value, int | float) and not isinstance(value, bool) and not 0 < value < float("inf"):
        raise LlamaError(f"{source}: {key!r} must be a finite number above 0, but it is {value}.")
    return value


def _rope(raw, source):
    """(rope_theta, RopeScaling or None) from rope_scaling and rope_theta, or transformers 5's rope_parameters."""
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    field = "rope_parameters" if raw.get("rope_parameters") else "rope_scaling"
    if not isinstance(rope, dict):
        raise LlamaError(f"{source}: {field!r} should be an object, but it is {rope!r}.")
    theta = _get(raw if "rope_theta" in raw else rope, "rope_theta", (int, float), source, 10000.0)
    kind = rope.get("rope_type", rope.get("type", "default" if not rope or field == "rope_parameters" else None))
    if kind not in ROPE_TYPES:
        known = "; ".join(f"{k!r} ({why})" for k, why in ROPE_TYPES.items())
        raise LlamaError(f"{source}: {field}.rope_type is {kind!r}, a RoPE scaling the course does not implement. "
                         f"It implements {known}. This model is not a Llama 3.")
    if kind == "default":
        return float(theta), None
    values = [_get(rope, key, (int, float), f"{source} ({field})") for key in
              ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")]
    return float(theta), RopeScaling(*map(float, values[:3]), int(values[3]))


def ffn_rule(dim, hidden):
    """Meta's (multiple_of, ffn_dim_multiplier) that give the feed-forward width `hidden` for `dim`: the real
    models' where one fits, else the nearest multiplier (with multiple_of the largest power of 2 dividing it)."""
    base = int(2 * (4 * dim) / 3)
    candidates = [(s.params["multiple_of"], s.params.get("ffn_dim_multiplier")) for s in SHAPES.values()]
    multiple_of = min(hidden & -hidden, 1024)
    candidates += [(multiple_of, round(hidden / base, 2)), (1, (hidden + 0.5) / base)]
    for multiple_of, multiplier in candidates:
        params = Params(dim, 1, 1, 1, 1, multiple_of, 1.0, 1.0, ffn_dim_multiplier=multiplier)
        if params.hidden_dim == hidden:
            return multiple_of, multiplier
    return 1, (hidden + 0.5) / base


def hf_params(model_dir):
    """`Params` from a Hugging Face Llama's config.json; a LlamaError naming the field for anything else."""
    path = Path(model_dir) / CONFIG
    source = str(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))  # an editor may add a BOM
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LlamaError(f"{path} is not valid JSON ({error}). Download it again.") from None
    if not isinstance(raw, dict):
        raise LlamaError(f"{path} must hold a JSON object, not {type(raw).__name__}.")
    kind = raw.get("model_type")
    if kind != "llama":
        what = REFUSED.get(kind, "another architecture")
        raise LlamaError(f"{source}: model_type is {kind!r}, not 'llama': {what}, which the course does not build. "
                         "It loads Llama 3 models (Llama 3, 3.1, 3.2 and their fine-tunes) only.")
    for key, why in [("attention_bias", "biases on q, k, v and o"), ("mlp_bias", "biases in the feed-forward")]:
        if raw.get(key):
            raise LlamaError(f"{source}: {key} is true ({why}), which a Llama 3 does not have and the course does "
                             "not compute. Use a Llama 3 model.")
    if raw.get("hidden_act", "silu") != "silu":
        raise LlamaError(f"{source}: hidden_act is {raw['hidden_act']!r}; a Llama 3's feed-forward uses 'silu'.")
    dim, heads = _get(raw, "hidden_size", (int,), source), _get(raw, "num_attention_heads", (int,), source)
    kv_heads = _get(raw, "num_key_value_heads", (int,), source, heads)
    if dim % heads or (dim // heads) % 2 or heads % kv_heads:
        raise LlamaError(f"{source}: hidden_size ({dim}) must split into num_attention_heads ({heads}) heads of an "
                         f"even size, and those into num_key_value_heads ({kv_heads}) groups.")
    if _get(raw, "head_dim", (int,), source, dim // heads) != dim // heads:
        raise LlamaError(f"{source}: head_dim is {raw['head_dim']}, not hidden_size / num_attention_heads "
                         f"({dim // heads}), which the course assumes, as every Llama 3 has.")
    hidden = _get(raw, "intermediate_size", (int,), source)
    theta, scaling = _rope(raw, source)
    multiple_of, multiplier = ffn_rule(dim, hidden)
    context = 131072 if scaling else 8192
    return Params(dim=dim, n_layers=_get(raw, "num_hidden_layers", (int,), source), n_heads=heads,
                  n_kv_heads=kv_heads, vocab_size=_get(raw, "vocab_size", (int,), source), multiple_of=multiple_of,
                  norm_eps=float(_get(raw, "rms_norm_eps", (int, float), source)), rope_theta=theta,
                  ffn_dim_multiplier=multiplier, max_seq_len=_get(raw, "max_position_embeddings", (int,), source,
                                                                  context),
                  rope_scaling=scaling, rope_scaling_source="config.json's rope_scaling" if scaling else "",
                  ffn_hidden_dim=hidden)


def is_tied(model_dir):
    """config.json's tie_word_embeddings (Llama 3.2 1B and 3B: no lm_head.weight)."""
    path = Path(model_dir) / CONFIG
    return _get(json.loads(path.read_text(encoding="utf-8-sig")), "tie_word_embeddings", (bool,), str(path), False)


# ---- the safetensors shards ------------------------------------------------------------------------------

def shard_files(model_dir):
    """The shards, in the index's order (or model.safetensors alone), each checked to exist and be whole."""
    model_dir = Path(model_dir)
    index = model_dir / INDEX
    check_link(index)
    if not index.is_file():
        check_link(model_dir / SINGLE)
        return [model_dir / SINGLE]
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8-sig"))["weight_map"]
        names = list(dict.fromkeys(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise LlamaError(f"{index} is not a safetensors index (JSON with a weight_map): download it again.") from None
    for name in names:
        check_link(model_dir / name)
    missing = [name for name in names if not (model_dir / name).is_file()]
    if missing:
        raise LlamaError(f"{index}: its weight_map names {missing[0]!r}, which is not in {model_dir} "
                         f"({len(missing)} of {len(names)} shards missing). Download the missing shards.")
    return [model_dir / name for name in names]


def safetensors_extent(path):
    """(file size, its first 8 bytes, the header's length or None if that is no safetensors header, the end of
    the tensor bytes the header describes or None if it is not JSON)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        (length,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
        if length is None or length > min(size - 8, 100 << 20):
            return size, head, None, None
        try:
            header = json.loads(f.read(length))
            end = max((e["data_offsets"][1] for name, e in header.items() if name != "__metadata__"), default=0)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, IndexError, AttributeError):
            end = None
    return size, head, length, end


def check_whole(path):
    """A LlamaError if `path` is not a safetensors file, or is shorter than its header says (truncated)."""
    size, head, length, end = safetensors_extent(path)
    if length is None:
        raise LlamaError(f"{path} is not a safetensors file ({size:,} bytes; it starts with {head!r}): an "
                         "interrupted download, or an HTML page saved under its name. Download it again.")
    if end is None:
        raise LlamaError(f"{path}: its safetensors header is not valid JSON. Download it again.")
    if 8 + length + end > size:
        raise LlamaError(f"{path} is truncated: its header describes {8 + length + end:,} bytes, the file holds "
                         f"{size:,}. The download was interrupted: delete it and download it again.")


def load_hf_weights(model_dir, params, tied=None):
    """Memory-map every shard and check each tensor against `params`; a `HalfSplitWeights` under Meta's names."""
    from safetensors import SafetensorError, safe_open

    tied = is_tied(model_dir) if tied is None else tied
    tensors, where, n_layers = {}, {}, params.n_layers

    def explained(meta):  # by config.json: a Llama's tensor, of a layer it counts, output.weight unless tied
        layer = re.match(r"layers\.(\d+)\.", meta or "")
        return meta not in (None, "output.weight" if tied else None) and not (layer and int(layer[1]) >= n_layers)
    for path in shard_files(model_dir):
        check_whole(path)
        try:
            with safe_open(path, framework="pt") as f:
                for name in f.keys():
                    meta = meta_name(name)
                    if not explained(meta):
                        why = ("config.json says tie_word_embeddings" if meta == "output.weight" else
                               f"config.json says num_hidden_layers={params.n_layers}" if meta else
                               "a Llama 3 has no such tensor")
                        raise LlamaError(f"{path} holds {name!r}, which config.json does not explain ({why}). "
                                         "config.json and the shards come from different models.")
                    tensors[meta], where[meta] = f.get_tensor(name), path
        except SafetensorError as error:
            raise LlamaError(f"{path} cannot be read as safetensors ({error}). Download it again.") from None
    layer = missing_layer(tensors, params.n_layers)  # before listing n_layers layers' names: there may be 10**9
    expected = expected_shapes(params, tied) if layer is None else {f"layers.{layer}.attention.wq.weight": None}
    for meta, shape in expected.items():
        if meta not in tensors:
            named = Path(model_dir) / (INDEX if (Path(model_dir) / INDEX).is_file() else SINGLE)
            raise LlamaError(f"{named}: no shard holds {hf_name(meta)!r}, though config.json says num_hidden_layers="
                             f"{params.n_layers}{'' if tied else ' and tie_word_embeddings false'}. A shard is "
                             "missing, or config.json comes from another model.")
        tensor, path = tensors[meta], where[meta]
        if tensor.dtype not in WEIGHT_DTYPES:
            raise LlamaError(f"{path}: {hf_name(meta)!r} is stored as {tensor.dtype}; the course reads bf16, fp16 "
                             "or fp32 weights. A quantised model (int8, 4-bit) is not a Llama 3 checkpoint it reads.")
        if tuple(tensor.shape) != shape:
            raise LlamaError(f"{path}: {hf_name(meta)!r} has shape {tuple(tensor.shape)}, but config.json implies "
                             f"{shape}. config.json and the shards come from different models.")
    if tied:  # the embedding table is the output layer: the same tensor, never a copy
        tensors["output.weight"] = tensors["tok_embeddings.weight"]
    heads = {f"layers.{i}.attention.{w}.weight": n for i in range(params.n_layers)
             for w, n in (("wq", params.n_heads), ("wk", params.n_kv_heads))}
    return HalfSplitWeights({name: tensors[name] for name in expected_shapes(params)}, heads)


class HalfSplitWeights(MutableMapping):
    """Meta-named weights whose wq and wk are stored in Hugging Face's row order (`stored`).

    Reading one of those (`weights[name]`) gives it in Meta's order: `interleaved_rows` of the stored matrix,
    a new tensor each time, freed when its user lets go of it. The 8B's 32 wq and wk are 1.34 GB in bf16:
    undone once and kept, they would hold that much memory more than Meta's format, for the whole session.
    A tensor assigned (`weights[name] = w`, as quantize_model does) is taken to be in Meta's order.
    """

    def __init__(self, stored, half_split_heads):
        self.stored = stored
        self.half_split_heads = dict(half_split_heads)  # name -> its number of heads

    def __getitem__(self, name):
        tensor = self.stored[name]
        heads = self.half_split_heads.get(name)
        return tensor if heads is None else interleaved_rows(tensor, heads)

    def __setitem__(self, name, tensor):
        self.stored[name] = tensor
        self.half_split_heads.pop(name, None)

    def __delitem__(self, name):
        del self.stored[name]
        self.half_split_heads.pop(name, None)

    def __iter__(self):
        return iter(self.stored)

    def __len__(self):
        return len(self.stored)
