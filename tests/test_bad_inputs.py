"""Bad inputs not covered elsewhere: a tokenizer.model of another format, bad token lists, damaged weights.

(Missing files, truncated checkpoints and bad params.json are in test_loading.py;
special-token text and unknown ids to decode in test_tokenizer.py; the command
line's empty, too-long and invalid UTF-8 prompts, non-finite options, a checkpoint
that is a directory, and its report of a bug in test_cli.py.)
"""

import json
import re
from pathlib import Path

import pytest

from helpers import KVCache, LlamaError, Tokenizer, forward, generate, load_model, load_weights
from helpers.generate import check_generation

from conftest import random_model, random_params, random_weights, write_model

LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55\nsize 2183982\n")
OTHER_FORMATS = {
    # Hugging Face's tokenizer.json, saved under the name of Meta's file.
    "tokenizer.json": (json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"!": 0}}}).encode(),
                       "looks like a JSON file, such as Hugging Face's tokenizer.json"),
    # The start of Llama 2's SentencePiece model: protobuf, not text.
    "sentencepiece": (b"\n\x0e\n\x05<unk>\x15\x00\x00\x00\x00\x18\x02\n\x0b\n\x03<s>\x15\x00\x00\x80\xbf",
                      "looks like a binary file, such as a SentencePiece model from Llama 1 or 2"),
    "git-lfs pointer": (LFS_POINTER, "looks like a Git LFS pointer, not the file itself"),
    "html page": (b"<!DOCTYPE html>\n<html><body>Access to model meta-llama/Meta-Llama-3-8B is restricted",
                  "looks like an HTML page"),
    "empty": (b"", "looks like an empty file"),
    # What other tutorials' users meet as "Incorrect padding"...
    "bad base64": (b"IQ== 0\nIg 1\n", r"line 2, is not `<base64 token> <rank>`: 'Ig 1'"),
    # ...and as "too many values to unpack".
    "three fields": (b"IQ== 0\nIg== 1 extra\n", r"line 2, is not `<base64 token> <rank>`"),
    "ranks with a gap": (b"IQ== 0\nIg== 2\n", "the ranks are not 0, 1, 2, ..."),
}


@pytest.mark.parametrize("kind", OTHER_FORMATS)
def test_tokenizer_model_of_another_format(tmp_path, kind):
    data, message = OTHER_FORMATS[kind]
    path = tmp_path / "tokenizer.model"
    path.write_bytes(data)
    with pytest.raises(LlamaError, match=re.escape(message) if kind not in ("bad base64", "three fields") else message):
        Tokenizer(path)


def test_a_model_folder_with_a_foreign_tokenizer(tmp_path):
    """load_model reports the tokenizer before it touches the weights."""
    (tmp_path / "params.json").write_text(json.dumps(
        dict(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=128256, multiple_of=32, norm_eps=1e-5,
             rope_theta=500000.0)))
    (tmp_path / "consolidated.00.pth").write_bytes(b"")
    (tmp_path / "tokenizer.model").write_bytes(OTHER_FORMATS["tokenizer.json"][0])
    with pytest.raises(LlamaError, match="tokenizer.model is not a Llama 3 tokenizer.model"):
        load_model(tmp_path, verbose=False)


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(LlamaError, match="The tokenizer file .* does not exist"):
        Tokenizer(tmp_path / "tokenizer.model")


def test_empty_prompt(tiny):
    with pytest.raises(LlamaError, match="The prompt is empty: there is nothing to continue"):
        tiny.tokenizer.encode_prompt("")
    with pytest.raises(LlamaError, match="The prompt is empty: there is nothing to predict from"):
        forward(tiny, [])


@pytest.mark.parametrize("ids, message", [
    ([1, 1000], r"Token id 1000 is outside the vocabulary \(0 to 999\)"),
    ([-1], "Token id -1 is outside the vocabulary"),
    (list(range(17)), "17 tokens do not fit in the model's context of 16 tokens. Shorten the prompt"),
])
def test_bad_token_lists(ids, message):
    model = random_model(random_params(max_seq_len=16))
    with pytest.raises(LlamaError, match=message):
        forward(model, ids)


@pytest.mark.parametrize("content, shown", [(b"", "it is empty"),
                                            (b"<!DOCTYPE html><html>Sign in", "its first bytes are b'<!DOCTYPE html>")])
def test_checkpoint_that_is_not_a_zip_file(tmp_path, content, shown):
    params = random_params()
    write_model(tmp_path, params, {})
    (tmp_path / "consolidated.00.pth").write_bytes(content)
    with pytest.raises(LlamaError, match=re.escape(f"is not a zip-format PyTorch checkpoint like Meta's "
                                                   f"consolidated.00.pth ({shown}")):
        load_weights(tmp_path, params)


@pytest.mark.parametrize("name, where", [
    ("tok_embeddings.weight", "the embedding (tok_embeddings.weight)"),
    ("layers.0.attention.wq.weight", "layer 0 (the layers.0.* tensors)"),
    ("layers.1.feed_forward.w3.weight", "layer 1 (the layers.1.* tensors)"),
    ("layers.1.ffn_norm.weight", "layer 1 (the layers.1.* tensors)"),
    ("norm.weight", "the output layer (norm.weight and output.weight)"),
    ("output.weight", "the output layer (norm.weight and output.weight)"),
])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights(name, where, value):
    model = random_model(random_params())
    model.weights[name][0] = value  # token 0's embedding, or a row (an entry of a norm) every position uses
    with pytest.raises(LlamaError, match=re.escape(f"The checkpoint is damaged (non-finite values): the output of "
                                                   f"{where} holds NaN or infinity")):
        forward(model, [0, 1, 2])


def test_non_finite_weights_while_decoding_with_the_cache():
    """The cached decode step runs the same checks: here the first generated token's embedding is damaged."""
    model = random_model(random_params())
    prompt = [1, 2, 3]
    first = generate(model, prompt, 1).new_ids[0]
    assert first not in prompt
    model.weights["tok_embeddings.weight"][first] = float("nan")
    forward(model, prompt, KVCache(model.params, 4))  # the prompt alone is fine
    with pytest.raises(LlamaError, match=re.escape("the output of the embedding (tok_embeddings.weight) holds NaN")):
        generate(model, prompt, 2)


@pytest.mark.parametrize("n_prompt, relation", [(16, "as many as"), (17, "more than")])
def test_prompt_alone_fills_the_context(n_prompt, relation):
    model = random_model(random_params(max_seq_len=16))
    message = (f"The prompt alone is {n_prompt} tokens, {relation} the model's context of 16: no new token fits. "
               "Shorten the prompt: the prompt and the new tokens together must fit in 16 tokens.")
    with pytest.raises(LlamaError, match=re.escape(message)):
        check_generation(model, list(range(n_prompt)), 1)


@pytest.mark.parametrize("extra, message", [
    (["rope.freqs"], "holds 1 tensor that params.json does not explain ('rope.freqs'). The checkpoint and "
                     "params.json come from different models, or the file holds other tensors."),
    ([f"layers.{i}.ffn_norm.weight" for i in (5, 2, 3, 4)],
     "holds 4 tensors that params.json does not explain ('layers.5.ffn_norm.weight', 'layers.2.ffn_norm.weight', "
     "'layers.3.ffn_norm.weight', ...). params.json says n_layers=2, but the checkpoint has 6 layers."),
])
def test_checkpoint_with_tensors_params_json_does_not_explain(tmp_path, extra, message):
    """Computing with part of the weights would give wrong output without a warning: refused."""
    params = random_params()
    weights = random_weights(params)
    write_model(tmp_path, params, weights | {name: weights["norm.weight"] for name in extra})
    with pytest.raises(LlamaError, match=re.escape(message)):
        load_weights(tmp_path, params)


def test_an_int8_file_beside_another_models_tokenizer(tiny, tmp_path):
    """load_int8 checks the tokenizer beside the file against its vocabulary, as load_model does: a cut
    tokenizer.model once gave <|begin_of_text|> the id 64000 and generated '!!!' without a word."""
    from helpers import quantize_model, save_int8
    from helpers.int8_file import load_int8

    path = save_int8(quantize_model(tiny), tmp_path / "tiny-int8.safetensors")
    lines = tiny.tokenizer.path.read_text().splitlines(keepends=True)
    (tmp_path / "tokenizer.model").write_text("".join(lines[:64000]))
    with pytest.raises(LlamaError, match="says vocab_size=128256, but the tokenizer has 64256 tokens"):
        load_int8(path)


def test_save_int8_to_a_folder_or_a_missing_folder_leaves_nothing(tiny, tmp_path):
    from helpers import quantize_model, save_int8

    q = quantize_model(tiny)
    with pytest.raises(LlamaError, match="is a folder: give save_int8 a file name"):
        save_int8(q, tmp_path)
    with pytest.raises(LlamaError, match="does not exist: create it first"):
        save_int8(q, tmp_path / "no such folder" / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_save_int8_that_fails_midway_leaves_no_partial_file(tiny, tmp_path, monkeypatch):
    import safetensors.torch

    from helpers import quantize_model, save_int8

    def full_disk(tensors, filename, metadata=None):
        open(filename, "wb").write(b"\0" * 1000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_int8(quantize_model(tiny), tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0, -1.3])
def test_ffn_dim_multiplier_out_of_range(value):
    from helpers import params_from_dict

    raw = dict(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=128256, multiple_of=32, norm_eps=1e-5,
               rope_theta=500000.0, ffn_dim_multiplier=value)
    with pytest.raises(LlamaError, match="'ffn_dim_multiplier' must be a finite number above 0"):
        params_from_dict(raw)


@pytest.mark.parametrize("temperature", [-1.0, float("nan"), float("inf")])
def test_sample_next_refuses_a_temperature_below_zero_or_not_finite(temperature):
    """A temperature below 0 would turn the distribution upside down, favouring the least likely tokens."""
    import torch

    from helpers import sample_next

    with pytest.raises(LlamaError, match="The temperature must be 0"):
        sample_next(torch.tensor([3.0, 1.0, 0.0]), temperature)


def test_quantizing_a_quantized_model(tiny):
    from helpers import quantize_model

    with pytest.raises(LlamaError, match="already quantised"):
        quantize_model(quantize_model(tiny))


@pytest.mark.parametrize("settings, message", [
    (dict(max_new_tokens=2.5), "The number of new tokens must be a whole number, not 2.5."),
    (dict(max_new_tokens="5"), "The number of new tokens must be a whole number, not '5'."),
    (dict(max_new_tokens=True), "The number of new tokens must be a whole number, not True."),
    (dict(max_new_tokens=2, temperature=1.0, top_k=2.5), "top-k must be a whole number, not 2.5."),
    (dict(max_new_tokens=2, temperature="0.5"), "The temperature must be a number: 0 (greedy) or above, not '0.5'."),
])
def test_generation_settings_of_the_wrong_type(tiny, settings, message):
    """A float count once made a torch error deep in the cache (or, without it, silently one token more)."""
    with pytest.raises(LlamaError, match=re.escape(message)):
        generate(tiny, "Hi", **settings)


def test_the_command_line_refuses_top_below_one(capsys):
    from helpers.__main__ import main

    assert main(["Hi", "--top", "0"]) == 1
    assert "--top must be at least 1 (how many next tokens to list), not 0." in capsys.readouterr().err


def test_the_command_line_refuses_top_with_generate(capsys):
    """--top lists next tokens; with --generate it was silently ignored."""
    from helpers.__main__ import main

    assert main(["Hi", "--top", "3", "--generate", "2"]) == 1
    assert "--top lists the likeliest next tokens instead of writing text; it does nothing with --generate" in (
        capsys.readouterr().err.replace("\n", " "))


@pytest.mark.parametrize("ids, message", [
    ([1.7, 2.0], r"Token ids are whole numbers, but these are torch.float32 \(\[1.7, 2.0\]\)"),  # torch cuts to 1, 2
    ([True, False], r"Token ids are whole numbers, but these are torch.bool \(\[True, False\]\)"),  # read as 1, 0
    ([[1, 2], [3, 4]], r"one sequence of token ids at a time, but these have shape \(2, 2\)"),  # read as 1, 2, 3, 4
    ([[1, 2], [3]], r"Token ids are a list of whole numbers \(or a 1-D tensor\), not \[\[1, 2\], \[3\]\]"),
    ("Hello", r"The model reads token ids, not text: encode the text first, with "
              r"model.tokenizer.encode_prompt\(text\)"),
])
def test_token_ids_of_the_wrong_kind(ids, message):
    """Floats, booleans and a batch were once read as other ids without a word."""
    model = random_model(random_params())
    with pytest.raises(LlamaError, match=message):
        forward(model, ids)


def test_a_batch_of_one_is_read_as_its_sequence():
    import torch

    model = random_model(random_params())
    assert torch.equal(forward(model, torch.tensor([[1, 2, 3]])), forward(model, [1, 2, 3]))


@pytest.mark.parametrize("seed, message", [
    (1.5, "The seed must be a whole number, not 1.5."),
    ("7", "The seed must be a whole number, not '7'."),
    (2**64, f"The seed must be a whole number from -2**63 to 2**64 - 1, not {2**64}."),
])
def test_seed_of_the_wrong_kind(tiny, seed, message):
    with pytest.raises(LlamaError, match=re.escape(message)):
        generate(tiny, "Hi", 2, temperature=1.0, seed=seed)


@pytest.mark.parametrize("messages, message", [
    ("Hello", "chat_tokens takes a list of messages, not a str"),
    ({"role": "user", "content": "Hello"}, "chat_tokens takes a list of messages, not a dict"),
    (["Hello"], "A chat message is a dict with a role (system, user, assistant) and a str content, not 'Hello'."),
])
def test_chat_messages_of_the_wrong_kind(tiny, messages, message):
    from helpers import chat_tokens

    with pytest.raises(LlamaError, match=re.escape(message)):
        chat_tokens(tiny.tokenizer, messages)


@pytest.mark.parametrize("capacity", [-1, 2.5, "8", True])
def test_kv_cache_capacity_of_the_wrong_kind(capacity):
    with pytest.raises(LlamaError, match=re.escape(f"a whole number of 0 or more, not {capacity!r}")):
        KVCache(random_params(), capacity)


@pytest.mark.parametrize("other, message", [
    (dict(n_layers=1), "The cache holds 1 layer, the model 2: it was made for another model."),
    (dict(n_kv_heads=4), r"This cache holds keys of (4, 8) (n_kv_heads, head_dim) a position, but the model gives "
                         "(2, 8): the cache was made for another model."),
])
def test_kv_cache_of_another_model(other, message):
    model = random_model(random_params())
    with pytest.raises(LlamaError, match=re.escape(message)):
        forward(model, [1, 2], KVCache(random_params(**other), 4))


def test_params_json_claiming_a_billion_layers_is_refused_at_once(tmp_path):
    """Listing a billion layers' tensor names first filled the memory until the system killed Python."""
    params = random_params()
    write_model(tmp_path, params, random_weights(params))
    with pytest.raises(LlamaError, match=re.escape("has no tensor 'layers.2.attention.wq.weight' (nothing of layer "
                                                   "2), though params.json says n_layers=1000000000.")):
        load_weights(tmp_path, random_params(n_layers=10**9))


def test_the_first_missing_layer_is_found_whatever_other_layers_there_are():
    from helpers.params import missing_layer

    names = [f"layers.{i}.attention.wq.weight" for i in (0, 2, 5)] + ["model.layers.7.mlp.up_proj.weight"]
    assert missing_layer(names, 3) == 1  # three layers' names, but not layers 0 to 2
    assert missing_layer(names, 1) is None and missing_layer(names, 10**9) == 1


@pytest.mark.parametrize("dtype", ["float64", "float8_e4m3fn"])
def test_checkpoint_of_a_dtype_no_llama_has(tmp_path, dtype):
    """float8 without its scales gives wrong numbers; float64 is no Llama's. Both were read without a word."""
    import torch

    params = random_params()
    write_model(tmp_path, params, {k: w.to(getattr(torch, dtype)) for k, w in random_weights(params).items()})
    with pytest.raises(LlamaError, match=re.escape(f"'tok_embeddings.weight' is stored as torch.{dtype}; the course "
                                                   "reads bf16, fp16 or fp32 weights")):
        load_weights(tmp_path, params)


def test_checkpoint_that_is_a_link_to_nothing(tmp_path):
    """Hugging Face's cache links each file to its data (under blobs/): deleted, or left behind in a copy, the
    link points to nothing."""
    params = random_params()
    write_model(tmp_path, params, random_weights(params))
    (tmp_path / "consolidated.00.pth").unlink()
    (tmp_path / "consolidated.00.pth").symlink_to(Path("..") / tmp_path.name / "blobs" / "1a2b")  # relative, as HF's
    with pytest.raises(LlamaError, match=re.escape(f"consolidated.00.pth is a link to {tmp_path}/blobs/1a2b, which "
                                                   "does not exist: in Hugging Face's cache, the data it points to "
                                                   "(under blobs/) was deleted")):
        load_weights(tmp_path, params)


def test_params_json_with_a_byte_order_mark_is_read(tmp_path):
    """Some editors start a saved file with a UTF-8 byte order mark; json.loads refuses it."""
    from helpers import load_params

    params = random_params()
    write_model(tmp_path, params, {})
    path = tmp_path / "params.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_params(tmp_path) == params


@pytest.mark.parametrize("metadata, why", [({}, "no params"), ({"params": "{dim: 64"}, "params not JSON")])
def test_int8_file_without_readable_params(tiny, tmp_path, metadata, why):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from helpers import load_int8, quantize_model, save_int8

    path = save_int8(quantize_model(tiny), tmp_path / "model.safetensors")
    with safe_open(path, framework="pt") as f:
        tensors, kept = {name: f.get_tensor(name) for name in f.keys()}, f.metadata()
    save_file(tensors, path, metadata={"format": kept["format"], **metadata})
    with pytest.raises(LlamaError, match=re.escape(f"{path} has no readable params in its metadata")):
        load_int8(path)


@pytest.mark.parametrize("model_path, advice", [
    ("meta", "Download consolidated.00.pth again."),
    ("hf", "Download the model's .safetensors files again."),
    ("int8", "Quantise a sound model and write model.safetensors again with helpers.save_int8."),
])
def test_non_finite_weights_name_the_files_to_get_again(tmp_path, model_path, advice):
    import dataclasses

    model = random_model(random_params())
    model.weights["norm.weight"][0] = float("nan")
    (tmp_path / "consolidated.00.pth").touch()
    (tmp_path / "config.json").touch()
    (tmp_path / "model.safetensors").touch()
    where = {"meta": tmp_path, "hf": tmp_path / "hf", "int8": tmp_path / "model.safetensors"}[model_path]
    where.mkdir(exist_ok=True) if model_path == "hf" else None
    with pytest.raises(LlamaError, match=re.escape(advice)):
        forward(dataclasses.replace(model, path=where), [1, 2])
