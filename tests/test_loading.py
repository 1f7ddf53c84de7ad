"""Finding and loading a model folder, and the errors a reader meets when something is wrong."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import helpers.model
from helpers import REPO_ROOT, TINY_MODEL_DIR, LlamaError, find_model, load_model, load_params, load_weights

from conftest import random_params, random_weights, write_model


@pytest.fixture
def small(tmp_path):
    """A valid small model folder, written fresh for each test."""
    p = random_params()
    return write_model(tmp_path / "small", p, random_weights(p))


@pytest.fixture
def no_other_models(monkeypatch, tmp_path):
    monkeypatch.delenv("LLAMA3_DIR", raising=False)
    monkeypatch.setattr(helpers.model, "KAGGLE_INPUT", tmp_path / "kaggle-input")
    monkeypatch.setattr(helpers.model, "DOWNLOAD_ROOT", tmp_path)
    monkeypatch.setattr(helpers.model, "DOWNLOAD_DIR", tmp_path / "llama-3-8B" / "original")


MEASURE_MAPPING = """
import json, sys, torch
from helpers import TINY_MODEL_DIR, load_params, load_weights

def anonymous_mb():  # memory of this process not backed by a file: where a copy would land
    return int(open("/proc/self/status").read().split("RssAnon:")[1].split()[0]) / 1024

p = load_params(TINY_MODEL_DIR)
tokens = torch.tensor([128000, 1820, 4320, 311])
before = anonymous_mb()
weights = load_weights(TINY_MODEL_DIR, p)
x = weights["tok_embeddings.weight"][tokens].float()
mapped = anonymous_mb() - before
copied = torch.load(TINY_MODEL_DIR / "consolidated.00.pth", weights_only=True)
loaded = anonymous_mb() - before - mapped
print(json.dumps({"mapped": mapped, "loaded": loaded, "same_keys": weights.keys() == copied.keys()}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_weights_are_memory_mapped_not_copied():
    """load_weights and an embedding lookup add almost no anonymous memory; a plain torch.load does.

    Measured in a fresh interpreter, so that memory freed by earlier tests cannot hide a copy.
    """
    out = subprocess.run([sys.executable, "-c", MEASURE_MAPPING], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    size_mb = (TINY_MODEL_DIR / "consolidated.00.pth").stat().st_size / 2**20
    assert result["loaded"] > 0.8 * size_mb  # the measurement sees a real copy...
    assert result["mapped"] < 0.1 * size_mb  # ...and neither loading nor the lookup makes one
    assert result["same_keys"]


def test_missing_files(tmp_path, small):
    with pytest.raises(LlamaError, match="params.json does not exist"):
        load_params(tmp_path)
    os.remove(small / "consolidated.00.pth")
    with pytest.raises(LlamaError, match="No consolidated.00.pth"):
        load_weights(small, load_params(small))


@pytest.mark.parametrize("keep", [0.999, 0.5, 0.01])
def test_truncated_checkpoint(small, keep):
    path = small / "consolidated.00.pth"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(LlamaError, match="cannot be read as a PyTorch checkpoint.*truncated"):
        load_weights(small, load_params(small))


@pytest.mark.parametrize("key", ["dim", "n_heads", "n_kv_heads", "vocab_size", "rope_theta", "norm_eps"])
def test_params_with_a_missing_key(small, key):
    raw = json.loads((small / "params.json").read_text())
    del raw[key]
    (small / "params.json").write_text(json.dumps(raw))
    with pytest.raises(LlamaError, match=f"has no '{key}' key"):
        load_params(small)


@pytest.mark.parametrize("key, value", [("dim", "64"), ("n_layers", 2.0), ("rope_theta", "500000"),
                                        ("n_heads", True), ("ffn_dim_multiplier", [1.3])])
def test_params_with_a_wrong_type(small, key, value):
    raw = json.loads((small / "params.json").read_text())
    raw[key] = value
    (small / "params.json").write_text(json.dumps(raw))
    with pytest.raises(LlamaError, match=f"'{key}' should be"):
        load_params(small)


def test_params_that_are_not_json(small):
    (small / "params.json").write_text("{'dim': 64")
    with pytest.raises(LlamaError, match="is not valid JSON"):
        load_params(small)


@pytest.mark.parametrize("change, message", [
    ({"n_heads": 7}, "must split into n_heads"),
    ({"n_heads": 8, "n_kv_heads": 3}, "must be a multiple of n_kv_heads"),
    ({"dim": 0}, "must be positive"),
    ({"rope_theta": float("nan")}, "'rope_theta' must be a finite number above 0, but it is nan"),
    ({"norm_eps": float("inf")}, "'norm_eps' must be a finite number above 0, but it is inf"),
    ({"norm_eps": 0.0}, "'norm_eps' must be a finite number above 0, but it is 0.0"),
])
def test_params_with_impossible_values(small, change, message):
    raw = json.loads((small / "params.json").read_text()) | change
    (small / "params.json").write_text(json.dumps(raw))
    with pytest.raises(LlamaError, match=message):
        load_params(small)


@pytest.mark.parametrize("change, message", [
    ({"n_kv_heads": 8}, r"'layers.0.attention.wk.weight' has shape \(16, 64\), but params.json implies \(64, 64\)"),
    ({"vocab_size": 1234}, r"'tok_embeddings.weight' has shape \(1000, 64\)"),
    ({"n_layers": 3}, "has no tensor 'layers.2.attention.wq.weight'"),
    ({"multiple_of": 256}, "'layers.0.feed_forward.w1.weight' has shape"),
])
def test_checkpoint_disagrees_with_params(small, change, message):
    raw = json.loads((small / "params.json").read_text()) | change
    (small / "params.json").write_text(json.dumps(raw))
    with pytest.raises(LlamaError, match=message):
        load_weights(small, load_params(small))


def test_vocab_disagrees_with_tokenizer(small):
    with pytest.raises(LlamaError, match="vocab_size=1000, but the tokenizer has 128256"):
        load_model(small, verbose=False)


def test_a_checkpoint_that_would_run_code_is_refused(small, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"tok_embeddings.weight": Payload()}, small / "consolidated.00.pth")
    with pytest.raises(LlamaError, match="holds objects other than tensors, and was refused"):
        load_weights(small, load_params(small))
    assert not marker.exists()


def test_find_model_order(no_other_models, tmp_path, small, monkeypatch, capsys):
    assert find_model() == TINY_MODEL_DIR
    assert "data/tiny-llama3 (the embedded tiny Llama 3" in capsys.readouterr().out

    other = shutil.copytree(small, helpers.model.download_dir("meta-llama/Llama-3.2-1B"))
    assert find_model() == other
    downloaded = shutil.copytree(small, helpers.model.DOWNLOAD_DIR)
    assert find_model() == downloaded  # the 8B first: the order of helpers.model.MODELS
    assert capsys.readouterr().out.splitlines()[-3:-1] == [f"Model: {downloaded} (downloaded by notebook 00).",
                                                            f"Also found: {other}."]

    # Kaggle mounts a Llama 3.2 Model as llama-3.2/pytorch/1b/1, as Llama 3's as llama-3/pytorch/8b/1.
    kaggle_1b = shutil.copytree(small, helpers.model.KAGGLE_INPUT / "llama-3.2" / "pytorch" / "1b" / "1")
    assert find_model() == kaggle_1b
    shutil.rmtree(kaggle_1b)

    kaggle = shutil.copytree(small, helpers.model.KAGGLE_INPUT / "llama-3" / "pytorch" / "8b" / "1")
    assert find_model() == kaggle
    assert "a Kaggle input" in capsys.readouterr().out

    monkeypatch.setenv("LLAMA3_DIR", str(TINY_MODEL_DIR))
    assert find_model() == TINY_MODEL_DIR
    assert find_model(small) == small


@pytest.mark.parametrize("given, holds", [
    ("repo", "its subfolder original/ is one: give {root}/repo/original."),  # a Hugging Face repository's root
    ("repo/original/params.json", "it is a file: give its folder, {root}/repo/original."),
    ("half", "it has params.json, but not the rest."),
    ("empty", "it holds none of these."),
    ("nowhere", "it does not exist."),
])
def test_find_model_says_what_a_wrong_path_holds(tmp_path, given, holds):
    shutil.copytree(TINY_MODEL_DIR, tmp_path / "repo" / "original")
    (tmp_path / "half").mkdir()
    shutil.copy(TINY_MODEL_DIR / "params.json", tmp_path / "half")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LlamaError, match=re.escape("(Hugging Face's format); " + holds.format(root=tmp_path))):
        find_model(tmp_path / given, verbose=False)


def test_find_model_rejects_a_wrong_path(no_other_models, tmp_path, monkeypatch):
    with pytest.raises(LlamaError, match="the path you gave.*is not a Llama 3 model folder|is not a Llama 3"):
        find_model(tmp_path)
    monkeypatch.setenv("LLAMA3_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(LlamaError, match="from LLAMA3_DIR.*Fix LLAMA3_DIR, or unset it"):
        find_model()
