"""Hugging Face's LlamaForCausalLM built from a course model, for reference comparisons."""

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

# Every largest difference measured against transformers (tests/test_reference.py, tests/test_llama31.py),
# for the summary at the end of the run; each must be within BOUND, the figure README quotes.
MEASURED_DIFFS = []
BOUND = 1e-4


def record_diff(ours, theirs):
    """The largest absolute difference of two logit tensors, checked against BOUND and recorded."""
    diff = (ours - theirs).abs().max().item()
    assert diff <= BOUND, f"ours and transformers' logits differ by {diff:.2e}, more than {BOUND}"
    MEASURED_DIFFS.append(diff)
    return diff


def meta_to_hf_rows(w, n_heads):
    """Reorder wq/wk rows from Meta's adjacent RoPE pairs to Hugging Face's "rotate half" layout."""
    dim = w.shape[-1]
    head_dim = w.shape[0] // n_heads
    return w.view(n_heads, head_dim // 2, 2, dim).transpose(1, 2).reshape(-1, dim)


def meta_to_hf_pairs(x):
    """The same reordering for head vectors (..., head_dim) such as cached keys: (x0, x1), (x2, x3), ...
    become (x0, x1, ...) and (x_half, ...), the halves that "rotate half" pairs up."""
    return x.unflatten(-1, (-1, 2)).transpose(-1, -2).flatten(-2)


def rope_parameters(p):
    """Hugging Face's RoPE settings for params `p`: Llama 3's plain RoPE, or Llama 3.1's "llama3"
    scaling as their config.json for Llama 3.1 and 3.2 gives it (only the factor differs by model)."""
    if p.rope_scaling_factor is None:
        return {"rope_type": "default", "rope_theta": p.rope_theta}
    return {"rope_type": "llama3", "rope_theta": p.rope_theta, "factor": p.rope_scaling_factor,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def hf_model(model):
    """An fp32 LlamaForCausalLM with `model`'s weights (upcast, wq/wk permuted).

    A model whose output layer is its embedding table (`model.tied_output`, Llama 3.2 1B and 3B) gets
    tie_word_embeddings=True and no lm_head.weight of its own: Hugging Face must tie it to embed_tokens.
    """
    p = model.params
    tied = model.tied_output
    config = LlamaConfig(
        vocab_size=p.vocab_size, hidden_size=p.dim, intermediate_size=p.hidden_dim,
        num_hidden_layers=p.n_layers, num_attention_heads=p.n_heads, num_key_value_heads=p.n_kv_heads,
        rms_norm_eps=p.norm_eps, rope_parameters=rope_parameters(p),
        max_position_embeddings=p.max_seq_len, tie_word_embeddings=tied,
    )
    config._attn_implementation = "eager"
    w = {name: t.float() for name, t in model.weights.items()}
    state = {"model.embed_tokens.weight": w["tok_embeddings.weight"], "model.norm.weight": w["norm.weight"]}
    if not tied:
        state["lm_head.weight"] = w["output.weight"]
    for i in range(p.n_layers):
        m, hf = f"layers.{i}.", f"model.layers.{i}."
        state |= {
            hf + "self_attn.q_proj.weight": meta_to_hf_rows(w[m + "attention.wq.weight"], p.n_heads),
            hf + "self_attn.k_proj.weight": meta_to_hf_rows(w[m + "attention.wk.weight"], p.n_kv_heads),
            hf + "self_attn.v_proj.weight": w[m + "attention.wv.weight"],
            hf + "self_attn.o_proj.weight": w[m + "attention.wo.weight"],
            hf + "mlp.gate_proj.weight": w[m + "feed_forward.w1.weight"],
            hf + "mlp.up_proj.weight": w[m + "feed_forward.w3.weight"],
            hf + "mlp.down_proj.weight": w[m + "feed_forward.w2.weight"],
            hf + "input_layernorm.weight": w[m + "attention_norm.weight"],
            hf + "post_attention_layernorm.weight": w[m + "ffn_norm.weight"],
        }
    reference = LlamaForCausalLM(config).float().eval()
    keys = reference.load_state_dict(state, strict=False)
    # Every tensor is loaded; the one left out, the tied lm_head, is embed_tokens under another name.
    assert keys.missing_keys == (["lm_head.weight"] if tied else []) and not keys.unexpected_keys, keys
    return reference


def hf_cache(cache):
    """A DynamicCache holding the keys and values of helpers' KVCache `cache` (keys reordered for
    "rotate half"), so that both models continue from the same stored positions."""
    hf = DynamicCache()
    for i, layer in enumerate(cache.layers):
        keys, values = layer.keys[: layer.length], layer.values[: layer.length]
        # (positions, kv_heads, head_dim) -> (batch 1, kv_heads, positions, head_dim)
        hf.update(meta_to_hf_pairs(keys).transpose(0, 1)[None].contiguous(),
                  values.transpose(0, 1)[None].contiguous(), i)
    return hf


@torch.inference_mode()
def hf_logits(reference, tokens, cache=None):
    """The logits of `tokens`; with a DynamicCache `cache`, at the positions after the ones it holds."""
    tokens = torch.as_tensor(tokens)[None]
    if cache is None:
        return reference(tokens).logits[0]
    start = cache.get_seq_length()
    positions = torch.arange(start, start + tokens.shape[1])[None]
    return reference(tokens, past_key_values=cache, position_ids=positions).logits[0]
