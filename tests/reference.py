"""Hugging Face's LlamaForCausalLM built from a course model, for reference comparisons."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# Every largest difference measured by tests/test_reference.py, for the summary at the end of the run.
MEASURED_DIFFS = []


def meta_to_hf_rows(w, n_heads):
    """Reorder wq/wk rows from Meta's adjacent RoPE pairs to Hugging Face's "rotate half" layout."""
    dim = w.shape[-1]
    head_dim = w.shape[0] // n_heads
    return w.view(n_heads, head_dim // 2, 2, dim).transpose(1, 2).reshape(-1, dim)


def hf_model(model):
    """An fp32 LlamaForCausalLM with `model`'s weights (upcast, wq/wk permuted)."""
    p = model.params
    config = LlamaConfig(
        vocab_size=p.vocab_size, hidden_size=p.dim, intermediate_size=p.hidden_dim,
        num_hidden_layers=p.n_layers, num_attention_heads=p.n_heads, num_key_value_heads=p.n_kv_heads,
        rms_norm_eps=p.norm_eps, rope_parameters={"rope_type": "default", "rope_theta": p.rope_theta},
        max_position_embeddings=p.max_seq_len, tie_word_embeddings=False,
    )
    config._attn_implementation = "eager"
    w = {name: t.float() for name, t in model.weights.items()}
    state = {"model.embed_tokens.weight": w["tok_embeddings.weight"],
             "model.norm.weight": w["norm.weight"], "lm_head.weight": w["output.weight"]}
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
    reference.load_state_dict(state, strict=True)
    return reference


@torch.inference_mode()
def hf_logits(reference, tokens):
    return reference(torch.as_tensor(tokens)[None]).logits[0]
