"""What the notebooks build, for later notebooks to import instead of pasting again."""

from .attention import attention, attention_head, attention_weights, causal_mask
from .checkpoint import load_weights
from .compute import linear, linear_each
from .debug import Comparison, compare_forward, forward_steps, forward_with
from .download import check_disk_space, download_llama3, hf_token, where_am_i
from .errors import LlamaError
from .generate import Generation, TextStream, chat_tokens, generate, sample_next, top_k_filter, top_p_filter
from .int8 import Int8Weight, dequantize, quantize_int8, quantize_model, weight_bytes, with_activations
from .int8_file import load_int8, save_int8
from .kv_cache import KVCache, LayerCache
from .model import REPO_ROOT, TINY_MODEL_DIR, Llama, find_model, load_model, load_tokenizer
from .params import MODELS, SHAPES, Params, Shape, expected_shapes, is_matrix, load_params, params_from_dict
from .rope import (
    RopeScaling,
    apply_rope,
    apply_rope_half_split,
    half_split_rows,
    interleaved_rows,
    model_frequencies,
    rope_frequencies,
    scale_frequencies,
)
from .tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer
from .tolerance import FLOAT32_TOLERANCE, assert_close
from .transformer import feed_forward, forward, next_token_probs, rms_norm, transformer_block

__all__ = [
    "attention", "attention_head", "attention_weights", "causal_mask",
    "load_weights",
    "MODELS", "SHAPES", "Params", "Shape", "expected_shapes", "is_matrix", "load_params", "params_from_dict",
    "LlamaError",
    "FLOAT32_TOLERANCE", "assert_close",
    "linear", "linear_each",
    "Int8Weight", "dequantize", "quantize_int8", "quantize_model", "weight_bytes", "with_activations",
    "load_int8", "save_int8",
    "Llama", "find_model", "load_model", "load_tokenizer", "REPO_ROOT", "TINY_MODEL_DIR",
    "check_disk_space", "download_llama3", "hf_token", "where_am_i",
    "RopeScaling", "apply_rope", "apply_rope_half_split", "model_frequencies", "rope_frequencies",
    "scale_frequencies", "half_split_rows", "interleaved_rows",
    "SPECIAL_TOKENS", "SPLIT_PATTERN", "Tokenizer",
    "feed_forward", "forward", "next_token_probs", "rms_norm", "transformer_block",
    "Generation", "TextStream", "chat_tokens", "generate", "sample_next", "top_k_filter", "top_p_filter",
    "KVCache", "LayerCache",
    "Comparison", "compare_forward", "forward_steps", "forward_with",
]
