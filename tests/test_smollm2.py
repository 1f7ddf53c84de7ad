"""SmolLM2-135M-Instruct, the real trained model the notebooks show beside the tiny one: its conversion
(scripts/fetch_smollm2.py, run by `make install-test`) and its own tokenizer (helpers/hf_tokenizer.py)."""

import json

import pytest
import regex
import torch

import helpers.model
import helpers.smollm2
from helpers import REPO_ROOT, TINY_MODEL_DIR
from helpers.hf_tokenizer import HFTokenizer
from helpers.smollm2 import GGUF, find_smollm2
from helpers.tokenizer_json import bytes_to_unicode

# SmolLM2's pre-tokenizer, as llama.cpp writes it for GGUF's "smollm": every digit alone, then GPT-2's split.
DIGIT = regex.compile(r"\p{N}")
GPT2_SPLIT = regex.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
TEXTS = [line for line in (TINY_MODEL_DIR / "corpus.txt").read_text().splitlines() if line] + [
    "The capital of France is", "  two spaces,\ttabs\n\nand newlines  ", "1234567 + 89 = 1234656",
    "大型语言模型很有趣", "🦙 + 🦙 = 🦙🦙", "def f(x):\n    return x**2  # comment", "don't, I'll, we've",
]


@pytest.fixture(scope="module")
def smollm2():
    folder = find_smollm2()
    if folder is None:
        pytest.fail("SmolLM2 is not converted here: run `make smollm2` (make install-test does it)")
    return folder


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return HFTokenizer(smollm2 / "tokenizer.json", stop_ids={0, 2})


def by_merges(text, vocab, ranks):
    """BPE written out: cut the text as SmolLM2 does, then in each piece merge the best-ranked pair until
    none is left."""
    character = bytes_to_unicode()
    ids = []
    for part in (p for chunk in regex.split(r"(\p{N})", text) for p in GPT2_SPLIT.findall(chunk)):
        symbols = [character[b] for b in part.encode()]
        while len(symbols) > 1:
            pairs = zip(symbols, symbols[1:], strict=False)
            rank, i = min((ranks.get(pair, len(ranks)), i) for i, pair in enumerate(pairs))
            if rank == len(ranks):
                break
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        ids += [vocab[s] for s in symbols]
    return ids


def test_the_tokenizer_is_byte_pair_encoding_by_the_merges_of_the_gguf_file(smollm2, tokenizer):
    model = json.loads((smollm2 / "tokenizer.json").read_text())["model"]
    ranks = {tuple(pair): rank for rank, pair in enumerate(model["merges"])}
    for text in TEXTS:
        assert tokenizer.encode(text) == by_merges(text, model["vocab"], ranks), text
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_its_special_tokens_and_what_the_model_puts_first(tokenizer):
    assert tokenizer.n_vocab == 49152
    assert tokenizer.special_ids["<|im_start|>"] == 1 and tokenizer.special_ids["<|im_end|>"] == 2
    assert tokenizer.bos_id is None and tokenizer.encode("The", bos=True) == tokenizer.encode("The", bos=False)
    typed = tokenizer.encode("<|im_start|>")  # typed by a user: plain characters, never the control token
    assert 1 not in typed and tokenizer.decode(typed) == "<|im_start|>"
    assert tokenizer.pieces(tokenizer.encode(" 🦙")) == [" \\xf0\\x9f", "\\xa6", "\\x99"]


def test_the_conversion_keeps_the_shapes_and_permutes_wq_and_wk_for_half_split_rope(smollm2):
    from safetensors import safe_open

    config = json.loads((smollm2 / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["num_key_value_heads"], config["intermediate_size"], config["rope_theta"]) == (
        576, 30, 9, 3, 1536, 100000.0)
    with safe_open(smollm2 / "model.safetensors", "pt") as f:
        names = set(f.keys())
        assert "lm_head.weight" not in names and config["tie_word_embeddings"]  # tied to the embedding table
        assert f.get_tensor("model.layers.0.self_attn.k_proj.weight").shape == (192, 576)
    assert len(names) == 2 + 9 * 30


def test_the_course_agrees_with_transformers_on_the_real_model(smollm2):
    """The course's forward pass on SmolLM2, loaded by the course's own code, against transformers'
    LlamaForCausalLM loaded from the same folder, in float32, within the course's one tolerance (relative
    to the values' size: a trained model's logits run to about 30; measured: 5.4e-5 at most)."""
    from transformers import LlamaForCausalLM

    from helpers import assert_close, forward, load_model

    from reference import hf_logits

    model = load_model(smollm2, verbose=False)
    assert isinstance(model.tokenizer, HFTokenizer) and model.tied_output and model.params.rope_theta == 100000
    reference = LlamaForCausalLM.from_pretrained(smollm2, dtype=torch.float32, attn_implementation="eager").eval()
    tokens = torch.tensor(model.tokenizer.encode("The Eiffel Tower is in the city of Paris, the capital of France."))
    with torch.inference_mode():
        ours = forward(model, tokens)
    assert_close(ours, hf_logits(reference, tokens))
    assert model.tokenizer.decode([ours[8].argmax().item()]) == " Paris"  # after "... the city of"


@pytest.mark.parametrize("where", ["clone", "kaggle dataset", "pip"])
def test_when_it_is_missing_it_says_how_to_fetch_it_from_where_the_course_is(where, tmp_path, monkeypatch, capsys):
    """A clone has `make smollm2`; the Kaggle dataset has no make and no clone, but the fetch script beside its
    package/, which a notebook %runs once Internet is on; a pip install has neither, and says so."""
    dataset_script = tmp_path / "input" / "llama3-from-scratch" / "scripts" / "fetch_smollm2.py"
    dataset_script.parent.mkdir(parents=True)
    if where == "kaggle dataset":
        dataset_script.touch()
    monkeypatch.setattr(helpers.model, "IN_CLONE", where == "clone")
    monkeypatch.setattr(helpers.smollm2, "DATASET_SCRIPT", dataset_script)
    assert find_smollm2(tmp_path / "nothing here") is None
    said = capsys.readouterr().out
    assert said.startswith("SmolLM2-135M-Instruct is not in .cache/, so the cells that use it are skipped. ")
    assert ("make smollm2" in said) == (where != "kaggle dataset")
    assert ("fetch_smollm2.py" in said) == (where != "pip")
    assert (f"\n    %pip install {GGUF}\n    %run {dataset_script}\n" in said) == (where == "kaggle dataset")
    assert ("a clone of the course" in said) == (where == "pip")


def test_the_gguf_package_it_tells_a_learner_to_install_is_the_version_the_tests_use():
    assert GGUF in (REPO_ROOT / "requirements-test.txt").read_text().splitlines()

