"""Llama 3.1 and 3.2: scaled RoPE, the tied output layer, the 128K context and the chat format.

The models are small random checkpoints in Meta's layout (a params.json that says use_scaled_rope,
a consolidated.00.pth, the small_vocab fixture's tokenizer.model), loaded with helpers.load_model as a
reader's Llama 3.2 1B would be, and compared with transformers' LlamaForCausalLM configured as
Hugging Face's config.json for Llama 3.1 and 3.2 are (rope_type "llama3", tests/reference.py).
"""

import math

import pytest
import torch
from test_cli import assert_clear_error, run_main

from helpers import (
    FLOAT32_TOLERANCE,
    TINY_MODEL_DIR,
    KVCache,
    LlamaError,
    Tokenizer,
    assert_close,
    chat_tokens,
    forward,
    load_model,
    params_from_dict,
)

from conftest import random_model, random_params, random_raw_params, random_weights, write_model
from reference import hf_cache, hf_logits, hf_model, record_diff

# A position past Llama 3's 8,192-token context, where RoPE's scale factor decides the angles.
FAR = 20_000


def llama31_raw(**overrides):
    """params.json of a small Llama 3.1+ model: use_scaled_rope, and no factor unless one is given."""
    return random_raw_params(vocab_size=512, use_scaled_rope=True) | overrides


def write_llama31(small_vocab, tied=False, **overrides):
    """The small_vocab fixture's folder, holding a random Llama 3.1+ checkpoint; with `tied`, one
    without output.weight, as Llama 3.2 1B and 3B are."""
    folder, _, _ = small_vocab
    raw = llama31_raw(**overrides)
    params = params_from_dict(raw)
    weights = random_weights(params)
    if tied:
        del weights["output.weight"]
    return write_model(folder, params, weights, raw_params=raw)


def compare(model, tokens, cache=None):
    """Our logits and transformers', recorded for the summary; with `cache`, after the positions it holds."""
    reference = hf_model(model)
    with torch.inference_mode():
        # transformers first: its copy of the cache is taken before `forward` appends the new positions.
        theirs = hf_logits(reference, tokens, None if cache is None else hf_cache(cache))
        ours = forward(model, tokens, cache)
    record_diff(ours, theirs)
    return ours, theirs


def far_cache(params, n_new, seed=0):
    """A KVCache whose first FAR positions hold random keys and values (the same for every model with
    these sizes), so that the next tokens sit at positions FAR, FAR + 1, ... without 20,000 tokens of
    computation. Keys of the size real ones have make the attention over them depend on RoPE's angles."""
    g = torch.Generator().manual_seed(seed)
    cache = KVCache(params, FAR + n_new)
    shape = (FAR, params.n_kv_heads, params.head_dim)
    for layer in cache.layers:
        layer.update(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    return cache


# --- the forward pass against transformers ----------------------------------------------------------------

@pytest.mark.parametrize("overrides, tied, factor", [
    pytest.param(dict(rope_scaling_factor=8.0), False, 8.0, id="factor-8-from-params.json"),
    pytest.param(dict(rope_scaling_factor=32.0), False, 32.0, id="factor-32-from-params.json"),
    # Llama 3.2 1B's width, heads and head size, in one thin layer: the factor comes from dim 2048.
    pytest.param(dict(dim=2048, n_layers=1, n_heads=32, n_kv_heads=8, ffn_dim_multiplier=0.1), True, 32.0,
                 id="llama-3.2-1B-width-tied"),
])
def test_forward_matches_transformers_llama3_rope(small_vocab, rng, overrides, tied, factor):
    model = load_model(write_llama31(small_vocab, tied, **overrides), verbose=False)
    assert model.params.rope_scaling_factor == factor and model.tied_output == tied
    reference = hf_model(model)
    assert reference.config.rope_parameters["factor"] == factor
    assert reference.config.max_position_embeddings == 131072
    tokens = torch.randint(0, model.params.vocab_size, (17,), generator=rng)
    assert_close(*compare(model, tokens))


def test_far_positions_tell_the_factors_apart(small_vocab, rng):
    """At position 20,000 the factor moves the logits by a good fraction of their size (8 against 32:
    0.67, with logits up to 3.8), and each factor matches transformers at that factor. At positions 0 to 4
    the same two factors differ about a thousand times less: RoPE's slow pairs have barely turned there."""
    folder = write_llama31(small_vocab)
    tokens = torch.randint(0, 512, (5,), generator=rng)
    far, near = {}, {}
    for factor in (8, 32):
        model = load_model(folder, verbose=False, rope_scaling_factor=factor)
        cache = far_cache(model.params, len(tokens))
        ours, theirs = compare(model, tokens, cache)
        assert cache.length == FAR + len(tokens)
        assert_close(ours, theirs)
        far[factor] = ours
        with torch.inference_mode():
            near[factor] = forward(model, tokens)
    bound = FLOAT32_TOLERANCE * far[8].abs().max()
    apart = (far[8] - far[32]).abs().max()
    assert apart > 100 * bound
    assert (near[8] - near[32]).abs().max() < apart / 100


def test_tied_output_is_the_embedding_table(small_vocab, rng):
    """Llama 3.2 1B and 3B have no output.weight: the output layer is tok_embeddings.weight, the same
    tensor (never a copy), and transformers with tie_word_embeddings computes the same logits."""
    model = load_model(write_llama31(small_vocab, tied=True, rope_scaling_factor=32.0), verbose=False)
    assert model.tied_output
    assert model.weights["output.weight"].data_ptr() == model.weights["tok_embeddings.weight"].data_ptr()
    reference = hf_model(model)
    assert reference.config.tie_word_embeddings
    assert reference.lm_head.weight is reference.model.embed_tokens.weight
    tokens = torch.randint(0, model.params.vocab_size, (17,), generator=rng)
    assert_close(*compare(model, tokens))
    assert not random_model(random_params()).tied_output


# --- params.json: the factor and the context --------------------------------------------------------------

# Hugging Face's config.json of each model says its rope_scaling.factor; Meta's params.json does not.
@pytest.mark.parametrize("dim, factor, why", [
    (2048, 32.0, "Llama 3.2 1B's factor"),
    (3072, 32.0, "Llama 3.2 3B's factor"),
    (4096, 8.0, "Llama 3.1 8B's factor"),
    (8192, 8.0, "Llama 3.1 70B and 3.3 70B's factor"),
    (16384, 8.0, "Llama 3.1 405B's factor"),
    (64, 8.0, "Llama 3.1's factor: params.json says use_scaled_rope, and dim 64 is no model this course knows"),
])
def test_factor_chosen_by_width(dim, factor, why):
    params = params_from_dict(llama31_raw(dim=dim))
    assert params.rope_scaling_factor == factor
    assert params.rope_scaling_source.startswith(why)
    assert params.max_seq_len == 131072


def test_factor_from_params_json():
    params = params_from_dict(llama31_raw(dim=4096, rope_scaling_factor=16))
    assert params.rope_scaling_factor == 16.0 and isinstance(params.rope_scaling_factor, float)
    assert params.rope_scaling_source == "from params.json"


@pytest.mark.parametrize("extra, context, factor", [
    ({}, 8192, None),
    ({"use_scaled_rope": False}, 8192, None),
    ({"use_scaled_rope": True}, 131072, 8.0),
    ({"use_scaled_rope": True, "max_seq_len": 4096}, 4096, 8.0),
])
def test_context_length(extra, context, factor):
    params = params_from_dict(random_raw_params() | extra)
    assert params.max_seq_len == context and params.rope_scaling_factor == factor


@pytest.mark.parametrize("extra, message", [
    ({"rope_scaling_factor": 8}, "gives a rope_scaling_factor but not use_scaled_rope: true"),
    ({"use_scaled_rope": False, "rope_scaling_factor": 8}, "gives a rope_scaling_factor but not use_scaled_rope"),
    ({"use_scaled_rope": True, "rope_scaling_factor": "8"}, "'rope_scaling_factor' should be int or float"),
    ({"use_scaled_rope": "yes"}, "'use_scaled_rope' should be bool"),
    # json.loads reads NaN and Infinity, so a params.json can hold them.
    *[({"use_scaled_rope": True, "rope_scaling_factor": bad},
       f"'rope_scaling_factor' must be a finite number above 0, but it is {bad}")
      for bad in (0, -8, math.nan, math.inf)],
])
def test_bad_factor_in_params_json(extra, message):
    with pytest.raises(LlamaError, match="^params.json") as error:
        params_from_dict(random_raw_params() | extra)
    assert message in str(error.value)


# --- choosing the factor: load_model and the command line -------------------------------------------------

def test_load_model_says_which_factor_and_why(small_vocab, capsys):
    folder = write_llama31(small_vocab)
    model = load_model(folder)
    out = capsys.readouterr().out
    assert model.params.rope_scaling_factor == 8.0
    assert ("RoPE: scaled by 8 (Llama 3.1's factor: params.json says use_scaled_rope, and dim 64 is no model this "
            "course knows); context 131,072 tokens.\n"
            "To choose another factor, pass rope_scaling_factor= to load_model() or --rope-scaling-factor.\n") in out
    model = load_model(folder, rope_scaling_factor=32)
    assert model.params.rope_scaling_factor == 32.0 and model.params.rope_scaling_source == "as you asked"
    assert "RoPE: scaled by 32 (as you asked); context 131,072 tokens." in capsys.readouterr().out


def test_llama3_model_has_no_factor_to_choose(small_vocab, capsys):
    folder, params, weights = small_vocab
    write_model(folder, params, weights, raw_params=random_raw_params(vocab_size=512))
    model = load_model(folder)
    assert model.params.rope_scaling_factor is None and model.params.max_seq_len == 8192
    assert "RoPE" not in capsys.readouterr().out
    with pytest.raises(LlamaError, match="a Llama 3 model without scaled RoPE .* Leave rope_scaling_factor out"):
        load_model(folder, verbose=False, rope_scaling_factor=8)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0, -2.0])
def test_override_must_be_finite_and_positive(small_vocab, bad):
    with pytest.raises(LlamaError, match=f"must be a finite number above 0, not {bad}"):
        load_model(write_llama31(small_vocab), verbose=False, rope_scaling_factor=bad)


def test_cli_rope_scaling_factor(small_vocab, capsys, monkeypatch):
    folder = str(write_llama31(small_vocab))
    result = run_main(capsys, monkeypatch, "hi", "--model", folder, "--rope-scaling-factor", "32")
    assert result.returncode == 0, result.stderr
    assert "RoPE: scaled by 32 (as you asked); context 131,072 tokens." in result.stdout
    assert "Top 5 next tokens:" in result.stdout
    assert_clear_error(run_main(capsys, monkeypatch, "hi", "--model", folder, "--rope-scaling-factor", "nan"),
                       "The RoPE scale factor must be a finite number above 0, not nan.")
    llama3 = str(TINY_MODEL_DIR)
    assert_clear_error(run_main(capsys, monkeypatch, "hi", "--model", llama3, "--rope-scaling-factor", "8"),
                       "is a Llama 3 model without scaled RoPE")


# --- the chat format of Llama 3.1 and 3.2 Instruct --------------------------------------------------------

# llama_models 0.3.0 has one ChatFormat for Llama 3, 3.1 and 3.2: the same headers and <|eot_id|>. What 3.1
# adds is in the text: a system message that starts with the knowledge cut-off and today's date (which
# llama-stack and Hugging Face's chat template write, not ChatFormat), and, for tools, an `ipython` role,
# <|python_tag|> and <|eom_id|>, which chat_tokens does not write.
LLAMA31_SYSTEM = "Cutting Knowledge Date: December 2023\nToday Date: 23 Jul 2024\n\nYou are a helpful assistant."
LLAMA32_TOOLS = ('You are an expert in composing functions.\n\nHere is a list of functions in JSON format that you '
                 'can invoke.\n\n[\n    {\n        "name": "get_weather",\n        "parameters": {"type": "dict", '
                 '"required": ["city"]}\n    }\n]')


@pytest.mark.parametrize("messages", [
    pytest.param([{"role": "system", "content": LLAMA31_SYSTEM},
                  {"role": "user", "content": "Answer who are you in the form of jeopardy?"},
                  {"role": "assistant", "content": 'Here\'s my response\n\n"What is a helpful assistant?"'},
                  {"role": "user", "content": "Und jetzt auf Deutsch, bitte. 你好 🦙"}], id="llama-3.1-system-date"),
    pytest.param([{"role": "system", "content": LLAMA32_TOOLS},
                  {"role": "user", "content": "What is the weather in SF and Seattle?"},
                  {"role": "assistant",
                   "content": "[get_weather(city='San Francisco'), get_weather(city='Seattle')]"},
                  {"role": "user", "content": "Thanks <|eot_id|>"}], id="llama-3.2-zero-shot-functions"),
    pytest.param([{"role": "user", "content": "Who are you?"}], id="user-only-as-in-cli-chat"),
])
def test_chat_tokens_match_metas_chat_format(messages):
    from llama_models.datatypes import RawMessage
    from llama_models.llama3.chat_format import ChatFormat
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    # Contents without whitespace around them: chat_tokens strips it, as Meta's llama3 repository and Hugging
    # Face's template do; llama_models 0.3.0's ChatFormat keeps it.
    metas = ChatFormat(MetaTokenizer.get_instance()).encode_dialog_prompt([RawMessage(**m) for m in messages])
    assert chat_tokens(Tokenizer(), messages) == metas.tokens
