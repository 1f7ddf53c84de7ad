"""Hugging Face's format: config.json, safetensors shards with their index, tokenizer.json.

The folders are written by scripts/write_synthetic_checkpoint.py (--format hf), small in width and depth
but with Llama 3's vocabulary, beside the same numbers in Meta's format.
"""

import json
import re
import shutil

import pytest
import tokenizers
import torch
from test_tokenizer import TEXTS
from transformers import LlamaForCausalLM

import helpers.model
from helpers import LlamaError, Tokenizer, find_model, forward, load_model
from helpers.hf_format import HalfSplitWeights, hf_params, meta_name
from helpers.params import expected_shapes
from helpers.rope import half_split_rows, interleaved_rows
from helpers.tokenizer_json import bytes_to_unicode, read_tokenizer_json, write_tokenizer_json

from conftest import CLASSIC_IDS, CLASSIC_PROMPT, load_script
from reference import hf_logits, record_diff

writer = load_script("scripts/write_synthetic_checkpoint.py")
CORPUS = (helpers.model.TINY_MODEL_DIR / "corpus.txt").read_text()
SMALL = dict(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=128256, multiple_of=32, ffn_dim_multiplier=1.3,
             norm_eps=1e-5, rope_theta=500000.0)
# Llama 3 (no scaling, an output matrix), Llama 3.1 (factor 8), Llama 3.2 (factor 32, output tied to the table).
KINDS = {"llama-3": (SMALL, False), "llama-3.1": (SMALL | dict(use_scaled_rope=True), False),
         "llama-3.2-tied": (SMALL | dict(use_scaled_rope=True, rope_scaling_factor=32.0), True)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """For each of KINDS: the same random weights in Meta's format and in Hugging Face's."""
    root = tmp_path_factory.mktemp("hf")
    written = {}
    for kind, (raw, tied) in KINDS.items():
        meta = writer.write_checkpoint(root / f"{kind}-meta", raw, tied=tied)
        hf = writer.write_hf_checkpoint(root / f"{kind}-hf", raw, tied=tied)
        written[kind] = meta, hf
    return written


@pytest.fixture
def hf_copy(folders, tmp_path):
    """A copy of the Llama 3.1 folder in Hugging Face's format, to damage."""
    return shutil.copytree(folders["llama-3.1"][1], tmp_path / "hf")


# --- the same numbers, the same logits -------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_both_formats_give_the_same_logits_bit_for_bit(folders, kind):
    """Same bf16 weights, the same rows once wq/wk are put back in Meta's order, the same float32 arithmetic:
    the logits are equal, not just close."""
    meta, hf = (load_model(folder, verbose=False) for folder in folders[kind])
    assert isinstance(hf.weights, HalfSplitWeights) and hf.params.hidden_dim == meta.params.hidden_dim
    assert hf.params.rope_scaling == meta.params.rope_scaling and hf.tied_output == meta.tied_output == KINDS[kind][1]
    for name in meta.weights:
        assert torch.equal(meta.weights[name], hf.weights[name]), name
    with torch.inference_mode():
        assert torch.equal(forward(meta, CLASSIC_IDS), forward(hf, CLASSIC_IDS))


def test_stored_rows_are_hugging_faces_and_read_back_as_metas(folders):
    """The check above has teeth: the file holds wq in the other order, and using it as stored changes the
    logits."""
    meta, hf = (load_model(folder, verbose=False) for folder in folders["llama-3"])
    name = "layers.0.attention.wq.weight"
    stored = hf.weights.stored[name]
    assert not torch.equal(stored, meta.weights[name])
    assert torch.equal(stored, half_split_rows(meta.weights[name], meta.params.n_heads))
    assert torch.equal(interleaved_rows(stored, meta.params.n_heads), meta.weights[name])
    hf.weights.stored = dict(hf.weights.stored)
    hf.weights.half_split_heads.clear()  # wq and wk used as Hugging Face stores them
    with torch.inference_mode():
        assert not torch.allclose(forward(meta, CLASSIC_IDS), forward(hf, CLASSIC_IDS), atol=1e-3)


def test_other_tensors_are_views_of_the_file_and_tied_output_is_the_table(folders):
    hf = load_model(folders["llama-3.2-tied"][1], verbose=False)
    assert hf.weights["output.weight"] is hf.weights["tok_embeddings.weight"]
    assert "lm_head.weight" not in json.loads((hf.path / "model.safetensors.index.json").read_text())["weight_map"]
    # A tensor read from a shard is not writable memory of this process: safetensors maps the file.
    assert hf.weights["layers.1.feed_forward.w2.weight"] is hf.weights["layers.1.feed_forward.w2.weight"]
    assert hf.weights["layers.1.attention.wq.weight"] is not hf.weights["layers.1.attention.wq.weight"]


@pytest.mark.parametrize("kind", KINDS)
def test_transformers_from_pretrained_agrees(folders, kind):
    """LlamaForCausalLM.from_pretrained on the Hugging Face folder, in float32, against the course."""
    model = load_model(folders[kind][1], verbose=False)
    reference = LlamaForCausalLM.from_pretrained(folders[kind][1], dtype=torch.float32, attn_implementation="eager")
    rope = reference.config.rope_parameters
    assert rope.get("factor") == model.params.rope_scaling_factor
    assert (reference.lm_head.weight is reference.model.embed_tokens.weight) == KINDS[kind][1]
    tokens = torch.tensor(CLASSIC_IDS)
    with torch.inference_mode():
        ours = forward(model, tokens)
    record_diff(ours, hf_logits(reference.eval(), tokens))


# --- config.json ------------------------------------------------------------------------------------------

def test_config_maps_to_params(folders):
    """Every field of Params, from config.json, equal to params.json's; the width read, not derived."""
    for kind, (meta, hf) in folders.items():
        a, b = load_model(meta, verbose=False).params, hf_params(hf)
        assert b.ffn_hidden_dim == a.hidden_dim == b.hidden_dim == 224, kind
        assert (b.dim, b.n_layers, b.n_heads, b.n_kv_heads, b.vocab_size, b.norm_eps, b.rope_theta, b.max_seq_len) \
            == (a.dim, a.n_layers, a.n_heads, a.n_kv_heads, a.vocab_size, a.norm_eps, a.rope_theta, a.max_seq_len)


def test_intermediate_size_is_read_not_derived(hf_copy):
    config = json.loads((hf_copy / "config.json").read_text())
    (hf_copy / "config.json").write_text(json.dumps(config | {"intermediate_size": 300}))
    params = hf_params(hf_copy)
    assert params.hidden_dim == 300
    # Meta's rule, with the multiple_of and ffn_dim_multiplier found for it, gives the same width (notebook 05).
    assert params.multiple_of * -(-int(params.ffn_dim_multiplier * int(8 * 64 / 3)) // params.multiple_of) == 300


def test_names_map_to_metas():
    assert meta_name("model.layers.3.self_attn.k_proj.weight") == "layers.3.attention.wk.weight"
    assert meta_name("model.layers.0.mlp.gate_proj.weight") == "layers.0.feed_forward.w1.weight"
    assert meta_name("model.layers.0.post_attention_layernorm.weight") == "layers.0.ffn_norm.weight"
    assert meta_name("lm_head.weight") == "output.weight" and meta_name("model.norm.weight") == "norm.weight"
    assert meta_name("model.layers.0.self_attn.q_proj.bias") is None


# --- the tokenizer ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted(folders):
    """The tokenizer.json the writer converted from Meta's tokenizer.model."""
    return folders["llama-3"][1] / "tokenizer.json"


def test_tokenizer_json_round_trip(converted, tmp_path):
    meta = Tokenizer()
    ours = Tokenizer(converted)
    assert ours.ranks == meta.ranks and ours.special_ids == meta.special_ids and ours.n_vocab == 128256
    again = write_tokenizer_json(ours, tmp_path / "tokenizer.json")
    assert again.read_bytes() == converted.read_bytes()
    assert sorted(bytes_to_unicode()) == list(range(256)) and len(set(bytes_to_unicode().values())) == 256


def test_tokenizer_json_ids_equal_tokenizer_models(converted):
    """Read from tokenizer.json, the ids are tokenizer.model's over the tiny model's corpus and the tokenizer
    tests' texts; and Hugging Face's own `tokenizers` library, reading the same file, agrees (with
    special-token text read as text, as the course reads it)."""
    meta, ours = Tokenizer(), Tokenizer(converted)
    theirs = tokenizers.Tokenizer.from_file(str(converted))
    theirs.encode_special_tokens = True
    texts = [CORPUS, *CORPUS.splitlines(), *TEXTS.values()]
    assert len(meta.encode(CORPUS)) > 100
    for text in texts:
        assert ours.encode(text) == meta.encode(text), text
        assert theirs.encode(text, add_special_tokens=False).ids == meta.encode(text, bos=False), text
    assert ours.encode(CLASSIC_PROMPT) == CLASSIC_IDS


@pytest.mark.parametrize("change, message", [
    (lambda raw: raw["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex=r"\s+"),
     "the pre_tokenizer's Split pattern is " + repr(r"\s+") + ", so this is not Llama 3's tokenizer"),
    (lambda raw: raw["model"].update(type="Unigram"), "model.type is 'Unigram', so this is not Llama 3's tokenizer"),
    (lambda raw: raw.update(added_tokens=raw["added_tokens"][1:]), "added_tokens is 'without <|begin_of_text|>'"),
])
def test_a_tokenizer_json_of_another_vocabulary_is_refused(converted, tmp_path, change, message):
    raw = json.loads(converted.read_text())
    change(raw)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(LlamaError, match=f"^{re.escape(f'{path}: {message}')}"):
        read_tokenizer_json(path, helpers.SPLIT_PATTERN)


# --- finding it -------------------------------------------------------------------------------------------

def test_find_model_finds_it_and_says_the_format(folders, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("LLAMA3_DIR", raising=False)
    monkeypatch.setattr(helpers.model, "KAGGLE_INPUT", tmp_path / "input")
    monkeypatch.setattr(helpers.model, "DOWNLOAD_ROOT", tmp_path)
    hf = folders["llama-3.1"][1]
    for layout in ("llama-3.1/transformers/8b-instruct/1", "models/metaresearch/llama-3.1/transformers/8b-instruct/1"):
        folder = tmp_path / "input" / layout
        folder.parent.mkdir(parents=True)
        folder.symlink_to(hf, target_is_directory=True)
        assert find_model() == folder
        assert " (a Kaggle input, Hugging Face format).\n" in capsys.readouterr().out
        shutil.rmtree(tmp_path / "input")
    downloaded = shutil.copytree(hf, tmp_path / "Llama-3.2-1B")  # a download without original/
    assert find_model() == downloaded
    assert "(downloaded by notebook 00, Hugging Face format)." in capsys.readouterr().out
    monkeypatch.setenv("LLAMA3_DIR", str(folders["llama-3.1"][0]))
    assert find_model() == folders["llama-3.1"][0]
    assert f"Model: {folders['llama-3.1'][0]} (from LLAMA3_DIR).\n" in capsys.readouterr().out


# --- bad inputs: a LlamaError naming the file and the field, and nothing written -----------------------

def edit_config(**changes):
    def change(folder):
        path = folder / "config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | changes))
    return change


def truncate(folder):
    shard = folder / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1000])


def store_as_int8(folder):
    """Rewrite shard 2 with its tensors as int8 (a quantised model's dtype)."""
    from safetensors.torch import load_file, save_file

    shard = folder / "model-00002-of-00002.safetensors"
    tensors = load_file(shard)
    save_file({name: t.to(torch.int8) for name, t in tensors.items()}, shard)


def link_to_nothing(folder):
    """A shard of Hugging Face's cache whose data (under blobs/) was deleted, or left behind in a copy."""
    shard = folder / "model-00002-of-00002.safetensors"
    shard.unlink()
    shard.symlink_to(folder / "blobs" / "1a2b")


BAD = {
    "mistral": (edit_config(model_type="mistral", sliding_window=4096),
                r"config.json: model_type is 'mistral', not 'llama': Mistral's sliding-window attention"),
    "qwen2": (edit_config(model_type="qwen2", attention_bias=True),
              r"config.json: model_type is 'qwen2', not 'llama': Qwen2's biases on q, k and v"),
    "attention bias": (edit_config(attention_bias=True), r"config.json: attention_bias is true"),
    "missing shard": (lambda folder: (folder / "model-00002-of-00002.safetensors").unlink(),
                      r"model.safetensors.index.json: its weight_map names 'model-00002-of-00002.safetensors', "
                      r"which is not in"),
    "truncated shard": (truncate, r"model-00002-of-00002.safetensors is truncated: its header describes"),
    "int8 tensor": (store_as_int8, r"model-00002-of-00002.safetensors: '[\w.]+' is stored as "
                                   r"torch.int8; the course reads bf16, fp16 or fp32"),
    "shapes disagree": (edit_config(num_key_value_heads=8), r"model-00001-of-00002.safetensors: "
                        r"'model.layers.0.self_attn.k_proj.weight' has shape \(16, 64\), but config.json implies "
                        r"\(64, 64\)"),
    "more layers": (edit_config(num_hidden_layers=3), r"model.safetensors.index.json: no shard holds "
                                                      r"'model.layers.2.[\w.]+', though config.json says "
                                                      r"num_hidden_layers=3"),
    "a billion layers": (edit_config(num_hidden_layers=10**9), r"model.safetensors.index.json: no shard holds "
                         r"'model.layers.2.self_attn.q_proj.weight', though config.json says num_hidden_layers="
                         r"1000000000"),  # listing a billion layers' names first filled the memory
    "tie flag as text": (edit_config(tie_word_embeddings="false"),  # bool("false") is True: read as tied
                         r"config.json: 'tie_word_embeddings' should be bool, but it is 'false'."),
    "link to nothing": (link_to_nothing, r"model-00002-of-00002.safetensors is a link to .*blobs/1a2b, which does "
                                         r"not exist: in Hugging Face's cache, the data it points to"),
    "rope type": (edit_config(rope_scaling={"rope_type": "yarn", "factor": 4.0}),
                  r"config.json: rope_scaling.rope_type is 'yarn', a RoPE scaling the course does not implement. It "
                  r"implements 'default' \(none: Llama 3\); 'llama3' \(Llama 3.1's"),
    "rope field": (edit_config(rope_scaling={"rope_type": "llama3", "factor": 8.0}),
                   r"config.json \(rope_scaling\) has no 'low_freq_factor'"),
}


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_is_a_clear_error_and_writes_nothing(hf_copy, kind):
    damage, message = BAD[kind]
    damage(hf_copy)
    before = {p: (p.lstat().st_size, p.lstat().st_mtime_ns) for p in hf_copy.rglob("*")}
    with pytest.raises(LlamaError, match=f"^{re.escape(str(hf_copy))}/({message})"):
        load_model(hf_copy, verbose=False)
    assert {p: (p.lstat().st_size, p.lstat().st_mtime_ns) for p in hf_copy.rglob("*")} == before


def test_config_json_with_a_byte_order_mark_is_read(hf_copy, folders):
    """Some editors start a saved file with a UTF-8 byte order mark; json.loads refuses it."""
    path = hf_copy / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_model(hf_copy, verbose=False).params == load_model(folders["llama-3.1"][1], verbose=False).params


def test_expected_shapes_are_those_of_the_files(folders):
    """Every tensor of the shards has a Meta name and the shape params implies (tied: no lm_head)."""
    hf = load_model(folders["llama-3.2-tied"][1], verbose=False)
    assert set(hf.weights.stored) == set(expected_shapes(hf.params))


def test_the_benchmark_compares_both_formats(folders, capsys):
    """bench/hf_format.py on the small folders: it runs both, and finds their logits equal."""
    bench = load_script("bench/hf_format.py")
    assert bench.main([str(folder) for folder in folders["llama-3.2-tied"]] + ["--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "Hugging Face  run 1: load" in out and "last-position logits equal bit for bit" in out
    assert re.search(r"peak anonymous memory \(largest of the runs\): Meta \d+\.\d\d GB, Hugging Face \d", out)
