"""What a Llama 3 is, as data: params.json and the sizes it implies, the real models' shapes, tensor names.

To add a Llama 3.x model: add its `Shape` to SHAPES. Its params.json, tied output, RoPE scaling and
Hugging Face repositories then reach the downloader (`MODELS`), the RoPE factor chosen for its width,
the synthetic checkpoints (scripts/write_synthetic_checkpoint.py), the benchmarks and the tests.
"""

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import LlamaError
from .rope import RopeScaling, rope_scaling_for

# The context: 8,192 tokens for Llama 3, 131,072 for Llama 3.1 and later (the ones with
# use_scaled_rope). Meta's params.json does not say so, so a `max_seq_len` key is optional.
DEFAULT_MAX_SEQ_LEN = 8192
SCALED_ROPE_MAX_SEQ_LEN = 131072


@dataclass(frozen=True)
class Shape:
    """A Llama 3 model: its name, Meta's params.json key for key, whether its output layer is the embedding
    table (`tied`: no output.weight), what `use_scaled_rope` means for it (Hugging Face's config.json
    rope_scaling), its Hugging Face repositories whose original/ folder holds one consolidated.00.pth,
    and its name in Meta's llama-models package (`llama_models.sku_list`)."""

    name: str
    params: dict
    tied: bool = False
    rope_scaling: RopeScaling | None = None
    repos: tuple = ()
    sku: str = ""


SHAPES = {
    "3-8b": Shape("Meta-Llama-3-8B", {
        "dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256, "multiple_of": 1024,
        "ffn_dim_multiplier": 1.3, "norm_eps": 1e-05, "rope_theta": 500000.0,
    }, repos=("meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B-Instruct"), sku="Llama-3-8B"),
    "3.1-8b": Shape("Llama 3.1 8B", {
        "dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256, "ffn_dim_multiplier": 1.3,
        "multiple_of": 1024, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": True,
    }, rope_scaling=RopeScaling(8.0), repos=("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"),
        sku="Llama3.1-8B"),
    "3.2-1b": Shape("Llama 3.2 1B", {
        "dim": 2048, "n_layers": 16, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256, "ffn_dim_multiplier": 1.5,
        "multiple_of": 256, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": True,
    }, tied=True, rope_scaling=RopeScaling(32.0), repos=("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B-Instruct"),
        sku="Llama3.2-1B"),
    "3.2-3b": Shape("Llama 3.2 3B", {
        "dim": 3072, "n_layers": 28, "n_heads": 24, "n_kv_heads": 8, "vocab_size": 128256, "ffn_dim_multiplier": 1.0,
        "multiple_of": 256, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": True,
    }, tied=True, rope_scaling=RopeScaling(32.0), repos=("meta-llama/Llama-3.2-3B", "meta-llama/Llama-3.2-3B-Instruct"),
        sku="Llama3.2-3B"),
}
DEFAULT_SHAPE = "3-8b"
# Meta-Llama-3-8B's params.json: the sizes the diagrams show beside the model's own.
LLAMA3_8B_PARAMS = SHAPES[DEFAULT_SHAPE].params

# The RoPE scaling `use_scaled_rope: true` means, by the model's width: the shapes above, and the models
# too large for this course (their checkpoints come in several files).
ROPE_SCALING_BY_DIM = {
    **{s.params["dim"]: (s.name, s.rope_scaling) for s in SHAPES.values() if s.rope_scaling},
    8192: ("Llama 3.1 70B and 3.3 70B", RopeScaling(8.0)),
    16384: ("Llama 3.1 405B", RopeScaling(8.0)),
}

# A layer's tensors: the short names `Llama.layer` gives them, and their names in the checkpoint.
LAYER_KEYS = {
    "attention_norm": "attention_norm.weight",
    "wq": "attention.wq.weight",
    "wk": "attention.wk.weight",
    "wv": "attention.wv.weight",
    "wo": "attention.wo.weight",
    "ffn_norm": "ffn_norm.weight",
    "w1": "feed_forward.w1.weight",
    "w2": "feed_forward.w2.weight",
    "w3": "feed_forward.w3.weight",
}
# The matrices of a layer, which `helpers.linear` multiplies by (with the output layer, "output.weight").
LAYER_MATRICES = tuple(LAYER_KEYS[short] for short in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"))
# The matrices a layer multiplies the same row by, which `helpers.quantize_model` joins, under the name
# `helpers.save_int8` stores each joined matrix by.
JOINED = {"attention.wqkv.weight": ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight"),
          "feed_forward.w13.weight": ("feed_forward.w1.weight", "feed_forward.w3.weight")}


def is_matrix(name):
    """The tensors `helpers.linear` multiplies by: every layer's 7 matrices and the output layer."""
    return name == "output.weight" or name.endswith(LAYER_MATRICES)


_NUMBER = (int, float)
_REQUIRED = {
    "dim": int,
    "n_layers": int,
    "n_heads": int,
    "n_kv_heads": int,
    "vocab_size": int,
    "multiple_of": int,
    "norm_eps": _NUMBER,
    "rope_theta": _NUMBER,
}
# rope_scaling_factor and rope_high_freq_factor: as in Meta's Llama 4 params.json.
# ffn_hidden_dim: not in Meta's params.json; the feed-forward width a Hugging Face config.json gives.
_OPTIONAL = {"ffn_dim_multiplier": _NUMBER, "max_seq_len": int, "use_scaled_rope": bool,
             "rope_scaling_factor": _NUMBER, "rope_high_freq_factor": _NUMBER, "ffn_hidden_dim": int}
_POSITIVE_NUMBERS = ("norm_eps", "rope_theta", "rope_scaling_factor", "rope_high_freq_factor")


@dataclass(frozen=True)
class Params:
    """The hyperparameters in params.json, and the sizes that follow from them."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    multiple_of: int
    norm_eps: float
    rope_theta: float
    ffn_dim_multiplier: float | None = None
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    # How RoPE is scaled (Llama 3.1 and later), None for not at all; and where that came from.
    rope_scaling: RopeScaling | None = None
    rope_scaling_source: str = ""
    # The feed-forward width as a Hugging Face config.json gives it (intermediate_size); None: Meta's rule.
    ffn_hidden_dim: int | None = None

    @property
    def rope_scaling_factor(self):
        """RoPE's scale factor, None for none."""
        return None if self.rope_scaling is None else self.rope_scaling.factor

    @property
    def head_dim(self):
        return self.dim // self.n_heads

    @property
    def n_rep(self):
        """How many query heads share one key/value head (grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    @property
    def hidden_dim(self):
        """The feed-forward width: 2/3 of 4*dim, scaled, rounded up to a multiple of `multiple_of`
        (or config.json's intermediate_size, `ffn_hidden_dim`, where the model came with one)."""
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return -(-hidden // self.multiple_of) * self.multiple_of


def params_from_dict(raw, source="params.json"):
    """Validate a params.json dictionary and return `Params`."""
    if not isinstance(raw, dict):
        raise LlamaError(f"{source} must hold a JSON object, not {type(raw).__name__}.")
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in raw:
            if key in _REQUIRED:
                raise LlamaError(
                    f"{source} has no {key!r} key. A Llama 3 params.json has "
                    f"{', '.join(_REQUIRED)} and ffn_dim_multiplier; is this the right file?"
                )
            continue
        value = raw[key]
        if key in ("ffn_dim_multiplier", "rope_scaling_factor", "rope_high_freq_factor") and value is None:
            continue
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a JSON true is never a valid size.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join(k.__name__ for k in kinds)
            raise LlamaError(
                f"{source}: {key!r} should be {expected}, but it is {value!r} ({type(value).__name__})."
            )
    values = {key: raw[key] for key in (*_REQUIRED, *_OPTIONAL) if raw.get(key) is not None}
    for key in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "max_seq_len",
                "ffn_hidden_dim"):
        if key in values and values[key] <= 0:
            raise LlamaError(f"{source}: {key!r} must be positive, but it is {values[key]}.")
    # Python's json reads NaN and Infinity: any of these being either would turn the output into NaN.
    for key in _POSITIVE_NUMBERS:
        if key in values and not (math.isfinite(values[key]) and values[key] > 0):
            raise LlamaError(f"{source}: {key!r} must be a finite number above 0, but it is {values[key]}.")
    multiplier = values.get("ffn_dim_multiplier")
    if multiplier is not None and not (math.isfinite(multiplier) and multiplier > 0):
        raise LlamaError(f"{source}: 'ffn_dim_multiplier' must be a finite number above 0 (or absent), but it is "
                         f"{multiplier}.")
    factor, high = values.pop("rope_scaling_factor", None), values.pop("rope_high_freq_factor", None)
    if values.pop("use_scaled_rope", False):
        values.setdefault("max_seq_len", SCALED_ROPE_MAX_SEQ_LEN)
        scaling, why = rope_scaling_for(values["dim"], ROPE_SCALING_BY_DIM)
        if factor is not None:
            scaling, why = RopeScaling(float(factor)), "from params.json"
        if high is not None:
            scaling = RopeScaling(scaling.factor, high_freq_factor=float(high))
        values["rope_scaling"], values["rope_scaling_source"] = scaling, why
    elif factor is not None or high is not None:
        key = "rope_scaling_factor" if factor is not None else "rope_high_freq_factor"
        raise LlamaError(f"{source} gives a {key} but not use_scaled_rope: true. Add "
                         f"\"use_scaled_rope\": true to scale RoPE, or remove {key}.")
    if values["dim"] % values["n_heads"] or (values["dim"] // values["n_heads"]) % 2:
        raise LlamaError(
            f"{source}: dim ({values['dim']}) must split into n_heads ({values['n_heads']}) heads "
            "of an even size, for RoPE's pairs."
        )
    if values["n_heads"] % values["n_kv_heads"]:
        raise LlamaError(
            f"{source}: n_heads ({values['n_heads']}) must be a multiple of n_kv_heads "
            f"({values['n_kv_heads']}), so that each key/value head serves the same number of query heads."
        )
    return Params(**{k: float(v) if k in _POSITIVE_NUMBERS else v for k, v in values.items()})


def params_to_dict(params):
    """`params` as a params.json dictionary, which `params_from_dict` reads back to equal Params
    (a RoPE scaling's low_freq_factor and original context are Llama 3.1's)."""
    raw = {name: getattr(params, name) for name in Params.__dataclass_fields__
           if name not in ("rope_scaling", "rope_scaling_source") and getattr(params, name) is not None}
    if params.rope_scaling is not None:
        raw |= {"use_scaled_rope": True, "rope_scaling_factor": params.rope_scaling.factor}
        if params.rope_scaling.high_freq_factor != RopeScaling.high_freq_factor:
            raw["rope_high_freq_factor"] = params.rope_scaling.high_freq_factor
    return raw


def load_params(model_dir):
    """Read and validate `model_dir/params.json`."""
    path = Path(model_dir) / "params.json"
    if not path.is_file():
        raise LlamaError(f"{path} does not exist. A Llama 3 model folder holds params.json, tokenizer.model "
                         "and consolidated.00.pth; check the path.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))  # an editor may add a BOM
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LlamaError(f"{path} is not valid JSON ({error}). Download it again.") from None
    return params_from_dict(raw, source=str(path))


def expected_shapes(params, tied=False):
    """Every tensor name in a Meta Llama 3 checkpoint, in the file's order, with the shape params.json
    implies; with `tied`, without output.weight (Llama 3.2 1B and 3B store none)."""
    p = params
    shapes = {"tok_embeddings.weight": (p.vocab_size, p.dim)}
    for i in range(p.n_layers):
        shapes |= {
            f"layers.{i}.attention.wq.weight": (p.n_heads * p.head_dim, p.dim),
            f"layers.{i}.attention.wk.weight": (p.n_kv_heads * p.head_dim, p.dim),
            f"layers.{i}.attention.wv.weight": (p.n_kv_heads * p.head_dim, p.dim),
            f"layers.{i}.attention.wo.weight": (p.dim, p.n_heads * p.head_dim),
            f"layers.{i}.feed_forward.w1.weight": (p.hidden_dim, p.dim),
            f"layers.{i}.feed_forward.w2.weight": (p.dim, p.hidden_dim),
            f"layers.{i}.feed_forward.w3.weight": (p.hidden_dim, p.dim),
            f"layers.{i}.attention_norm.weight": (p.dim,),
            f"layers.{i}.ffn_norm.weight": (p.dim,),
        }
    shapes |= {"norm.weight": (p.dim,)} | ({} if tied else {"output.weight": (p.vocab_size, p.dim)})
    return shapes


def missing_layer(names, n_layers):
    """The first of layers 0 to n_layers - 1 that none of the tensor `names` belongs to (Meta's layers.N.*,
    Hugging Face's model.layers.N.*), None if each has some. Found without listing n_layers layers' names
    first, so that a params file claiming 10**9 layers is refused at once rather than filling the memory: the
    search stops at the first layer missing, at most one past the layers present."""
    present = {int(found[1]) for name in names if (found := re.search(r"(?:^|\.)layers\.(\d+)\.", name))}
    return next((i for i in range(n_layers) if i not in present), None)


def checkpoint_bytes(params, tied=False):
    """The bytes of a checkpoint's tensors in bf16."""
    return sum(2 * math.prod(shape) for shape in expected_shapes(params, tied).values())


# Hugging Face repositories of the shapes above (their original/ folder holds Meta's files), with the size
# of their consolidated.00.pth. Each is gated: accept its licence on its page first.
MODELS = {repo: checkpoint_bytes(params_from_dict(shape.params), shape.tied)
          for shape in SHAPES.values() for repo in shape.repos}
