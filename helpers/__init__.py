"""What the notebooks build, for later notebooks to import instead of pasting again."""

from .attention import attention, attention_head, attention_weights, causal_mask
from .checkpoint import Params, expected_shapes, load_params, load_weights, params_from_dict
from .errors import LlamaError
from .compute import FLOAT32_TOLERANCE, assert_close, linear, linear_each
from .int8 import Int8Weight, dequantize, load_int8, quantize_int8, quantize_model, save_int8, weight_bytes
from .model import Llama, find_model, load_model, load_tokenizer, REPO_ROOT, TINY_MODEL_DIR
from .download import check_disk_space, download_llama3, hf_token, where_am_i
from .rope import apply_rope, apply_rope_half_split, rope_frequencies, scale_frequencies
from .tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer
from .transformer import feed_forward, forward, next_token_probs, rms_norm, transformer_block
from .generate import Generation, TextStream, chat_tokens, generate, sample_next, top_k_filter, top_p_filter
from .kv_cache import KVCache, LayerCache
from .debug import Comparison, compare_forward, forward_steps, forward_with
