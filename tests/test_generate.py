"""Generation: the KV cache, greedy decoding against transformers, sampling, streaming, stop tokens, chat."""

import importlib

import pytest
import torch
from test_cli import assert_clear_error, demo, run_main

from helpers import (
    KVCache,
    LlamaError,
    TextStream,
    assert_close,
    chat_tokens,
    forward,
    generate,
    sample_next,
    top_k_filter,
    top_p_filter,
)

from conftest import CLASSIC_IDS, random_model, random_params
from reference import hf_model

# The module, not the function of the same name that helpers exports.
generate_module = importlib.import_module("helpers.generate")

TOLERANCE = 1e-4
NEG = float("-inf")
# Chinese and emoji: Llama 3 splits several of these characters across two or three tokens.
MULTI_BYTE = "你好，世界！吃草的羊驼 🦙👍🏽 ok"


@pytest.fixture(scope="module")
def gqa_model():
    return random_model(random_params(n_heads=8, n_kv_heads=2), seed=7)


def prompt(model, n, seed=0):
    return torch.randint(0, model.params.vocab_size, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


# --- the cache -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which, n_new", [("tiny", 12), ("random", 40)])
def test_cache_gives_the_same_tokens_and_logits(which, n_new, tiny, gqa_model):
    model = tiny if which == "tiny" else gqa_model
    ids = CLASSIC_IDS if which == "tiny" else prompt(model, 13)
    with_cache = generate(model, ids, n_new, stop_ids=(), keep_logits=True)
    without = generate(model, ids, n_new, stop_ids=(), keep_logits=True, use_cache=False)
    assert len(with_cache.new_ids) == n_new
    assert with_cache.new_ids == without.new_ids
    assert (with_cache.logits - without.logits).abs().max() <= TOLERANCE


@pytest.mark.parametrize("cached", [False, True])
def test_last_only_gives_the_last_rows_logits(tiny, cached):
    """forward(..., last_only=True), which generation uses: the last position's logits alone, as in the full ones."""
    ids = tiny.tokenizer.encode("the answer to the ultimate question")
    full = forward(tiny, ids)
    cache = KVCache(tiny.params, len(ids)) if cached else None
    if cached:
        forward(tiny, ids[:-3], cache, last_only=True)
    last = forward(tiny, ids[-3:] if cached else ids, cache, last_only=True)
    assert last.shape == (1, tiny.params.vocab_size)
    assert_close(last, full[-1:])


def test_cache_holds_keys_before_the_gqa_repeat(gqa_model):
    p = gqa_model.params
    cache = KVCache(p, capacity=10)
    forward(gqa_model, prompt(gqa_model, 6), cache)
    forward(gqa_model, [3], cache)
    assert cache.length == 7 and cache.capacity == 10 and len(cache.layers) == p.n_layers
    assert cache.layers[0].keys[:7].shape == (7, p.n_kv_heads, p.head_dim)
    with pytest.raises(LlamaError, match="room for 10 positions; 7 are stored"):
        forward(gqa_model, prompt(gqa_model, 4), cache)


# --- greedy decoding against transformers ----------------------------------------------------------------

def hf_generate(model, ids, max_new_tokens, eos_ids):
    ids = torch.as_tensor(ids)[None]
    with torch.inference_mode():
        out = hf_model(model).generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                       do_sample=False, eos_token_id=eos_ids, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("n_kv_heads", [8, 2, 1], ids=["MHA", "GQA-4", "MQA"])
def test_greedy_matches_transformers_generate(n_kv_heads):
    model = random_model(random_params(n_heads=8, n_kv_heads=n_kv_heads), seed=n_kv_heads)
    ids = prompt(model, 9, seed=n_kv_heads)
    ours = generate(model, ids, 30, stop_ids=())
    assert ours.new_ids == hf_generate(model, ids, 30, eos_ids=None)


def test_tiny_model_stops_where_transformers_stops(tiny):
    ids = tiny.tokenizer.encode("A llama")
    ours = generate(tiny, ids, 60)
    assert ours.stop_reason == "<|end_of_text|>" and len(ours.new_ids) < 60
    assert ours.new_ids == hf_generate(tiny, ids, 60, eos_ids=sorted(tiny.tokenizer.stop_ids))


# --- sampling --------------------------------------------------------------------------------------------

def test_seeded_sampling_is_reproducible(gqa_model):
    ids = prompt(gqa_model, 5)
    runs = [generate(gqa_model, ids, 20, temperature=1.0, seed=seed, stop_ids=()).new_ids for seed in (1, 1, 2)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    greedy = generate(gqa_model, ids, 20, stop_ids=()).new_ids
    assert runs[0] != greedy


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    generator = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_next(probs.log(), 1.0, generator=generator) for _ in range(4000)])
    counts = torch.bincount(draws, minlength=4) / len(draws)
    torch.testing.assert_close(counts, probs, atol=0.03, rtol=0)
    assert sample_next(probs.log(), 0.0) == 0
    assert sample_next(probs.log(), 5.0, top_k=1, generator=generator) == 0


def test_a_draw_is_the_token_whose_wait_from_torch_rand_is_shortest():
    """The draws follow torch.rand's numbers for the seed, which were the same in torch 2.6 and 2.13 (the ones
    torch.multinomial gave for a seed differed): a seed gave the same text on both."""
    from helpers.generate import draw

    def rand(seed, n):
        return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    uniform = torch.full((1000,), 1e-3)  # equal rates: the shortest wait -log(1 - u) is the smallest u
    assert [draw(uniform, torch.Generator().manual_seed(seed)) for seed in range(50)] == \
        [int(rand(seed, 1000).argmin()) for seed in range(50)]
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    for seed in range(50):
        waits = -torch.log1p(-rand(seed, 4))
        assert draw(probs, torch.Generator().manual_seed(seed)) == int((waits / probs.double()).argmin())
    assert torch.rand(3, generator=torch.Generator().manual_seed(0)).tolist() == pytest.approx(
        [0.49625658988952637, 0.7682217955589294, 0.08847743272781372], abs=0)  # the same on torch 2.6 and 2.13


def test_a_draw_does_not_move_with_the_last_bits_of_the_probabilities():
    """CPUs' softmaxes differ in the last bits: the token drawn for a seed must not. (A uniform number placed along
    the running total moved in 5 of these 200 draws: the nudges add up along it.)"""
    from helpers.generate import draw

    probs = torch.softmax(torch.randn(128256, generator=torch.Generator().manual_seed(0)), dim=0)
    nudged = probs * (1 + 1e-6 * torch.linspace(-1, 1, len(probs)))
    for seed in range(200):
        assert draw(probs, torch.Generator().manual_seed(seed)) == draw(nudged, torch.Generator().manual_seed(seed))


def test_a_token_of_probability_zero_is_never_drawn():
    from helpers.generate import draw

    probs = torch.tensor([0.0, 0.25, 0.0, 0.0, 0.75, 0.0])
    generator = torch.Generator().manual_seed(1)
    assert set(draw(probs, generator) for _ in range(2000)) == {1, 4}
    assert draw(torch.tensor([0.0, 1.0, 0.0]), generator) == 1


def test_low_temperature_sharpens():
    logits = torch.tensor([2.0, 1.0, 0.0])
    generator = torch.Generator().manual_seed(0)
    draws = [sample_next(logits, 0.05, generator=generator) for _ in range(200)]
    assert draws == [0] * 200
    # Divided by 1e-45, the logits would overflow to inf, and their softmax to nan.
    assert sample_next(torch.tensor([20.0, 30.0, -10.0]), 1e-45, generator=generator) == 1
    assert sample_next(torch.tensor([20.0, 30.0, -10.0]), 1e-45, top_p=0.9, generator=generator) == 1


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([1.0, 3.0, 2.0, 5.0, 4.0])
    assert top_k_filter(logits, 2).tolist() == [NEG, NEG, NEG, 5.0, 4.0]
    assert top_k_filter(logits, 1).tolist() == [NEG, NEG, NEG, 5.0, NEG]
    assert top_k_filter(logits, 5).tolist() == logits.tolist()
    assert top_k_filter(logits, 99) is logits and top_k_filter(logits, None) is logits


def test_top_k_keeps_ties_and_works_row_by_row():
    assert top_k_filter(torch.tensor([1.0, 3.0, 3.0, 0.0]), 1).tolist() == [NEG, 3.0, 3.0, NEG]
    rows = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    assert top_k_filter(rows, 1).tolist() == [[NEG, NEG, 2.0], [2.0, NEG, NEG]]


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    probs = [0.5, 0.25, 0.15, 0.1]
    logits = torch.tensor(probs).log()
    kept = {p: (top_p_filter(logits, p) > NEG).sum().item() for p in (1e-6, 0.4, 0.6, 0.7, 0.8, 0.95, 1.0)}
    assert kept == {1e-6: 1, 0.4: 1, 0.6: 2, 0.7: 2, 0.8: 3, 0.95: 4, 1.0: 4}
    # Kept entries are unchanged; the order of the input does not matter.
    shuffled = torch.tensor([0.15, 0.5, 0.1, 0.25]).log()
    expected = shuffled.clone()
    expected[[0, 2]] = NEG
    assert torch.equal(top_p_filter(shuffled, 0.6), expected)


def test_top_p_edge_cases():
    ties = torch.tensor([0.4, 0.3, 0.3]).log()
    assert (top_p_filter(ties, 0.5) > NEG).tolist() == [True, True, True]
    after_top_k = torch.tensor([NEG, 0.0, 0.0, NEG])
    assert top_p_filter(after_top_k, 0.3).tolist() == [NEG, 0.0, 0.0, NEG]
    one_sure_token = torch.tensor([0.0, -1e4, -1e4])
    assert top_p_filter(one_sure_token, 0.999).tolist() == [0.0, NEG, NEG]


@pytest.mark.parametrize("settings, message", [
    (dict(temperature=-0.5), "temperature must be 0"),
    (dict(temperature=1.0, top_k=0), "top-k must be at least 1"),
    (dict(temperature=1.0, top_p=0.0), "top-p is a probability mass"),
    (dict(temperature=1.0, top_p=1.5), "top-p is a probability mass"),
])
def test_bad_sampling_settings(gqa_model, settings, message):
    with pytest.raises(LlamaError, match=message):
        generate(gqa_model, [1, 2, 3], 5, **settings)


# --- streaming and stop tokens ---------------------------------------------------------------------------

def test_multi_byte_stream_is_decoded_whole(tiny):
    tokenizer = tiny.tokenizer
    ids = tokenizer.encode(MULTI_BYTE, bos=False)
    one_by_one = [tokenizer.decode([i]) for i in ids]
    assert sum("\ufffd" in text for text in one_by_one) >= 4, "the text must split characters across tokens"
    pieces = []
    stream = TextStream(tokenizer, pieces.append)
    for i in ids:
        stream.add(i)
    stream.finish()
    assert "".join(pieces) == stream.text == MULTI_BYTE
    assert not any("\ufffd" in piece for piece in pieces)


def test_an_unfinished_character_becomes_one_replacement_at_the_end(tiny):
    tokenizer = tiny.tokenizer
    ids = tokenizer.encode("ok 🦙", bos=False)
    stream = TextStream(tokenizer)
    for i in ids[:-1]:
        stream.add(i)
    assert stream.text == "ok "  # the space came in the same token as the emoji's first bytes
    assert stream.finish() == "\ufffd" and stream.text == "ok \ufffd"


@pytest.fixture
def scripted(tiny, monkeypatch):
    """The tiny model made to "generate" a given list of ids, whatever its weights say."""
    def script(ids):
        steps = iter(ids)

        def forward(model, tokens, cache=None, last_only=False):
            logits = torch.zeros(1 if last_only else len(tokens), model.params.vocab_size)
            logits[-1, next(steps)] = 1.0
            return logits
        monkeypatch.setattr(generate_module, "forward", forward)
        return tiny
    return script


def test_generate_streams_multi_byte_text(scripted, tiny):
    ids = tiny.tokenizer.encode(MULTI_BYTE, bos=False)
    pieces = []
    result = generate(scripted(ids), "hi", len(ids), on_text=pieces.append)
    assert result.new_ids == ids and result.stop_reason == "max_new_tokens"
    assert "".join(pieces) == result.text == MULTI_BYTE
    assert not any("\ufffd" in piece for piece in pieces)


@pytest.mark.parametrize("stop", ["<|eot_id|>", "<|end_of_text|>"])
def test_generation_stops_at_a_stop_token(scripted, tiny, stop):
    words = tiny.tokenizer.encode(" and then", bos=False)
    stop_id = tiny.tokenizer.special_ids[stop]
    pieces = []
    result = generate(scripted(words + [stop_id] + words), "hi", 20, on_text=pieces.append)
    assert result.new_ids == words + [stop_id]
    assert result.stop_reason == stop
    assert result.text == "".join(pieces) == " and then"


def test_other_special_tokens_do_not_stop(scripted, tiny):
    header = tiny.tokenizer.special_ids["<|start_header_id|>"]
    result = generate(scripted([header] * 3), "hi", 3)
    assert result.new_ids == [header] * 3 and result.stop_reason == "max_new_tokens"


def test_zero_new_tokens(gqa_model):
    result = generate(gqa_model, [1, 2], 0)
    assert result.new_ids == [] and result.stop_reason == "max_new_tokens" and result.logits is None


# --- the context length ----------------------------------------------------------------------------------

def test_context_length_error_comes_before_any_work(tiny, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("forward ran before the length check")
    monkeypatch.setattr(generate_module, "forward", no_work)
    context = tiny.params.max_seq_len
    with pytest.raises(LlamaError) as error:
        generate(tiny, CLASSIC_IDS, context - len(CLASSIC_IDS) + 1)
    message = str(error.value)
    assert f"more than the model's context of {context}" in message
    assert f"at most {context - len(CLASSIC_IDS)} new tokens" in message


def test_generation_may_fill_the_context_exactly():
    model = random_model(random_params(max_seq_len=24))
    assert len(generate(model, prompt(model, 16), 8, stop_ids=()).new_ids) == 8
    with pytest.raises(LlamaError, match="make 25 tokens, more than the model's context of 24"):
        generate(model, prompt(model, 16), 9)


# --- the chat format -------------------------------------------------------------------------------------

def test_chat_tokens_match_metas_chat_format(tiny):
    from llama_models.datatypes import RawMessage
    from llama_models.llama3.chat_format import ChatFormat
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    messages = [{"role": "system", "content": "You answer in one word."},
                {"role": "user", "content": "What does a llama eat? 你好 🦙"},
                {"role": "assistant", "content": "Grass."},
                {"role": "user", "content": "And <|eot_id|> this?"}]
    ours = chat_tokens(tiny.tokenizer, messages)
    metas = ChatFormat(MetaTokenizer.get_instance()).encode_dialog_prompt([RawMessage(**m) for m in messages])
    assert ours == metas.tokens


def test_chat_special_tokens_are_control_tokens_only_where_inserted(tiny):
    tokenizer = tiny.tokenizer
    ids = chat_tokens(tokenizer, [{"role": "user", "content": "Say <|eot_id|> now"}], add_assistant_header=False)
    assert ids[:2] == [tokenizer.bos_id, tokenizer.special_ids["<|start_header_id|>"]]
    assert ids.count(tokenizer.eot_id) == 1 and ids[-1] == tokenizer.eot_id
    assert "<|eot_id|>" in tokenizer.decode(ids[:-1])
    with pytest.raises(LlamaError, match="a role"):
        chat_tokens(tokenizer, [{"role": "robot", "content": "hi"}])


# --- the command line ------------------------------------------------------------------------------------

def test_cli_generates_a_corpus_sentence():
    result = demo("A llama", "--generate", "40")
    assert result.returncode == 0, result.stderr
    assert "Generating up to 40 tokens (greedy)" in result.stdout
    assert "A llama is a camelid from the Andes" in result.stdout
    assert "stopped by <|end_of_text|>" in result.stdout


def test_cli_samples_reproducibly(capsys, monkeypatch):
    args = ("One, two", "--generate", "8", "--temperature", "1.5", "--top-k", "20", "--top-p", "0.95", "--seed", "3")
    first, second = run_main(capsys, monkeypatch, *args), run_main(capsys, monkeypatch, *args)
    assert first.returncode == 0, first.stderr
    assert "temperature 1.5, top-k 20, top-p 0.95, seed 3" in first.stdout
    assert first.stdout == second.stdout


def test_cli_generation_errors(capsys, monkeypatch):
    def error(*args):
        return run_main(capsys, monkeypatch, *args)
    assert_clear_error(error("A llama", "--generate", "9000"), "more than the model's context of 8192")
    assert_clear_error(error("A llama", "--generate", "5", "--temperature", "1", "--top-p", "2"), "top-p")
    assert_clear_error(error("A llama", "--top-k", "5"), "only together with --generate N")
