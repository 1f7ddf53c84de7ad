"""The from-scratch forward pass against transformers' LlamaForCausalLM, in float32."""

import pytest
import torch

from helpers import forward

from conftest import CLASSIC_IDS, random_model, random_params
from reference import hf_logits, hf_model, record_diff

TOLERANCE = 1e-4


def max_diff(model, tokens):
    """The largest absolute difference of the logits; the largest of all is printed at the end of the run."""
    with torch.inference_mode():
        ours = forward(model, tokens)
    return record_diff(ours, hf_logits(hf_model(model), tokens))


def test_tiny_model_matches_transformers(tiny):
    assert max_diff(tiny, CLASSIC_IDS) <= TOLERANCE


@pytest.mark.parametrize("n_kv_heads", [8, 2, 1], ids=["MHA", "GQA-4", "MQA"])
@pytest.mark.parametrize("seq_len", [1, 17, 100])
def test_random_configs_match_transformers(n_kv_heads, seq_len, rng):
    model = random_model(random_params(n_heads=8, n_kv_heads=n_kv_heads), seed=seq_len)
    tokens = torch.randint(0, model.params.vocab_size, (seq_len,), generator=rng)
    assert max_diff(model, tokens) <= TOLERANCE


def test_bfloat16_weights_match_transformers(rng):
    """Weights stored in bf16 take the block-upcast path of `linear`; the result must not move."""
    model = random_model(random_params(), dtype=torch.bfloat16)
    tokens = torch.randint(0, model.params.vocab_size, (17,), generator=rng)
    assert max_diff(model, tokens) <= TOLERANCE


def test_comparison_can_fail(rng):
    """A model with wq left in Meta's order for HF (no permutation) must disagree: the check has teeth."""
    model = random_model(random_params())
    tokens = torch.randint(0, model.params.vocab_size, (17,), generator=rng)
    reference = hf_model(model)
    with torch.no_grad():
        for layer in reference.model.layers:
            q = layer.self_attn.q_proj.weight
            q.copy_(q.roll(1, dims=0))
    with torch.inference_mode():
        assert (forward(model, tokens) - hf_logits(reference, tokens)).abs().max() > 1e-2
