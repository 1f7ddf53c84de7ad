"""Checks for the exercises at the end of notebooks 01 to 08: `check.rms_norm(my_rms_norm)`, and so on.

Each check runs the learner's function (or class) on the embedded tiny model's real tensors
(the classic prompt, layer 0's weights) and on those of small random models whose sizes all differ
(`harness.RANDOM_MODELS`), and prints one line:

- "not done yet": the function returns None (its body is still `...`) or raises NotImplementedError;
- "correct": it gives what helpers gives on every case, within `assert_close`'s tolerance (notebook 02);
- "wrong: <a mistake>": it gives what a known mistake gives. Each check's mistakes are written out,
  in its notebook's module, as small wrong functions, and run: a diagnosis is an output compared, not a guess
  (the embeddings check also watches what the function does to the table: a copy of it whole is a mistake
  even where the rows come out right);
- otherwise what is off: a shape, a dtype, a NaN and where it comes from, or how far and where.

A function that changes a tensor or list it was given (`x += ...`, `x.mul_(...)`) is wrong even where its
results are right: the check names the argument.

An exception inside the learner's function is reported in one line, with the case that raised it; a check
never raises for it. Where a known mistake raises an error of the same type, words and sizes on that case
(a mean without keepdim, k not transposed, k read with a query head's index), the line ends with it:
"likely, <that mistake>".
`MISTAKES` lists every check's mistakes, by the diagnosis each one prints. The verdict and the tiny
model's tensors are in `harness`; each notebook's checks in their own module, named after its topic.
"""

from .attention import (
                        ATTENTION_WEIGHTS_MISTAKES,
                        GROUPED_ATTENTION_MISTAKES,
                        attention_weights,
                        grouped_attention,
                        grouped_attention_reference,
)
from .embeddings_rmsnorm import EMBEDDINGS_MISTAKES, RMS_NORM_MISTAKES, embeddings, rms_norm
from .full_model import FORWARD_MISTAKES, TRANSFORMER_BLOCK_MISTAKES, forward, transformer_block
from .generate import KV_CACHE_MISTAKES, SAMPLING_PROBS_MISTAKES, TOP_P_MISTAKES, kv_cache, sampling_probs, top_p
from .harness import MODELS, PROMPT, freqs, layer_inputs, model, normalised, queries_keys_values, tiny_model
from .int8 import DEQUANTIZE_MISTAKES, QUANTIZE_ROWS_MISTAKES, dequantize_groups, quantize_rows
from .qkv_rope import HEAD_QUERIES_MISTAKES, ROPE_MISTAKES, head_queries, rope
from .swiglu import FEED_FORWARD_MISTAKES, HIDDEN_DIM_MISTAKES, feed_forward, hidden_dim
from .tokenizer import MERGE_MISTAKES, MOST_FREQUENT_PAIR_MISTAKES, merge, most_frequent_pair

MISTAKES = {
    "most_frequent_pair": MOST_FREQUENT_PAIR_MISTAKES,
    "merge": MERGE_MISTAKES,
    "embeddings": EMBEDDINGS_MISTAKES,
    "rms_norm": RMS_NORM_MISTAKES,
    "head_queries": HEAD_QUERIES_MISTAKES,
    "rope": ROPE_MISTAKES,
    "attention_weights": ATTENTION_WEIGHTS_MISTAKES,
    "grouped_attention": GROUPED_ATTENTION_MISTAKES,
    "hidden_dim": HIDDEN_DIM_MISTAKES,
    "feed_forward": FEED_FORWARD_MISTAKES,
    "transformer_block": TRANSFORMER_BLOCK_MISTAKES,
    "forward": FORWARD_MISTAKES,
    "top_p": TOP_P_MISTAKES,
    "sampling_probs": SAMPLING_PROBS_MISTAKES,
    "kv_cache": KV_CACHE_MISTAKES,
    "quantize_rows": QUANTIZE_ROWS_MISTAKES,
    "dequantize_groups": DEQUANTIZE_MISTAKES,
}

__all__ = [
    "ATTENTION_WEIGHTS_MISTAKES",
    "DEQUANTIZE_MISTAKES",
    "EMBEDDINGS_MISTAKES",
    "FEED_FORWARD_MISTAKES",
    "FORWARD_MISTAKES",
    "GROUPED_ATTENTION_MISTAKES",
    "HEAD_QUERIES_MISTAKES",
    "HIDDEN_DIM_MISTAKES",
    "KV_CACHE_MISTAKES",
    "MERGE_MISTAKES",
    "MISTAKES",
    "MODELS",
    "MOST_FREQUENT_PAIR_MISTAKES",
    "PROMPT",
    "QUANTIZE_ROWS_MISTAKES",
    "RMS_NORM_MISTAKES",
    "ROPE_MISTAKES",
    "SAMPLING_PROBS_MISTAKES",
    "TOP_P_MISTAKES",
    "TRANSFORMER_BLOCK_MISTAKES",
    "attention_weights",
    "dequantize_groups",
    "embeddings",
    "feed_forward",
    "forward",
    "freqs",
    "grouped_attention",
    "grouped_attention_reference",
    "head_queries",
    "hidden_dim",
    "kv_cache",
    "layer_inputs",
    "merge",
    "model",
    "most_frequent_pair",
    "normalised",
    "quantize_rows",
    "queries_keys_values",
    "rms_norm",
    "rope",
    "sampling_probs",
    "tiny_model",
    "top_p",
    "transformer_block",
]
